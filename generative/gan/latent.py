"""Latent-space tools: interpolation (linear and spherical) and arithmetic on group means,
returned as image grids (uint8 arrays; writing files is the caller's business)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from generative.gan.model import GAN

ANALOGY_LATENTS = 2000


class Classifier(Protocol):
    """Anything with a FeatureNet's `predict`: images in [0, 1] -> class per image."""

    def predict(self, x: torch.Tensor) -> torch.Tensor: ...


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1 - t) z0 + t z1 for each t; z0, z1 of shape (d,) -> (len(t), d)."""
    t = t[:, None]
    return (1.0 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation along the great circle between z0 and z1 (magnitudes
    interpolated linearly), which keeps intermediate points at the typical radius of a
    Gaussian latent instead of cutting through the low-density centre. Falls back to lerp for
    (anti)parallel endpoints."""
    n0, n1 = z0.norm(), z1.norm()
    cos = torch.clamp(torch.dot(z0 / n0, z1 / n1), -1.0, 1.0)
    omega = torch.arccos(cos)
    if float(torch.sin(omega)) < 1e-6:
        return lerp(z0, z1, t)
    t = t[:, None]
    direction = (torch.sin((1 - t) * omega) * z0 / n0 + torch.sin(t * omega) * z1 / n1) / torch.sin(
        omega
    )
    return direction * ((1 - t) * n0 + t * n1)


INTERPOLATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "linear": lerp,
    "spherical": slerp,
}


def interpolate(
    z0: torch.Tensor, z1: torch.Tensor, steps: int, method: str = "spherical"
) -> torch.Tensor:
    """`steps` latents from z0 to z1 (both included)."""
    if method not in INTERPOLATIONS:
        raise ValueError(f"method must be one of {sorted(INTERPOLATIONS)}, got {method!r}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    t = torch.linspace(0.0, 1.0, steps, device=z0.device)
    return INTERPOLATIONS[method](z0, z1, t)


def latent_arithmetic(
    base: torch.Tensor, subtract: torch.Tensor, add: torch.Tensor
) -> torch.Tensor:
    """mean(base) - mean(subtract) + mean(add) over each group's rows (Radford et al.:
    averaging a few latents per concept makes the arithmetic stable)."""
    for name, group in (("base", base), ("subtract", subtract), ("add", add)):
        if group.dim() != 2 or len(group) == 0:
            raise ValueError(f"{name} must be a non-empty (n, latent_dim) tensor")
    return base.mean(0) - subtract.mean(0) + add.mean(0)


def attribute_analogy_groups(
    z: torch.Tensor,
    labels: torch.Tensor,
    attribute: torch.Tensor,
    class_a: int,
    class_b: int,
    *,
    top_share: float = 0.25,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three latent groups of "class A with the attribute" - "class A" + "class B":
    latents whose sample is of class A with the attribute in the top `top_share` of class A's,
    all class-A latents, all class-B latents. `labels` and `attribute` describe each latent's
    sample (e.g. a classifier's prediction and the mean brightness)."""
    in_a, in_b = labels == class_a, labels == class_b
    if int(in_a.sum()) < 4 or int(in_b.sum()) < 1:
        raise ValueError(f"need >= 4 latents of class {class_a} and >= 1 of class {class_b}")
    cut = torch.quantile(attribute[in_a].float(), 1.0 - top_share)
    with_attribute = in_a & (attribute >= cut)
    return z[with_attribute], z[in_a], z[in_b]


def image_grid(images: torch.Tensor, nrow: int, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) images in [0, 1] -> one (rows*H', nrow*W', C) uint8 array (C = 1 or 3),
    row-major, with `padding` white pixels between tiles."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    rows = -(-n // nrow)
    grid = torch.ones(c, rows * (h + padding) + padding, nrow * (w + padding) + padding)
    for index, image in enumerate(images.detach().float().cpu().clamp(0, 1)):
        top, left = (
            padding + (index // nrow) * (h + padding),
            padding + (index % nrow) * (w + padding),
        )
        grid[:, top : top + h, left : left + w] = image
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def interpolation_grid(
    gan: GAN,
    *,
    rows: int = 6,
    steps: int = 10,
    method: str = "spherical",
    seed: int = 0,
    labels: torch.Tensor | None = None,
    truncation: float | None = None,
) -> np.ndarray:
    """`rows` interpolations between random latent pairs, one per grid row; a conditional GAN
    takes one label per row."""
    _require_images(gan)
    generator = torch.Generator(device=_device(gan)).manual_seed(seed)
    ends = gan.sample_latent(2 * rows, generator=generator, truncation=truncation)
    path = torch.cat(
        [interpolate(ends[2 * r], ends[2 * r + 1], steps, method) for r in range(rows)]
    )
    row_labels = (
        None if labels is None else torch.as_tensor(labels).reshape(rows).repeat_interleave(steps)
    )
    return image_grid(gan.generate(path, row_labels), nrow=steps)


def arithmetic_grid(
    gan: GAN,
    base: torch.Tensor,
    subtract: torch.Tensor,
    add: torch.Tensor,
    *,
    variations: int = 7,
    noise_scale: float = 0.25,
    seed: int = 0,
) -> np.ndarray:
    """One row per term: the decoded means of `base`, `subtract` and `add`, then the result of
    `latent_arithmetic` and `variations` copies of it with small latent noise added."""
    _require_images(gan)
    generator = torch.Generator(device=_device(gan)).manual_seed(seed)
    result = latent_arithmetic(base, subtract, add)
    noise = torch.randn(variations, result.numel(), generator=generator, device=result.device)
    latents = torch.stack([base.mean(0), subtract.mean(0), add.mean(0), result])
    latents = torch.cat([latents, result + noise_scale * noise])
    return image_grid(gan.generate(latents), nrow=len(latents))


def _require_images(gan: GAN) -> None:
    if not gan.config.is_image:
        raise ValueError("grids need an image GAN; this one generates table rows")


def _device(gan: GAN) -> torch.device:
    return next(gan.parameters()).device


def brightness_analogy(
    gan: GAN, net: Classifier, *, seed: int, n: int = ANALOGY_LATENTS
) -> tuple[dict[str, float], np.ndarray]:
    """Latent arithmetic "bright A" - "A" + "B" on an unconditional image GAN, where A and B
    are the two classes the feature net sees most among n samples and "bright" is the top
    quarter of A's mean pixel value. Returns the grid (see `arithmetic_grid`) and how the
    result's samples came out: `arithmetic.class_b_share` (share the net calls B) and
    `arithmetic.brightness_gain` (their mean pixel value minus that of the B samples)."""
    generator = torch.Generator(device=next(gan.parameters()).device).manual_seed(seed)
    z = gan.sample_latent(n, generator=generator)
    images = gan.generate(z)
    labels, brightness = net.predict(images), images.flatten(1).mean(1).cpu()
    counts = torch.bincount(labels, minlength=2)
    class_a, class_b = counts.argsort(descending=True)[:2].tolist()
    if counts[class_b] == 0:
        raise ValueError(f"the feature net calls all {n} samples class {class_a}: no analogy")
    groups = attribute_analogy_groups(z.cpu(), labels, brightness, class_a, class_b)
    grid = arithmetic_grid(gan, *groups, seed=seed)
    noise = torch.randn(64, z.shape[1], generator=torch.Generator().manual_seed(seed))
    results = gan.generate(latent_arithmetic(*groups) + 0.25 * noise)
    metrics = {
        "arithmetic.class_a": float(class_a),
        "arithmetic.class_b": float(class_b),
        "arithmetic.class_b_share": float((net.predict(results) == class_b).float().mean()),
        "arithmetic.brightness_gain": float(
            results.flatten(1).mean(1).mean() - brightness[labels == class_b].mean()
        ),
    }
    return metrics, grid

"""StyleGAN measurements for `progressive_quality.py`: noise vs w, style mixing, z / w
interpolations and their report sections and figure. Not a benchmark itself."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_common import log
from gan_common import mean_sd
from PIL import Image

from generative.stylegan import StyleGAN

SHAPE = (1, 32, 32)
CROSSOVERS = (2, 4, 6)


def render(model: StyleGAN, ws: torch.Tensor, noise_mode: str, rng=None) -> torch.Tensor:
    """The EMA synthesis net's images for ws at the stage training reached, at 32x32, [0, 1]."""
    net = model.sampling_generator().eval()
    stage, alpha = int(model.progress[0]), float(model.progress[1])
    with torch.no_grad():
        image = net.synthesis(ws, stage, alpha, noise_mode=noise_mode, rng=rng).float()
    factor = SHAPE[-1] // image.shape[-1]
    image = image.repeat_interleave(factor, -1).repeat_interleave(factor, -2)
    return model.to_data_scale(image)


def styles(model: StyleGAN, z: torch.Tensor, **options) -> torch.Tensor:
    """The EMA generator's (N, num_layers, w_dim) ws for z."""
    with torch.no_grad():
        return model.sampling_generator().eval().styles(z, **options)


def latents(model: StyleGAN, n: int, seed: int) -> torch.Tensor:
    """n seeded z."""
    return model.sample_latent(n, generator=torch.Generator().manual_seed(seed))


def relative_change(a: torch.Tensor, b: torch.Tensor, pool: int = 1) -> np.ndarray:
    """||b - a|| / ||a|| per image, after `pool` x `pool` average pooling."""
    a, b = F.avg_pool2d(a, pool).flatten(1), F.avg_pool2d(b, pool).flatten(1)
    return ((b - a).norm(dim=1) / a.norm(dim=1).clamp_min(1e-8)).numpy()


def pattern(images: torch.Tensor) -> torch.Tensor:
    """The 8x8 low-pass pattern of each image, centred and scaled to unit norm."""
    x = F.avg_pool2d(images, 4).flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)


def properties(model: StyleGAN, n: int) -> dict:
    """Noise vs w (relative changes) and style mixing (pattern correlations) on n latents."""
    z_a, z_b = latents(model, n, 10), latents(model, n, 11)
    ws_a, ws_b = styles(model, z_a), styles(model, z_b)
    base = render(model, ws_a, "random", torch.Generator().manual_seed(1))
    new_noise = render(model, ws_a, "random", torch.Generator().manual_seed(2))
    new_w = render(model, ws_b, "random", torch.Generator().manual_seed(1))
    out = {
        f"{what}, {name}": relative_change(base, other, pool)
        for what, other in (("new noise", new_noise), ("new w", new_w))
        for name, pool in (("raw", 1), ("4x4-pooled", 4))
    }
    image_a, image_b = render(model, ws_a, "const"), render(model, ws_b, "const")
    p_a, p_b = pattern(image_a), pattern(image_b)
    mixing = {"A vs B (unmixed)": ((p_a * p_b).sum(1).numpy(), None)}
    for cut in CROSSOVERS:
        p_mix = pattern(render(model, styles(model, z_a, mix_z=z_b, mix_layer=cut), "const"))
        mixing[f"crossover {cut}"] = ((p_mix * p_a).sum(1).numpy(), (p_mix * p_b).sum(1).numpy())
    return {"noise": out, "mixing": mixing}


def interpolations(model: StyleGAN, pairs: int = 4, steps: int = 10) -> list[tuple]:
    """For each latent pair, (z row, w row) of linear interpolations, constant noise."""
    t = torch.linspace(0, 1, steps)[:, None]
    z0, z1 = latents(model, pairs, 20), latents(model, pairs, 21)
    rows = []
    for k in range(pairs):
        z = torch.lerp(z0[k], z1[k], t)
        w0, w1 = styles(model, z0[k : k + 1])[:, 0], styles(model, z1[k : k + 1])[:, 0]
        ws = torch.lerp(w0, w1, t)[:, None].expand(-1, model.config.num_layers, -1)
        rows.append((render(model, styles(model, z), "const"), render(model, ws, "const")))
    return rows


def plt_module():
    """matplotlib's pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grey(figure, path: Path) -> None:
    """Save a figure as a greyscale PNG (a third of the bytes)."""
    plt = plt_module()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    Image.open(path).convert("L").save(path, optimize=True)
    log(f"wrote {path}")


def draw_interpolations(rows: list[tuple], path: Path) -> None:
    """Per latent pair, the z interpolation above the w interpolation, labelled."""
    from generative.gan.latent import image_grid

    plt = plt_module()
    figure, axes = plt.subplots(2 * len(rows), 1, figsize=(7, 0.6 * 2 * len(rows)))
    for k, pair in enumerate(rows):
        for j, (space, images) in enumerate(zip(("z", "w"), pair, strict=True)):
            axis = axes[2 * k + j]
            axis.imshow(
                image_grid(images, nrow=len(images))[:, :, 0], cmap="gray", vmin=0, vmax=255
            )
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_ylabel(
                f"pair {k + 1}: {space}", rotation=0, ha="right", va="center", fontsize=8
            )
    figure.suptitle("StyleGAN: linear interpolation in z vs in w (constant noise)", fontsize=9)
    figure.tight_layout()
    save_grey(figure, path)


def stylegan_sections(results: dict, args: argparse.Namespace) -> list[str]:
    """Truncation table and the noise / mixing measurements."""
    if "properties" not in results:
        return []
    lines = ["", "#### StyleGAN truncation (EMA G, psi in w space, all layers)", ""]
    lines += ["| psi | FID | KID (sd) | precision | recall |", "|---|---|---|---|---|"]
    lines += [f"| {psi} | {metric_cells(m)} |" for psi, m in results["truncation"].items()]
    noise, mixing = results["properties"]["noise"], results["properties"]["mixing"]
    lines += ["", f"#### StyleGAN noise vs w ({args.latents} latents, mean ± sd)", "",
              "Relative L2 change ||x' - x|| / ||x|| of the [0, 1] image (raw) and of its 4x4 "
              "average-pooled (8x8 low-pass) version:", "",
              "| change | raw | 4x4-pooled | pooled / raw |", "|---|---|---|---|"]  # fmt: skip
    for what, label in (("new noise", "same w, new noise"), ("new w", "new w, same noise")):
        raw, pooled = noise[f"{what}, raw"], noise[f"{what}, 4x4-pooled"]
        ratio = pooled.mean() / max(raw.mean(), 1e-12)
        lines.append(f"| {label} | {mean_sd(raw)} | {mean_sd(pooled)} | {ratio:.2f} |")
    lines += ["", "#### StyleGAN style mixing (constant noise)", "",
              "Correlation of the centred, normalised 8x8 low-pass pattern of mix(layers < "
              "crossover from A, the rest from B) with A's and with B's (layers 0-1: 4x4, "
              "2-3: 8x8, 4-5: 16x16, 6-7: 32x32):", "",
              "| crossover | corr with A | corr with B |", "|---|---|---|"]  # fmt: skip
    for key, (with_a, with_b) in mixing.items():
        lines.append(f"| {key} | {mean_sd(with_a, signed=True)} | "
                     f"{'-' if with_b is None else mean_sd(with_b, signed=True)} |")  # fmt: skip
    return lines


def metric_cells(m: dict) -> str:
    """FID | KID (sd over subsets) | precision | recall."""
    kid = f"{m['kid']:.3g} ({m['kid_std']:.2g})"
    return f"{m['fid']:.2f} | {kid} | {m['precision']:.3f} | {m['recall']:.3f}"

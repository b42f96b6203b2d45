"""Differentiable augmentation for GANs trained on few images, and its adaptive strength.

D sees every image, real or generated, through the same random augmentation T, and G's loss
goes through T too, so D cannot memorise the few real images and G still learns the
un-augmented distribution: the augmentations are differentiable in the pixels, and their
distribution is the same for real and fake (DiffAugment, Zhao et al. 2020). With strength p
each augmentation is applied to each image with probability p (0 = the identity, exactly);
`AdaptiveStrength` moves p from D's overfitting signal r = E[sign(D(real))] (ADA, Karras et
al. 2020): up when r is above its target (D is too sure of the reals), down otherwise.

Policies (a comma-separated subset, in this order): "color" (brightness, saturation and
contrast), "translation" (shift by up to 1/8 of the side, zero padding), "cutout" (zero a
square of half the side). Images are (N, C, H, W) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Augmentation = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def _uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One U[0, 1) draw per image, shaped to broadcast over (C, H, W)."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)


def _color(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Brightness +U[-0.5, 0.5), saturation x U[0, 2), contrast x U[0.5, 1.5) per image."""
    x = x + (_uniform(x, generator) - 0.5)
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * (_uniform(x, generator) * 2.0) + grey
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x, generator) + 0.5) + mean


def _translation(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Shift each image by up to 1/8 of its side in both directions, zeros moving in."""
    n, _, height, width = x.shape
    limit_y, limit_x = max(height // 8, 1), max(width // 8, 1)
    options = dict(generator=generator, device=x.device)
    shift_y = torch.randint(-limit_y, limit_y + 1, (n, 1, 1), **options)
    shift_x = torch.randint(-limit_x, limit_x + 1, (n, 1, 1), **options)
    rows = torch.arange(height, device=x.device).view(1, height, 1) - shift_y
    cols = torch.arange(width, device=x.device).view(1, 1, width) - shift_x
    inside = ((rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)).unsqueeze(1)
    rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    moved = x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    return moved * inside.to(x.dtype)


def _cutout(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Zero one square of half the side per image, centred anywhere."""
    n, _, height, width = x.shape
    size_y, size_x = height // 2, width // 2
    options = dict(generator=generator, device=x.device)
    top = torch.randint(0, height, (n, 1, 1), **options) - size_y // 2
    left = torch.randint(0, width, (n, 1, 1), **options) - size_x // 2
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    hole = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x * (~hole).unsqueeze(1).to(x.dtype)


AUGMENTATIONS: dict[str, Augmentation] = {
    "color": _color,
    "translation": _translation,
    "cutout": _cutout,
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """The augmentations a policy names, in the canonical order; ValueError for unknown ones."""
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(
            f"unknown augmentation(s) {unknown}: choose from {', '.join(AUGMENTATIONS)}"
        )
    return tuple(name for name in AUGMENTATIONS if name in names)


def check_augment(policy: str, strength: float, ada_target: float | None) -> None:
    """ValueError naming a bad augmentation setting: an unknown policy, a strength outside
    [0, 1], or an ADA target outside (0, 1) or without a policy to adapt."""
    parse_policy(policy)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"augment_strength must be in [0, 1], got {strength}")
    if ada_target is not None and not (0.0 < ada_target < 1.0 and policy):
        raise ValueError("ada_target must be in (0, 1) and needs an augment policy")


def augment(
    x: torch.Tensor,
    policy: tuple[str, ...],
    strength: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`x` with each augmentation of `policy` applied to each image with probability
    `strength`; differentiable in `x`. Strength 0 returns `x` itself."""
    if strength <= 0.0 or not policy:
        return x
    for name in policy:
        changed = AUGMENTATIONS[name](x, generator)
        if strength >= 1.0:
            x = changed
        else:
            chosen = (_uniform(x, generator) < strength).to(x.dtype)
            x = chosen * changed + (1.0 - chosen) * x
    return x


@dataclass
class AdaptiveStrength:
    """ADA's controller of the augmentation strength p.

    `observe(real_logits)` accumulates D's outputs on real images; every `interval` calls,
    r = mean(sign(D(real))) is compared with `target` and p moves by
    interval * batch / `images_to_one` towards more augmentation when r > target (D
    overfits the reals), less otherwise, clamped to [0, `max_strength`].
    """

    target: float = 0.6
    interval: int = 4
    images_to_one: int = 20_000
    max_strength: float = 1.0
    strength: float = 0.0
    _signs: float = 0.0
    _count: int = 0
    _calls: int = 0

    def observe(self, real_logits: torch.Tensor) -> float:
        """Record one batch of D(real); returns the (possibly updated) strength."""
        self._signs += float(torch.sign(real_logits.detach().float()).sum())
        self._count += real_logits.numel()
        self._calls += 1
        if self._calls % self.interval == 0:
            overfit = self._signs / max(self._count, 1)
            step = self._count / self.images_to_one
            direction = 1.0 if overfit > self.target else -1.0
            self.strength = min(max(self.strength + direction * step, 0.0), self.max_strength)
            self._signs, self._count = 0.0, 0
        return self.strength

    def state(self) -> dict[str, float | int]:
        """The strength and the partly filled interval, for a checkpoint."""
        return {"strength": self.strength, "signs": self._signs, "count": self._count,
                "calls": self._calls}  # fmt: skip

    def load_state(self, state: dict[str, float | int]) -> None:
        """Continue from `state` (a bare strength from an older checkpoint: a fresh interval)."""
        self.strength = float(state.get("strength", 0.0))
        self._signs = float(state.get("signs", 0.0))
        self._count, self._calls = int(state.get("count", 0)), int(state.get("calls", 0))


def saved_ada_state(family_state: dict) -> dict:
    """ADA's state in a trainer checkpoint's family state ({} when it has none; an older
    checkpoint's bare "ada_strength" as the strength)."""
    if "ada" in family_state:
        return family_state["ada"]
    return {"strength": family_state.get("ada_strength", 0.0)}

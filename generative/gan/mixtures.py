"""2-D Gaussian mixtures for mode-coverage checks (Metz et al. 2017; Srivastava et al. 2017):
8 modes on a ring and 25 on a grid, and the coverage statistics reported for them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


def ring_modes(n_modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """Centres evenly spaced on a circle."""
    angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    return torch.stack([radius * angles.cos(), radius * angles.sin()], dim=1).float()


def grid_modes(side: int = 5, spacing: float = 2.0) -> torch.Tensor:
    """Centres on a side x side grid centred at the origin."""
    ticks = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    return torch.cartesian_prod(ticks, ticks)


@dataclass(frozen=True)
class Mixture:
    """Equal-weight isotropic Gaussians with standard deviation `std` around `centres`."""

    centres: torch.Tensor
    std: float

    def sample(self, n: int, *, seed: int = 0) -> torch.Tensor:
        """n draws (float32), with the mode of each drawn uniformly."""
        generator = torch.Generator().manual_seed(seed)
        which = torch.randint(len(self.centres), (n,), generator=generator)
        noise = torch.randn(n, self.centres.shape[1], generator=generator)
        return self.centres[which] + self.std * noise


MIXTURES: dict[str, Callable[[], Mixture]] = {
    "ring8": lambda: Mixture(ring_modes(8, 2.0), 0.02),
    "grid25": lambda: Mixture(grid_modes(5, 2.0), 0.05),
}


@dataclass(frozen=True)
class Coverage:
    """modes_covered: modes holding at least `min_count` high-quality samples;
    high_quality: share of samples within `n_std` standard deviations of their nearest mode."""

    modes_covered: int
    n_modes: int
    high_quality: float


def mode_coverage(
    samples: torch.Tensor, mixture: Mixture, *, n_std: float = 3.0, min_count: int | None = None
) -> Coverage:
    """Assign each sample to its nearest centre; count modes and high-quality samples. By
    default a mode counts when it holds at least 1/4 of its fair share of the high-quality
    samples (n / n_modes / 4), so a handful of strays does not count as coverage."""
    distances = torch.cdist(samples.float(), mixture.centres)
    nearest, which = distances.min(dim=1)
    good = nearest <= n_std * mixture.std
    n_modes = len(mixture.centres)
    threshold = max(1, len(samples) // (4 * n_modes)) if min_count is None else min_count
    counts = torch.bincount(which[good], minlength=n_modes)
    return Coverage(int((counts >= threshold).sum()), n_modes, float(good.float().mean()))

"""Learning rates that fall to zero at the end of a training budget.

A run stopped by a budget (CPU seconds, a G-step cap or the epochs) ends wherever the
optimiser happens to be; with a constant learning rate the last G is one noisy iterate.
Decaying the rate linearly to zero over the budget's last part lets G and D settle first
(Li et al. 2020, "Budgeted training": linear decay to zero is the best schedule when the
budget is known in advance). `GANTrainerConfig.lr_decay_start` turns it on.
"""

from __future__ import annotations

import torch

__all__ = [
    "budget_progress",
    "check_decay_start",
    "decay_factor",
    "scale_learning_rates",
]


def check_decay_start(start: float | None) -> None:
    """ValueError unless `start` is None or a fraction in [0, 1)."""
    if start is not None and not 0.0 <= start < 1.0:
        raise ValueError(f"lr_decay_start must be None or a fraction in [0, 1), got {start!r}")


def budget_progress(*used_of_budget: tuple[float, float | None]) -> float:
    """The largest used fraction, in [0, 1], of the budgets that are set: each pair is
    (used, budget), and a budget of None is not set (e.g. no time limit)."""
    fractions = [used / budget for used, budget in used_of_budget if budget is not None]
    return min(max(fractions, default=0.0), 1.0)


def decay_factor(progress: float, start: float) -> float:
    """1 until `progress` reaches `start`, then falling linearly to 0 at progress 1."""
    if progress <= start:
        return 1.0
    return max(0.0, (1.0 - progress) / (1.0 - start))


def scale_learning_rates(
    optimizers: list[torch.optim.Optimizer], base_rates: list[float], factor: float
) -> None:
    """Set every parameter group of optimizer i to `base_rates[i] * factor`."""
    for optimizer, rate in zip(optimizers, base_rates, strict=True):
        for group in optimizer.param_groups:
            group["lr"] = rate * factor

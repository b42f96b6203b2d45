"""Shared pieces of the GAN benchmarks: data, each loss's paper settings, mean ± sd cells.

Not a benchmark itself; the GAN, progressive and CycleGAN benchmarks import it (run them from
the repository root or `benchmarks/`).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from bench_common import DEFAULT_DATA_DIR

from anomaly.data import load_dataset
from generative.gan import GANTrainerConfig

IMAGE_SHAPE = (1, 28, 28)

# loss -> the optimizer settings its paper prescribes (no per-loss tuning beyond these):
# minimax / non-saturating: the DCGAN paper's Adam (lr 2e-4, beta1 0.5); LSGAN: the same
# (Mao et al. 2017 use Adam 2e-4, beta1 0.5); WGAN: RMSprop 5e-5, clipping 0.01 and 5 critic
# steps (Arjovsky et al. 2017, Algorithm 1); WGAN-GP: Adam 1e-4, betas (0, 0.9), 5 critic steps,
# lambda 10 (Gulrajani et al. 2017, Algorithm 1). Clip value and lambda live in GAN_LOSSES.
PAPER_SETTINGS: dict[str, dict] = {
    "minimax": {"optimizer": "adam", "lr": 2e-4, "betas": (0.5, 0.999), "n_critic": 1},
    "non_saturating": {"optimizer": "adam", "lr": 2e-4, "betas": (0.5, 0.999), "n_critic": 1},
    "lsgan": {"optimizer": "adam", "lr": 2e-4, "betas": (0.5, 0.999), "n_critic": 1},
    "wgan": {"optimizer": "rmsprop", "lr": 5e-5, "betas": (0.5, 0.999), "n_critic": 5},
    "wgan_gp": {"optimizer": "adam", "lr": 1e-4, "betas": (0.0, 0.9), "n_critic": 5},
}


def paper_trainer_config(
    loss: str, *, steps: int | None, batch_size: int, seed: int, autocast: str
) -> GANTrainerConfig:
    """A CPU trainer config with `loss`'s paper settings, stopped after `steps` G steps (None: no
    step cap; the caller then sets a time budget)."""
    settings = PAPER_SETTINGS[loss]
    return GANTrainerConfig(
        epochs=10**6,  # the step cap (or the caller's time budget) ends training
        batch_size=batch_size,
        lr_generator=settings["lr"],
        lr_discriminator=settings["lr"],
        betas=settings["betas"],
        optimizer=settings["optimizer"],
        n_critic=settings["n_critic"],
        max_generator_steps=steps,
        seed=seed,
        device="cpu",
        autocast=autocast,
    )


def settings_line(loss: str) -> str:
    """One loss's settings, for the reports."""
    s = PAPER_SETTINGS[loss]
    extra = {"wgan": ", clip 0.01", "wgan_gp": ", lambda 10"}.get(loss, "")
    return (
        f"{loss}: {s['optimizer']} lr {s['lr']:g}, betas {s['betas']}, "
        f"n_critic {s['n_critic']}{extra}"
    )


def use_data_dir() -> None:
    """Point the data catalog at the shared data folder unless GENAD_DATA_DIR is set."""
    os.environ.setdefault("GENAD_DATA_DIR", DEFAULT_DATA_DIR)


def fashion(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST images as float (N, 1, 28, 28) in [0, 1] and int64 labels."""
    use_data_dir()
    data = load_dataset("fashion-mnist", split=split)
    images = torch.from_numpy(np.asarray(data.X)).float().div_(255.0)
    return images, torch.from_numpy(np.asarray(data.y)).long()


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices of `per_class` rows of every label, drawn with numpy's rng(seed)."""
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    rows = [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)]
    return torch.from_numpy(np.sort(np.concatenate(rows)))


def mean_sd(values: list[float] | np.ndarray, *, signed: bool = False) -> str:
    """'mean ± sd' (sample sd; just the mean for one value); `signed` shows the mean's sign."""
    values = np.asarray(values, dtype=float)
    mean = f"{values.mean():+.3f}" if signed else f"{values.mean():.3f}"
    if len(values) < 2:
        return mean
    return f"{mean} ± {values.std(ddof=1):.3f}"

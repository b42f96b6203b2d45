"""log p(x) estimates of the detector's density model, whichever family it is: the VAE
(`generative.vae.estimate_log_px`: "elbo", "iwae", "prior_mc") or the hierarchical VAE
(`generative.hvae.estimate_hvae_log_px`: "elbo", "iwae")."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from generative.hvae import HVAE, estimate_hvae_log_px
from generative.vae import estimate_log_px


def density_log_px(
    model: nn.Module,
    data: torch.Tensor,
    *,
    method: str,
    n_samples: int,
    seed: int,
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """Per-row estimate (N,) of log p(x) in nats by `method` with K = `n_samples`;
    `precision="bf16"` runs the networks under bfloat16 autocast."""
    if not isinstance(model, HVAE):
        return estimate_log_px(
            model, data, method=method, n_samples=n_samples, seed=seed,
            precision=precision, progress=progress,
        )  # fmt: skip
    device = next(model.parameters()).device
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    with autocast:
        return estimate_hvae_log_px(
            model, data, method=method, n_samples=n_samples, seed=seed, progress=progress
        ).float()

"""Batched Monte Carlo bounds on log p(x) for a hierarchical VAE, per row.

"iwae" is log 1/K sum_k w_k and "elbo" the mean of log w_k, where w_k = p(x, z_k) / q(z_k | x)
and z_k ~ q(z | x) through the top-down path (`HVAE.log_weights`). With `prior_layers=k` the k
lowest layers come from the conditional prior instead: the bound L^{>k}. The K samples of a row
are read from the shared table of `generative.noise` at an offset keyed by the row's content,
so a row's estimate depends only on the model, the row, K, k and the seed, whatever batch it
came in. Rows are processed in blocks of at most `max_rows` decoder rows (K x rows).
"""

from __future__ import annotations

import math

import torch

from generative.batching import pad_rows
from generative.hvae.model import HVAE
from generative.noise import keyed_normal, normal_table, row_keys

HVAE_METHODS = ("elbo", "iwae")
DEFAULT_MAX_ROWS = 8192


def _check_options(model: HVAE, method: str, n_samples: int, prior_layers: int) -> None:
    if method not in HVAE_METHODS:
        raise ValueError(f"unknown estimator {method!r}; choose one of {HVAE_METHODS}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if not 0 <= prior_layers < model.config.n_layers:
        raise ValueError(
            f"prior_layers must be in [0, {model.config.n_layers - 1}] for a model of "
            f"{model.config.n_layers} stochastic layers, got {prior_layers}"
        )


@torch.no_grad()
def estimate_hvae_log_px(
    model: HVAE,
    x: torch.Tensor,
    *,
    method: str = "iwae",
    n_samples: int = 100,
    prior_layers: int = 0,
    seed: int = 0,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: bool = False,
) -> torch.Tensor:
    """Per-row bound (N,) on log p(x) in nats: "iwae" (K = `n_samples`) or "elbo", with the
    `prior_layers` lowest stochastic layers drawn from the prior (0: the full bound)."""
    _check_options(model, method, n_samples, prior_layers)
    parameter = next(model.parameters())
    table = normal_table(
        n_samples, sum(model.config.latent_dims), seed, dtype=parameter.dtype,
        device=parameter.device,
    )  # fmt: skip
    block = max(1, max_rows // n_samples)
    samples_per_pass = max(1, max_rows // block)
    out = torch.empty(x.shape[0], dtype=parameter.dtype, device=parameter.device)
    starts = range(0, x.shape[0], block)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"{method} K={n_samples}", leave=False)
    for start in starts:
        rows = x[start : start + block].to(device=parameter.device, dtype=parameter.dtype)
        count = rows.shape[0]
        padded, keys = pad_rows(block, rows, row_keys(rows, seed))
        weights = torch.cat(
            [
                sum(model.log_weights(padded, keyed_normal(table, keys, s, n), prior_layers))
                for s in range(0, n_samples, samples_per_pass)
                for n in [min(samples_per_pass, n_samples - s)]
            ]
        )
        if method == "elbo":
            out[start : start + count] = weights.mean(0)[:count]
        else:
            bound = torch.logsumexp(weights, 0) - math.log(n_samples)
            out[start : start + count] = bound[:count]
    return out


def hierarchical_llr(model: HVAE, x: torch.Tensor, prior_layers: int, **options) -> torch.Tensor:
    """LLR^{>k} per row: the full bound minus the bound L^{>k} with the k = `prior_layers`
    lowest layers from the prior (Havtorn et al. 2021); large for inputs whose low-level
    statistics the model explains better than their semantics. Options as
    `estimate_hvae_log_px`."""
    full = estimate_hvae_log_px(model, x, prior_layers=0, **options)
    return full - estimate_hvae_log_px(model, x, prior_layers=prior_layers, **options)

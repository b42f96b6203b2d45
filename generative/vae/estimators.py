"""Batched Monte Carlo estimates of log p(x) for a VAE, per row.

Three estimators share one engine. For each block of rows, K latent samples per row are decoded
in chunks of at most `max_rows` decoder rows (K x B rows in one pass when they fit), and the
per-sample log weights are reduced with logsumexp (or a mean for the ELBO):

- "elbo":     mean_k log p(x|z_k) - KL(q(z|x) || p(z)),          z_k ~ q(z|x), KL in closed form
- "iwae":     log 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x),           z_k ~ q(z|x)
- "prior_mc": log 1/K sum_k p(x|z_k),                            z_k ~ p(z)   (the seed's estimate)

Samples come from `generative.noise`, keyed by row content: a row's estimate depends only on the
model, the row, K and the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from generative.noise import keyed_normal, normal_table, row_keys

DEFAULT_MAX_ROWS = 2048
DEFAULT_MEMORY_MB = 512.0


@dataclass(frozen=True)
class _Method:
    from_posterior: bool
    importance_weighted: bool


METHODS: dict[str, _Method] = {
    "elbo": _Method(from_posterior=True, importance_weighted=False),
    "iwae": _Method(from_posterior=True, importance_weighted=True),
    "prior_mc": _Method(from_posterior=False, importance_weighted=True),
}


def rows_for_budget(model: torch.nn.Module, memory_mb: float, max_rows: int) -> int:
    """Decoder rows per pass so activations and likelihood temporaries stay under `memory_mb`."""
    config = model.config
    params_width = model.likelihood.n_params * config.data_dim
    width = 4 * params_width + 2 * sum(config.hidden_dims) + 4 * config.latent_dim
    if config.backbone == "conv":
        width += 4 * params_width * len(config.conv_channels)
    bytes_per_row = 4 * width
    return max(1, min(max_rows, int(memory_mb * 2**20 // bytes_per_row)))


@torch.no_grad()
def estimate_log_px(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    method: str = "iwae",
    n_samples: int = 100,
    seed: int = 0,
    max_rows: int = DEFAULT_MAX_ROWS,
    memory_mb: float = DEFAULT_MEMORY_MB,
    progress: bool = False,
) -> torch.Tensor:
    """Per-row estimate (N,) of log p(x) in nats by `method` ("elbo", "iwae" or "prior_mc")."""
    if method not in METHODS:
        raise ValueError(f"unknown estimator {method!r}; choose one of {sorted(METHODS)}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    parameter = next(model.parameters())
    x = x.to(device=parameter.device, dtype=parameter.dtype)
    chunk_rows = rows_for_budget(model, memory_mb, max_rows)
    keys = row_keys(x, seed)
    table = normal_table(n_samples, model.config.latent_dim, seed, dtype=x.dtype, device=x.device)
    block = max(1, chunk_rows // n_samples)
    starts = range(0, x.shape[0], block)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in tqdm(starts, desc=f"{method} K={n_samples}", disable=not progress, leave=False):
        stop = start + block
        out[start:stop] = _estimate_block(
            model, x[start:stop], keys[start:stop], table, METHODS[method], n_samples, chunk_rows
        )
    return out


def _estimate_block(
    model: torch.nn.Module,
    x: torch.Tensor,
    keys: torch.Tensor,
    table: torch.Tensor,
    method: _Method,
    n_samples: int,
    chunk_rows: int,
) -> torch.Tensor:
    mu, logvar = model.encode(x) if method.from_posterior else (None, None)
    per_chunk = max(1, chunk_rows // x.shape[0])
    log_weights = [
        _log_weights(
            model, x, keys, table, start, min(per_chunk, n_samples - start), mu, logvar, method
        )
        for start in range(0, n_samples, per_chunk)
    ]
    weights = torch.cat(log_weights, dim=0)
    if not method.importance_weighted:
        return weights.mean(dim=0) - model.kl_divergence(mu, logvar)
    return torch.logsumexp(weights, dim=0) - math.log(n_samples)


def _log_weights(
    model: torch.nn.Module,
    x: torch.Tensor,
    keys: torch.Tensor,
    table: torch.Tensor,
    start: int,
    count: int,
    mu: torch.Tensor | None,
    logvar: torch.Tensor | None,
    method: _Method,
) -> torch.Tensor:
    """(count, B) log p(x|z_k), plus log p(z_k) - log q(z_k|x) when importance weighting."""
    eps = keyed_normal(table, keys, start, count)
    if mu is None or logvar is None:
        z = eps
        correction: torch.Tensor | float = 0.0
    else:
        z = mu + torch.exp(0.5 * logvar) * eps
        correction = 0.5 * (eps.square() - z.square()).sum(-1) + 0.5 * logvar.sum(-1)
    params = model.decode(z.reshape(-1, z.shape[-1]))
    params = params.view(count, x.shape[0], *params.shape[1:])
    log_px_z = model.likelihood.log_prob(params, x.flatten(1))
    if method.importance_weighted:
        return log_px_z + correction
    return log_px_z

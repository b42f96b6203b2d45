"""Batched Monte Carlo estimates of log p(x) for a VAE, per row.

Three estimators share one engine. For each block of rows, K latent samples per row are decoded
in chunks of at most `max_rows` decoder rows (K x B rows in one pass when they fit), and the
per-sample log weights are reduced with logsumexp (or a mean for the ELBO):

- "elbo":     mean_k log p(x|z_k) - KL(q(z|x) || p(z)),          z_k ~ q(z|x), KL in closed form
- "iwae":     log 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x),           z_k ~ q(z|x)
- "prior_mc": log 1/K sum_k p(x|z_k),                            z_k ~ p(z)   (the seed's estimate)

Samples come from `generative.noise`, keyed by row content, and every block of rows is padded to
one row count (`generative.batching`): a row's estimate depends only on the model, the row, K
and the seed, bit for bit, whatever batch it came in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from generative.batching import pad_rows
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


PRECISIONS = ("fp32", "bf16")


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
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """Per-row estimate (N,) of log p(x) in nats by `method` ("elbo", "iwae" or "prior_mc").

    `precision="bf16"` runs the encoder and decoder under bfloat16 autocast (CPUs with bf16
    matrix units and GPUs), keeping the likelihood, weights and logsumexp in the model's dtype.
    The result is on the model's device.
    """
    if method not in METHODS:
        raise ValueError(f"unknown estimator {method!r}; choose one of {sorted(METHODS)}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    parameter = next(model.parameters())
    chunk_rows = rows_for_budget(model, memory_mb, max_rows)
    table = normal_table(
        n_samples, model.config.latent_dim, seed, dtype=parameter.dtype, device=parameter.device
    )
    engine = _Engine(model, table, METHODS[method], n_samples, chunk_rows, precision)
    block = max(1, chunk_rows // n_samples)
    out = torch.empty(x.shape[0], dtype=parameter.dtype, device=parameter.device)
    starts = range(0, x.shape[0], block)
    if progress:  # tqdm only then: scoring a registered model never shows a bar
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"{method} K={n_samples}", leave=False)
    for start in starts:
        rows = x[start : start + block].to(device=parameter.device, dtype=parameter.dtype)
        count = rows.shape[0]
        padded, keys = pad_rows(block, rows, row_keys(rows, seed))
        out[start : start + count] = engine.estimate(padded, keys)[:count]
    return out


@dataclass(frozen=True)
class _Engine:
    """The per-block work of `estimate_log_px`, with its fixed settings."""

    model: torch.nn.Module
    table: torch.Tensor
    method: _Method
    n_samples: int
    chunk_rows: int
    precision: str

    def _autocast(self, x: torch.Tensor) -> torch.autocast:
        enabled = self.precision == "bf16"
        return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=enabled)

    def estimate(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Estimates for one block of rows whose K x B decoder rows fit in chunks."""
        mu = logvar = None
        if self.method.from_posterior:
            with self._autocast(x):
                mu, logvar = self.model.encode(x)
            mu, logvar = mu.to(x.dtype), logvar.to(x.dtype)
        per_chunk = max(1, self.chunk_rows // x.shape[0])
        weights = torch.cat(
            [
                self._log_weights(
                    x, keys, start, min(per_chunk, self.n_samples - start), mu, logvar
                )
                for start in range(0, self.n_samples, per_chunk)
            ]
        )
        if not self.method.importance_weighted:
            return weights.mean(dim=0) - self.model.kl_divergence(mu, logvar)
        return torch.logsumexp(weights, dim=0) - math.log(self.n_samples)

    def _log_weights(
        self,
        x: torch.Tensor,
        keys: torch.Tensor,
        start: int,
        count: int,
        mu: torch.Tensor | None,
        logvar: torch.Tensor | None,
    ) -> torch.Tensor:
        """(count, B) log p(x|z_k), plus log p(z_k) - log q(z_k|x) when importance weighting."""
        eps = keyed_normal(self.table, keys, start, count)
        correction: torch.Tensor | float = 0.0
        if mu is None or logvar is None:
            z = eps
        else:
            z = mu + torch.exp(0.5 * logvar) * eps
            correction = 0.5 * (eps.square() - z.square()).sum(-1) + 0.5 * logvar.sum(-1)
        with self._autocast(x):
            params = self.model.decode(z.reshape(-1, z.shape[-1]))
        params = params.to(x.dtype).view(count, x.shape[0], *params.shape[1:])
        log_px_z = self.model.likelihood.log_prob(params, x.flatten(1))
        if self.method.importance_weighted:
            return log_px_z + correction
        return log_px_z

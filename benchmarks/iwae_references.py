"""Reference implementations the IWAE benchmark measures genad against, and its timers.

- `pythae_style_iwae`: log p(x) one data point at a time, the way pythae's `VAE.get_nll` does;
- `matmul_gflops`: the machine's matmul rate for the shapes that matter, in one dtype;
- `time_best` and `timed_parts`: wall-clock timers (best of N; time inside named functions).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

import generative.vae.estimators as estimators
from generative.vae.model import VAE

PYTHAE_BATCH_SIZE = 100  # the default `batch_size` of pythae's get_nll
# name: (m, k, n, as a Linear layer with bias) for an (m, k) @ (k, n) product
MATMUL_SHAPES = {
    "square 2048 x 2048 @ 2048 x 2048": (2048, 2048, 2048, False),
    "4096 x 4096 @ 4096 x 400": (4096, 4096, 400, False),
    "decoder layer: linear 2048 x 400 -> 784": (2048, 400, 784, True),
    "encoder layer: linear 2048 x 784 -> 400": (2048, 784, 400, True),
}
TIMED_NOISE = ("row_keys", "keyed_normal", "normal_table")


def time_best(fn: Callable[[], object], repeats: int, budget_s: float) -> tuple[float, int, object]:
    """Best wall time of `fn` over up to `repeats` runs (at least one; no new run is started
    when the runs so far plus one more would exceed `budget_s`). Returns (best, runs, result)."""
    best, runs, elapsed, result = math.inf, 0, 0.0, None
    while runs < repeats:
        start = time.perf_counter()
        result = fn()
        took = time.perf_counter() - start
        best, runs, elapsed = min(best, took), runs + 1, elapsed + took
        if elapsed + took > budget_s:
            break
    return best, runs, result


def matmul_gflops(dtype: torch.dtype, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of `dtype` products of the shapes in MATMUL_SHAPES (best of `repeats`)."""
    generator = torch.Generator().manual_seed(0)
    results = {}
    for name, (m, k, n, linear) in MATMUL_SHAPES.items():
        a = torch.randn(m, k, generator=generator).to(dtype)
        if linear:
            w, bias = torch.randn(n, k, generator=generator), torch.randn(n, generator=generator)
            w, bias = w.to(dtype), bias.to(dtype)
            op = lambda a=a, w=w, bias=bias: F.linear(a, w, bias)  # noqa: E731
        else:
            b = torch.randn(k, n, generator=generator).to(dtype)
            op = lambda a=a, b=b: a @ b  # noqa: E731
        op()  # warm up
        best, _, _ = time_best(op, repeats, budget_s=30.0)
        results[name] = 2.0 * m * k * n / best / 1e9
    return results


@torch.no_grad()
def pythae_style_iwae(
    model: VAE, x: torch.Tensor, n_samples: int, literal: bool = False
) -> torch.Tensor:
    """Per-row IWAE estimate computed one data point at a time, as pythae's `VAE.get_nll` does.

    For each row: n_samples // 100 batches of 100 copies of the row (one batch of n_samples
    copies when n_samples <= 100; pythae itself then uses 100 copies, which is not equal work;
    `literal=True` does that), re-encode every copy, draw z ~ q(z|x) with torch.randn, decode,
    log w = log p(x|z) + log p(z) - log q(z|x), logsumexp, and `.item()` per row. The likelihood
    is genad's Bernoulli BCE-with-logits. Unlike pythae this runs under no_grad (a faster loop).
    """
    if n_samples <= PYTHAE_BATCH_SIZE:
        n_batches, copies = 1, (PYTHAE_BATCH_SIZE if literal else n_samples)
    else:
        n_batches, copies = n_samples // PYTHAE_BATCH_SIZE, PYTHAE_BATCH_SIZE
    log_p = []
    for i in range(len(x)):
        row = x[i].unsqueeze(0)
        log_w = []
        for _ in range(n_batches):
            x_rep = torch.cat(copies * [row])
            mu, log_var = model.encode(x_rep)
            std = torch.exp(0.5 * log_var)
            z = mu + torch.randn_like(std) * std
            log_q_z_given_x = -0.5 * (log_var + (z - mu) ** 2 / torch.exp(log_var)).sum(dim=-1)
            log_p_z = -0.5 * (z**2).sum(dim=-1)
            logits = model.decode(z)[:, 0, :]
            log_p_x_given_z = -F.binary_cross_entropy_with_logits(
                logits, x_rep, reduction="none"
            ).sum(dim=-1)
            log_w.append(log_p_x_given_z + log_p_z - log_q_z_given_x)
        log_w_all = torch.cat(log_w)
        log_p.append((torch.logsumexp(log_w_all, 0) - math.log(len(log_w_all))).item())
    return torch.tensor(log_p)


@contextlib.contextmanager
def timed_parts(model: VAE) -> Iterator[dict[str, float]]:
    """Accumulate wall time in the estimator's noise functions (looked up as globals of
    `generative.vae.estimators`) and in the model's encode, decode and likelihood.log_prob."""
    totals: dict[str, float] = {}

    def wrap(name: str, fn: Callable) -> Callable:
        def timed(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
            return result

        return timed

    originals = {name: getattr(estimators, name) for name in TIMED_NOISE}
    for name, fn in originals.items():
        setattr(estimators, name, wrap(name, fn))
    model.encode = wrap("encoder", model.encode)
    model.decode = wrap("decoder", model.decode)
    model.likelihood.log_prob = wrap("likelihood", model.likelihood.log_prob)
    try:
        yield totals
    finally:
        for name, fn in originals.items():
            setattr(estimators, name, fn)
        del model.encode, model.decode, model.likelihood.log_prob

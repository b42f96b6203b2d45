"""Likelihood Regret (Xiao, Yan and Amit 2020) of a VAE, per row.

The amortised encoder gives every input q(z | x) = N(mu(x), sigma(x)^2). For inputs like the
training data it is close to the best Gaussian for that input; for inputs unlike them it is
not, and optimising q for the one input raises its ELBO by much more. The regret of a row is

    ELBO(x; q*) - ELBO(x; q_encoder)  >= 0,

where q* comes from `steps` Adam steps on the row's own posterior parameters (mu, log sigma^2),
started at the encoder's output: Xiao et al.'s per-input re-optimisation of the encoder, taken
to the encoder that may output any diagonal Gaussian for this one input (so no encoder weights
are copied per row, and all rows optimise at once: each row's loss depends only on its own
parameters, and Adam's update is per coordinate).

Both ELBOs average log p(x | z) over the same `n_samples` standard normals per row, read from the
keyed table of `generative.noise` (a row's draws depend on its content and the seed, not on its
batch), with the KL in closed form. The best iterate is kept, the start included, so the
regret is never negative, and it is 0 for a row whose encoder output is already optimal.
"""

from __future__ import annotations

import torch

from generative.noise import keyed_normal, normal_table, row_keys
from generative.vae import VAE


def _block_regret(
    model: VAE, x: torch.Tensor, eps: torch.Tensor, steps: int, learning_rate: float
) -> torch.Tensor:
    """The regret of the rows of one block (all optimised together)."""
    with torch.no_grad():
        mu0, logvar0 = model.encode(x)
        start = model.sampled_elbo(x, mu0, logvar0, eps)
    mu = mu0.detach().clone().requires_grad_(True)
    logvar = logvar0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([mu, logvar], lr=learning_rate)
    best = start.clone()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        elbo = model.sampled_elbo(x, mu, logvar, eps)
        best = torch.maximum(best, elbo.detach())
        (-elbo.sum()).backward()
        optimizer.step()
    with torch.no_grad():
        best = torch.maximum(best, model.sampled_elbo(x, mu, logvar, eps))
    return best - start


def likelihood_regret(
    model: VAE,
    x: torch.Tensor,
    *,
    steps: int = 30,
    learning_rate: float = 0.1,
    n_samples: int = 8,
    seed: int = 0,
    max_rows: int = 512,
    progress: bool = False,
) -> torch.Tensor:
    """Likelihood Regret per row (N,) in nats: how much the ELBO of `x` rises when its posterior
    is optimised for it alone (`steps` Adam steps at `learning_rate` on (mu, log sigma^2),
    `n_samples` fixed draws). Higher = less like the training data. Rows go through in blocks
    of `max_rows`; the model's weights are not changed."""
    if steps < 0 or n_samples < 1 or learning_rate <= 0 or max_rows < 1:
        raise ValueError(
            f"likelihood_regret needs steps >= 0, n_samples >= 1, learning_rate > 0 and "
            f"max_rows >= 1; got {steps}, {n_samples}, {learning_rate}, {max_rows}"
        )
    parameter = next(model.parameters())
    x = x.to(device=parameter.device, dtype=parameter.dtype)
    table = normal_table(
        n_samples, model.config.latent_dim, seed, dtype=parameter.dtype, device=parameter.device
    )
    was_training = model.training
    trainable = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    starts = range(0, x.shape[0], max_rows)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"likelihood regret ({steps} steps)", leave=False)
    try:
        blocks = []
        for begin in starts:
            rows = x[begin : begin + max_rows]
            eps = keyed_normal(table, row_keys(rows, seed), 0, n_samples)
            blocks.append(_block_regret(model, rows, eps, steps, learning_rate))
    finally:
        for flag, weight in zip(trainable, model.parameters(), strict=True):
            weight.requires_grad_(flag)
        model.train(was_training)
    return torch.cat(blocks) if blocks else x.new_zeros(0)

"""Closed-form checks of the three log p(x) estimators on a linear-Gaussian VAE (probabilistic PCA).

With decoder x = W z + b + sigma * noise and p(z) = N(0, I), log p(x) = log N(x; b, C) exactly,
C = W W^T + sigma^2 I. The posterior is Gaussian with mean M^-1 W^T (x - b) and covariance
sigma^2 M^-1, M = W^T W + sigma^2 I (diagonal when W's columns are orthogonal, so a diagonal
encoder can be exact), and the ELBO of any Gaussian q has a closed form too. Tolerances are
standard errors of the numbers themselves, not constants picked to pass.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from generative.vae import VAE, VAEConfig

D, L, SIGMA = 6, 2, 0.5
EIGENVALUES = np.array([4.0, 2.0])


def ppca_parameters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(D, L)))
    weights = basis * np.sqrt(EIGENVALUES - SIGMA**2)
    return weights, rng.normal(size=D)


def exact_log_px(x: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    covariance = weights @ weights.T + SIGMA**2 * np.eye(D)
    centred = x - bias
    _, logdet = np.linalg.slogdet(covariance)
    mahalanobis = np.einsum("nd,de,ne->n", centred, np.linalg.inv(covariance), centred)
    return -0.5 * (mahalanobis + logdet + D * math.log(2 * math.pi))


def encoder_maps(weights: np.ndarray, bias: np.ndarray, mean_shift=0.0, logvar_shift=0.0):
    """Linear encoder (A, c, logvar) of the exact posterior, optionally perturbed."""
    m_inv = np.linalg.inv(weights.T @ weights + SIGMA**2 * np.eye(L))
    gain = m_inv @ weights.T
    logvar = np.log(SIGMA**2 * np.diag(m_inv)) + logvar_shift
    return gain * (1.0 + mean_shift), -(gain * (1.0 + mean_shift)) @ bias + mean_shift, logvar


def build_vae(weights, bias, gain, offset, logvar) -> VAE:
    config = VAEConfig(
        input_shape=(D,), latent_dim=L, hidden_dims=(), likelihood="gaussian", gaussian_std=SIGMA
    )
    model = VAE(config).double().eval()
    encoder, decoder = model.encoder.net[0], model.decoder.net[0]
    with torch.no_grad():
        encoder.weight.copy_(torch.from_numpy(np.vstack([gain, np.zeros((L, D))])))
        encoder.bias.copy_(torch.from_numpy(np.concatenate([offset, logvar])))
        decoder.weight.copy_(torch.from_numpy(weights))
        decoder.bias.copy_(torch.from_numpy(bias))
    return model


def closed_form_elbo(x, weights, bias, gain, offset, logvar) -> np.ndarray:
    mean = x @ gain.T + offset
    variance = np.exp(logvar)
    reconstruction = exact_gaussian_log(x, mean @ weights.T + bias) - 0.5 / SIGMA**2 * np.sum(
        (weights**2) @ variance
    )
    kl = 0.5 * np.sum(mean**2 + variance - 1.0 - logvar, axis=1)
    return reconstruction - kl


def exact_gaussian_log(x, mean):
    return -0.5 * np.sum((x - mean) ** 2, axis=1) / SIGMA**2 - D * (
        math.log(SIGMA) + 0.5 * math.log(2 * math.pi)
    )


@pytest.fixture(scope="module")
def ppca():
    weights, bias = ppca_parameters()
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2000, L))
    x = z @ weights.T + bias + SIGMA * rng.normal(size=(2000, D))
    return weights, bias, x, exact_log_px(x, weights, bias)


def standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values)))


def test_exact_posterior_makes_iwae_exact_for_every_k(ppca):
    weights, bias, x, truth = ppca
    model = build_vae(weights, bias, *encoder_maps(weights, bias))
    data = torch.from_numpy(x)
    for k in (1, 7, 100):
        estimate = model.log_px_iwae(data, n_samples=k, seed=k).numpy()
        np.testing.assert_allclose(estimate, truth, rtol=0, atol=1e-9)


def test_perturbed_encoder_orders_elbo_iwae_and_truth(ppca):
    weights, bias, x, truth = ppca
    maps = encoder_maps(weights, bias, mean_shift=0.3, logvar_shift=0.8)
    model = build_vae(weights, bias, *maps)
    data = torch.from_numpy(x)
    elbo_exact = closed_form_elbo(x, weights, bias, *maps)
    elbo_mc = model.elbo(data, n_samples=200, seed=3).numpy()
    assert abs(np.mean(elbo_mc - elbo_exact)) < 4 * standard_error(elbo_mc - elbo_exact)

    iwae = {k: model.log_px_iwae(data, n_samples=k, seed=11).numpy() for k in (1, 10, 100, 1000)}
    gap_1 = elbo_exact - iwae[1]  # E[IWAE_1] = ELBO
    assert abs(gap_1.mean()) < 4 * standard_error(gap_1)
    for small, large in ((1, 10), (10, 100), (100, 1000)):
        gain = iwae[large] - iwae[small]
        assert gain.mean() > 4 * standard_error(gain), (small, large)
    assert np.mean(truth - elbo_exact) > 0.5  # the perturbation is not negligible
    gap_1000 = truth - iwae[1000]
    assert gap_1000.mean() > -4 * standard_error(gap_1000)  # IWAE stays a lower bound
    # Burda et al.: the gap shrinks like Var(w / p(x)) / (2K). Predict it from independent draws.
    predicted = predicted_iwae_gap(x[:100], weights, bias, maps, truth[:100], k=1000)
    assert gap_1000.mean() < 2.0 * predicted + 4 * standard_error(gap_1000)
    assert gap_1000.mean() < 0.05 * np.mean(truth - elbo_exact)


def predicted_iwae_gap(x, weights, bias, maps, truth, k, draws=20000) -> float:
    """Delta-method gap Var(w/p)/(2K), with w = p(x|z)p(z)/q(z|x) from numpy draws of q."""
    gain, offset, logvar = maps
    rng = np.random.default_rng(99)
    mean, std = x @ gain.T + offset, np.exp(0.5 * logvar)
    eps = rng.normal(size=(draws, len(x), L))
    z = mean + std * eps
    log_lik = exact_gaussian_log(
        np.broadcast_to(x, z.shape[:2] + (D,)).reshape(-1, D), (z @ weights.T + bias).reshape(-1, D)
    ).reshape(draws, len(x))
    log_w = log_lik - 0.5 * np.sum(z**2, -1) + 0.5 * np.sum(eps**2, -1) + 0.5 * np.sum(logvar)
    ratio = np.exp(log_w - truth)
    return float(np.mean(ratio.var(axis=0)) / (2 * k))


def test_prior_monte_carlo_converges_with_larger_variance(ppca):
    weights, bias, x, truth = ppca
    maps = encoder_maps(weights, bias, mean_shift=0.3, logvar_shift=0.8)
    model = build_vae(weights, bias, *maps)
    data = torch.from_numpy(x[:100])
    k = 1000
    prior = np.stack([model.log_px_prior_mc(data, n_samples=k, seed=s).numpy() for s in range(8)])
    iwae = np.stack([model.log_px_iwae(data, n_samples=k, seed=s).numpy() for s in range(8)])
    prior_var, iwae_var = prior.var(axis=0, ddof=1).mean(), iwae.var(axis=0, ddof=1).mean()
    # Measured here: ~10x (K = 1000, 8 seeds x 100 rows); the variance of a K-sample average of
    # p(x|z)/p(x) under the prior is far larger than that of w/p(x) under q.
    assert prior_var > 5 * iwae_var
    error_small = np.abs(prior - truth[:100]).mean()
    big = model.log_px_prior_mc(data, n_samples=200_000, seed=123).numpy()
    error_big = np.abs(big - truth[:100])
    assert error_big.mean() < error_small / 4  # 200x the samples: error ~ 1/sqrt(K) or faster
    assert (truth[:100] - big).mean() > -4 * standard_error(truth[:100] - big)


def test_scores_are_a_function_of_the_row_not_the_batch(ppca):
    weights, bias, x, _ = ppca
    model = build_vae(weights, bias, *encoder_maps(weights, bias, mean_shift=0.3))
    data = torch.from_numpy(x[:50])
    full = model.log_px_iwae(data, n_samples=64, seed=5)
    reversed_rows = model.log_px_iwae(data.flip(0), n_samples=64, seed=5).flip(0)
    chunked = model.log_px_iwae(data, n_samples=64, seed=5, max_rows=10)
    single = torch.cat([model.log_px_iwae(row[None], n_samples=64, seed=5) for row in data[:5]])
    torch.testing.assert_close(reversed_rows, full, rtol=0, atol=1e-12)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-12)
    torch.testing.assert_close(single, full[:5], rtol=0, atol=1e-12)
    other_seed = model.log_px_iwae(data, n_samples=64, seed=6)
    assert not torch.allclose(other_seed, full)

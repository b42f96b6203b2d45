"""Likelihood Regret (issue 20) against closed forms on a linear-Gaussian VAE.

With orthogonal decoder columns the exact posterior is a diagonal Gaussian, so the best ELBO a
diagonal q can reach is log p(x) itself: the regret of an encoder output (mu, log sigma^2) is
log p(x) - ELBO(x; mu, log sigma^2), both in closed form (tests/test_ppca_closed_form.py). The
estimator uses S fixed draws, so its optimum differs from the exact one by Monte Carlo error:
the tolerance is 5 standard errors of the difference of the two S-sample averages of
log p(x | z), measured by simulation in the test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_ppca_closed_form import (
    build_vae,
    closed_form_elbo,
    encoder_maps,
    exact_log_px,
    ppca_parameters,
)

from anomaly.regret import likelihood_regret
from generative.vae import VAE, VAEConfig

S, STEPS = 2048, 400


def reconstruction_sd(model: VAE, x: torch.Tensor, draws: int = 4000) -> torch.Tensor:
    """Per-row standard deviation of log p(x | z) under the encoder's q (a simulation)."""
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(draws, *mu.shape, dtype=mu.dtype)
        params = model.decode(z.reshape(-1, mu.shape[1]))
        log_px_z = model.log_likelihood(params, x.repeat(draws, 1)).view(draws, -1)
    return log_px_z.std(0)


def tolerance(exact_model: VAE, model: VAE, x: torch.Tensor) -> torch.Tensor:
    sd = torch.sqrt(reconstruction_sd(exact_model, x) ** 2 + reconstruction_sd(model, x) ** 2)
    return 5 * sd / S**0.5


@pytest.mark.parametrize(("mean_shift", "logvar_shift"), [(0.6, 0.0), (0.0, 2.0), (-0.5, -2.0)])
def test_regret_equals_the_closed_form_amortisation_gap(mean_shift, logvar_shift):
    torch.manual_seed(0)
    weights, bias = ppca_parameters()
    x = np.random.default_rng(1).normal(size=(12, weights.shape[0])) + bias
    exact = build_vae(weights, bias, *encoder_maps(weights, bias))
    maps = encoder_maps(weights, bias, mean_shift, logvar_shift)
    model = build_vae(weights, bias, *maps)
    xt = torch.from_numpy(x)
    regret = likelihood_regret(model, xt, steps=STEPS, learning_rate=0.05, n_samples=S)
    gap = exact_log_px(x, weights, bias) - closed_form_elbo(x, weights, bias, *maps)
    bound = tolerance(exact, model, xt).numpy() + 1e-3
    assert np.all(gap > 3 * bound)  # each row's gap is well above its Monte Carlo error
    assert np.all(np.abs(regret.numpy() - gap) < bound), (regret.numpy() - gap, bound)


def test_regret_is_near_zero_when_the_encoder_is_already_optimal():
    weights, bias = ppca_parameters()
    x = np.random.default_rng(2).normal(size=(12, weights.shape[0])) + bias
    exact = build_vae(weights, bias, *encoder_maps(weights, bias))
    xt = torch.from_numpy(x)
    regret = likelihood_regret(exact, xt, steps=STEPS, learning_rate=0.05, n_samples=S)
    assert np.all(regret.numpy() >= 0)
    assert np.all(regret.numpy() < tolerance(exact, exact, xt).numpy() + 1e-3)


def small_vae() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(input_shape=(5,), latent_dim=3, hidden_dims=(16,)))


def test_regret_is_non_negative_batch_free_and_leaves_the_model_unchanged():
    model = small_vae()
    model.decoder.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(40, 5) * 3
    regret = likelihood_regret(model, x, steps=20, max_rows=16)
    assert regret.shape == (40,) and bool((regret >= 0).all()) and float(regret.max()) > 0
    alone = likelihood_regret(model, x[7:8], steps=20)
    torch.testing.assert_close(alone, regret[7:8], rtol=1e-4, atol=1e-4)
    assert torch.equal(likelihood_regret(model, x, steps=0), torch.zeros(40))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert not any(p.requires_grad for p in model.decoder.parameters())


@pytest.mark.parametrize(
    "options", [{"steps": -1}, {"n_samples": 0}, {"learning_rate": 0.0}, {"max_rows": 0}]
)
def test_bad_options_are_refused(options):
    with pytest.raises(ValueError, match="likelihood_regret needs"):
        likelihood_regret(small_vae(), torch.zeros(2, 5), **options)

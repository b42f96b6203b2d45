"""The mixed likelihood for tabular rows: a Bernoulli on each two-valued column, a learned
Gaussian on the others (`gaussian_bernoulli`), checked against torch's distributions."""

from __future__ import annotations

import math

import numpy as np
import torch

from anomaly import VAEDetector, VAEEnsembleDetector
from generative.registry import load_model, save_model
from generative.vae import LIKELIHOODS, VAE, VAEConfig


def mixed_rows() -> torch.Tensor:
    """Columns: a 0/1 flag, a constant, a three-valued column, a continuous one, and a flag
    standardised to the two values -1.3 and 2.7."""
    generator = torch.Generator().manual_seed(0)
    n = 200
    flag = (torch.rand(n, generator=generator) < 0.1).double()
    constant = torch.full((n,), 4.0, dtype=torch.float64)
    three = torch.randint(0, 3, (n,), generator=generator).double()
    continuous = torch.randn(n, generator=generator, dtype=torch.float64)
    scaled_flag = torch.where(torch.rand(n, generator=generator) < 0.5, -1.3, 2.7).double()
    return torch.stack([flag, constant, three, continuous, scaled_flag], dim=1)


def test_fit_columns_marks_exactly_the_two_valued_columns():
    likelihood = LIKELIHOODS["gaussian_bernoulli"](5)
    assert likelihood.fit_columns(mixed_rows()) == 2
    assert likelihood.binary_mask.tolist() == [True, False, False, False, True]
    torch.testing.assert_close(likelihood.binary_low[[0, 4]], torch.tensor([0.0, -1.3]))
    torch.testing.assert_close(likelihood.binary_high[[0, 4]], torch.tensor([1.0, 2.7]))
    # the learned Gaussian marks only the constant column (tests/test_constant_columns.py)
    assert LIKELIHOODS["gaussian_learned"](5).fit_columns(mixed_rows()) == 1


def test_unfitted_mixed_likelihood_is_the_learned_gaussian():
    generator = torch.Generator().manual_seed(1)
    mixed, gaussian = LIKELIHOODS["gaussian_bernoulli"](5), LIKELIHOODS["gaussian_learned"](5)
    raw = torch.randn(5, generator=generator)
    mixed.raw_log_std.data.copy_(raw)
    gaussian.raw_log_std.data.copy_(raw)
    params, x = torch.randn(7, 1, 5, generator=generator), torch.randn(7, 5, generator=generator)
    torch.testing.assert_close(mixed.log_prob(params, x), gaussian.log_prob(params, x))


def test_mixed_log_prob_is_bernoulli_mass_times_gaussian_density():
    likelihood = LIKELIHOODS["gaussian_bernoulli"](5).double()
    likelihood.fit_columns(mixed_rows())
    generator = torch.Generator().manual_seed(2)
    raw = torch.tensor([0.3, -0.5, 0.2, -1.0, 0.7], dtype=torch.float64)
    likelihood.raw_log_std.data.copy_(raw)
    params = torch.randn(1, 1, 5, generator=generator, dtype=torch.float64)
    # the four flag configurations with the same Gaussian columns
    x = mixed_rows()[:1].repeat(4, 1)
    x[:, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    x[:, 4] = torch.tensor([-1.3, 2.7, -1.3, 2.7])
    log_p = likelihood.log_prob(params.expand(4, 1, 5), x)
    gaussian_columns = [2, 3]
    location, std = params[0, 0, gaussian_columns], raw[gaussian_columns].exp()
    density = torch.distributions.Normal(location, std)
    log_density = density.log_prob(x[0, gaussian_columns]).sum()
    # column 1 is 4.0 in all 200 training rows: the rule-of-succession mixture around it
    new = 1 / 202
    seen = torch.distributions.Normal(torch.tensor(4.0, dtype=torch.float64), 1e-3)
    unseen = torch.distributions.Normal(torch.tensor(4.0, dtype=torch.float64), 1.0)
    log_density += torch.logaddexp(
        seen.log_prob(x[0, 1]) + math.log1p(-new), unseen.log_prob(x[0, 1]) + math.log(new)
    )
    flags = torch.distributions.Bernoulli(logits=params[0, 0, [0, 4]])
    configurations = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float64)
    expected = flags.log_prob(configurations).sum(-1)
    torch.testing.assert_close(log_p, expected + log_density, rtol=1e-12, atol=1e-12)
    # the masses of the four configurations sum to one
    assert abs(float(torch.logsumexp(log_p - log_density, 0).detach())) < 1e-12
    means = likelihood.mean(params)[0]
    flag_probability = torch.sigmoid(params[0, 0, 0])
    torch.testing.assert_close(means[0], flag_probability.double())
    torch.testing.assert_close(means[4], -1.3 + 4.0 * torch.sigmoid(params[0, 0, 4]))
    torch.testing.assert_close(means[gaussian_columns], params[0, 0, gaussian_columns])


def test_the_column_types_survive_save_and_load(tmp_path):
    torch.manual_seed(3)
    config = VAEConfig((5,), latent_dim=2, hidden_dims=(8,), likelihood="gaussian_bernoulli")
    model = VAE(config)
    model.likelihood.fit_columns(mixed_rows())
    loaded = load_model(save_model(model, tmp_path / "mixed"))
    assert loaded.likelihood.binary_mask.tolist() == [True, False, False, False, True]
    x = mixed_rows()[:10].float()
    torch.testing.assert_close(
        loaded.log_px_iwae(x, n_samples=5, seed=1), model.log_px_iwae(x, n_samples=5, seed=1)
    )


def test_detector_bounds_the_cost_of_rare_flags():
    """Rows: 3 Gaussian features and 30 independent flags each set with probability 1/100;
    anomalies are shifted by 6 in every Gaussian feature. With a Gaussian on a standardised
    flag, a row holding it pays about (1/sqrt(p))^2 / 2 = 50 nats per flag, about what a
    shifted row pays (3 * 36 / 2 = 54); with a Bernoulli a flag costs -log(1/100) = 4.6 nats.
    So the mixed likelihood ranks every shifted row below every flagged normal row, while
    the Gaussian one ranks some flagged normal rows (two flags: ~100 nats) below them."""
    rng = np.random.default_rng(0)
    n, flags = 3000, 30
    normal = np.hstack([rng.normal(size=(n, 3)), rng.random((n, flags)) < 0.01])
    shifted = np.hstack([rng.normal(size=(40, 3)) + 6.0, np.zeros((40, flags))])
    test_normal = np.hstack([rng.normal(size=(400, 3)), rng.random((400, flags)) < 0.01])
    flagged = test_normal[test_normal[:, 3:].any(axis=1)]
    assert len(flagged) > 20
    for likelihood, separates in [("gaussian_bernoulli", True), ("gaussian_learned", False)]:
        detector = VAEDetector(likelihood=likelihood, epochs=40, trim_fraction=0.0, refit=False)
        detector.fit(normal)
        if separates:
            assert detector.model_.likelihood.binary_mask.sum() == flags
        worst_flagged = detector.score_samples(flagged).min()
        best_shifted = detector.score_samples(shifted).max()
        assert (best_shifted < worst_flagged) == separates, likelihood


def test_ensemble_log_px_is_in_data_units_for_densities_only():
    """Rescaling a Gaussian column by 10 lowers a density by log 10; rescaling a flag
    (0/1 -> 0/100) leaves its probability mass, and so log p(x), unchanged."""
    rng = np.random.default_rng(4)
    rows = np.column_stack([rng.normal(size=600), rng.random(600) < 0.3, rng.normal(size=600)])
    params = {"likelihood": "gaussian_bernoulli", "epochs": 3, "min_steps": 0}
    fits = {}
    for name, factors in {"raw": [1, 1, 1], "flag": [1, 100, 1], "gauss": [10, 1, 1]}.items():
        ensemble = VAEEnsembleDetector(n_estimators=1, member_params=params, random_state=0)
        fits[name] = ensemble.fit(rows * factors).score_samples(rows[:50] * factors)
    np.testing.assert_allclose(fits["flag"], fits["raw"], atol=1e-3)
    np.testing.assert_allclose(fits["gauss"], fits["raw"] - np.log(10.0), atol=1e-3)

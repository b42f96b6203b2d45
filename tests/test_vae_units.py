"""Unit checks of the VAE's pieces against closed forms: likelihood normalisation, the KL, the
reparameterised gradient, warm-up and free bits, shapes, persistence and estimator arguments.

Tolerances come from the math: standard errors of Monte Carlo means, or the documented
approximation error of the discretised logistic's far-tail bins.
"""

from __future__ import annotations

import fractions
import math
import os
import pickle

import numpy as np
import pytest
import torch

from generative.checksums import CorruptFileError
from generative.registry import load_model, save_model
from generative.vae import LIKELIHOODS, VAE, VAEConfig, estimate_log_px

LEVELS = torch.arange(256, dtype=torch.float64) / 255.0


def tiny_vae(likelihood="gaussian", d=8, latent=4, **extra) -> VAE:
    config = VAEConfig(
        input_shape=(d,), latent_dim=latent, hidden_dims=(16,), likelihood=likelihood, **extra
    )
    return VAE(config)


def _log_sigmoid(t):
    return -np.logaddexp(0.0, -t)


def exact_log_bin_mass(k: np.ndarray, mean: float, scale: float) -> np.ndarray:
    """log P(bin k) of a logistic(mean, scale) on [-1, 1], 256 bins; edge bins take the tails."""
    centre = 2.0 * k / 255.0 - 1.0 - mean
    upper, lower = (centre + 1 / 255) / scale, (centre - 1 / 255) / scale
    right = lower > 0  # both ends in the right tail: use survival functions, no cancellation
    log_sf_l, log_sf_u = _log_sigmoid(-lower), _log_sigmoid(-upper)
    log_cdf_u, log_cdf_l = _log_sigmoid(upper), _log_sigmoid(lower)
    with np.errstate(divide="ignore"):  # the branch np.where discards may hit log(0)
        out = np.where(
            right,
            log_sf_l + np.log1p(-np.exp(np.minimum(log_sf_u - log_sf_l, 0.0))),
            log_cdf_u + np.log1p(-np.exp(np.minimum(log_cdf_l - log_cdf_u, 0.0))),
        )
    out[0], out[-1] = log_cdf_u[0], log_sf_l[-1]
    return out


@pytest.mark.parametrize("mean", [-1.3, -1.0, -0.37, 0.0, 0.52, 1.0, 1.2])
@pytest.mark.parametrize("log_scale", [-7.0, -6.0, -3.0, 0.0, 2.0])
def test_discretized_logistic_is_normalised_and_matches_exact_bin_masses(mean, log_scale):
    likelihood = LIKELIHOODS["logistic256"](1)
    params = torch.tensor([[mean], [log_scale]], dtype=torch.float64).expand(256, 2, 1)
    log_p = likelihood.log_prob(params, LEVELS[:, None]).numpy()
    exact = exact_log_bin_mass(np.arange(256), mean, math.exp(log_scale))
    # Bins of mass > 1e-5 are exact differences of CDFs; lighter interior bins use the midpoint
    # density times the width. On a convex tail that underestimates the mass by a factor in
    # [a / sinh(a), 1], a = half-bin / scale (exact for an exponential tail). So the total's error
    # is at most the mass of those light bins, which is < 1e-4 for every scale allowed (>= e^-7).
    light = np.exp(exact) <= 1e-5
    light[[0, -1]] = False
    np.testing.assert_allclose(log_p[~light], exact[~light], rtol=0, atol=1e-8)
    a = (1 / 255) / math.exp(log_scale)
    ratio = log_p[light] - exact[light]
    assert np.all(ratio <= 1e-9) and np.all(ratio >= math.log(0.9 * a / math.sinh(a)))
    total = np.exp(log_p).sum()
    assert abs(total - 1.0) <= np.exp(exact[light]).sum() + 1e-12
    assert abs(total - 1.0) < 1e-4


def test_discretized_logistic_clamps_tiny_scales():
    likelihood = LIKELIHOODS["logistic256"](1)
    x = LEVELS[:, None]
    tiny, floor = (
        torch.tensor([[0.1], [s]], dtype=torch.float64).expand(256, 2, 1) for s in (-12.0, -7.0)
    )
    torch.testing.assert_close(likelihood.log_prob(tiny, x), likelihood.log_prob(floor, x))


def test_categorical_and_bernoulli_are_normalised():
    generator = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(256, 1, generator=generator, dtype=torch.float64)
    categorical = LIKELIHOODS["categorical256"](1)
    log_p = categorical.log_prob(logits.expand(256, 256, 1), LEVELS[:, None])
    assert abs(float(log_p.exp().sum()) - 1.0) < 1e-12
    # symbol k/255 must select logit k: log p(k) = logit_k - logsumexp(logits)
    torch.testing.assert_close(log_p, logits[:, 0] - torch.logsumexp(logits[:, 0], 0))

    bernoulli = LIKELIHOODS["bernoulli"](3)
    params = torch.tensor([[[-2.0, 0.3, 5.0]]], dtype=torch.float64)
    cube = torch.tensor([[(i >> j) & 1 for j in range(3)] for i in range(8)], dtype=torch.float64)
    total = bernoulli.log_prob(params.expand(8, 1, 3), cube).exp().sum()
    assert abs(float(total) - 1.0) < 1e-12


@pytest.mark.parametrize("name", ["gaussian", "gaussian_learned"])
def test_gaussian_log_prob_matches_torch_normal(name):
    generator = torch.Generator().manual_seed(1)
    likelihood = LIKELIHOODS[name](5, gaussian_std=0.7).double()
    std = torch.full((5,), 0.7, dtype=torch.float64)
    if name == "gaussian_learned":
        raw = torch.tensor([-9.0, -1.0, 0.0, 0.5, 1.2], dtype=torch.float64)
        likelihood.raw_log_std.data.copy_(raw)
        std = raw.clamp(min=math.log(1e-3)).exp()
    mean = torch.randn(4, 1, 5, generator=generator, dtype=torch.float64)
    x = mean[:, 0] + 0.01 * torch.randn(4, 5, generator=generator, dtype=torch.float64)
    expected = torch.distributions.Normal(mean[:, 0], std).log_prob(x).sum(-1)
    torch.testing.assert_close(likelihood.log_prob(mean, x), expected, rtol=1e-12, atol=1e-9)


def test_closed_form_kl_matches_monte_carlo():
    generator = torch.Generator().manual_seed(2)
    mu = 1.5 * torch.randn(4, 3, generator=generator, dtype=torch.float64)
    logvar = torch.empty(4, 3, dtype=torch.float64).uniform_(-2.0, 1.5, generator=generator)
    closed = tiny_vae().kl_divergence(mu, logvar)
    n = 200_000
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    z = q.sample((n,))
    log_ratio = (q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum(-1)
    error = log_ratio.mean(0) - closed
    standard_error = log_ratio.std(0) / math.sqrt(n)
    assert torch.all(error.abs() < 4 * standard_error), (error, standard_error)


def test_gradients_reach_the_encoder_through_the_sample():
    torch.manual_seed(3)
    model = tiny_vae("bernoulli", activation="tanh")
    x = (torch.rand(32, 8) < 0.5).float()
    model.training_loss(x, step=0)[0].backward()
    total = {n: p.grad.clone() for n, p in model.encoder.named_parameters()}
    model.zero_grad()
    mu, logvar = model.encode(x)
    model.kl_per_dim(mu, logvar).mean(0).sum().backward()
    for name, param in model.encoder.named_parameters():
        assert torch.isfinite(total[name]).all(), name
        # what is left after removing the KL's gradient comes through z = mu + sigma * eps
        assert (total[name] - param.grad).abs().max() > 1e-6, name


def test_reparameterised_gradient_is_unbiased():
    n, m, lv = 200_000, 0.7, -0.4
    mu = torch.full((n,), m, dtype=torch.float64, requires_grad=True)
    logvar = torch.full((n,), lv, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(4)
    VAE.reparameterize(mu, logvar).square().sum().backward()
    # per-draw gradients of z^2: d/dmu = 2z (mean 2 mu), d/dlogvar = z sigma eps (mean sigma^2)
    for grad, expected in ((mu.grad, 2 * m), (logvar.grad, math.exp(lv))):
        assert abs(float(grad.mean()) - expected) < 4 * float(grad.std()) / math.sqrt(n)


def test_uniform_categorical_decoder_costs_eight_bits_per_dim():
    model = tiny_vae("categorical256", d=12)
    with torch.no_grad():
        for layer in (model.decoder.net[-1], model.encoder.net[-1]):
            layer.weight.zero_()
            layer.bias.zero_()  # logits 0 and q(z|x) = p(z): every estimator is exact
    x = torch.randint(0, 256, (5, 12)).float() / 255.0
    params = torch.zeros(5, 256, 12)
    bpd = VAE.bits_per_dim(model.likelihood.log_prob(params, x), 12)
    torch.testing.assert_close(bpd, torch.full((5,), 8.0), rtol=0, atol=1e-6)
    for method in ("elbo", "iwae", "prior_mc"):
        log_px = estimate_log_px(model, x, method=method, n_samples=7)
        # float32 rounding of -12 log 256 ~ 66.5: 1e-5 nats is ~1e-6 bits/dim
        torch.testing.assert_close(
            VAE.bits_per_dim(log_px, 12), torch.full((5,), 8.0), rtol=0, atol=1e-5
        )


SHAPES = [("mlp", (7,)), ("mlp", (2, 5, 3)), ("conv", (1, 28, 28)), ("conv", (3, 13, 11))]


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
@pytest.mark.parametrize("backbone, shape", SHAPES)
def test_backbone_shapes(backbone, shape, likelihood):
    sizes = {"hidden_dims": (16,), "conv_channels": (4, 8)}
    config = VAEConfig(shape, latent_dim=3, backbone=backbone, likelihood=likelihood, **sizes)
    torch.manual_seed(5)
    model = VAE(config)
    x = torch.randint(0, 256, (2, *shape)).float() / 255.0
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (2, 3)
    params = model.decode(mu)
    assert params.shape == (2, LIKELIHOODS[likelihood].n_params, math.prod(shape))
    log_px = model.log_px_iwae(x, n_samples=3)
    assert log_px.shape == (2,) and torch.isfinite(log_px).all()
    assert model.sample(4).shape == (4, *shape)


def test_kl_warmup_and_free_bits_enter_the_loss():
    torch.manual_seed(6)
    x = torch.randn(64, 8)
    base = tiny_vae(latent=6)
    with torch.no_grad():
        mean_kl = base.kl_per_dim(*base.encode(x)).mean(0)
    free_bits = float(mean_kl.median())
    model = tiny_vae(latent=6, kl_warmup_steps=4, free_bits=free_bits)
    model.load_state_dict(base.state_dict())
    clamped = mean_kl < free_bits
    assert clamped.any() and (~clamped).any()  # both branches of max(KL_d, f) are exercised
    penalised = torch.where(clamped, torch.full_like(mean_kl, free_bits), mean_kl).sum()
    weights = [model.kl_weight(step) for step in range(8)]
    assert weights[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and weights[4:] == [1.0] * 4
    for step in (0, 2, 3, 7):
        torch.manual_seed(10 + step)
        loss, metrics = model.training_loss(x, step)
        torch.manual_seed(10 + step)
        mu, logvar = model.encode(x)
        log_px_z = model.log_likelihood(model.decode(model.reparameterize(mu, logvar)), x)
        expected = -log_px_z.mean() + weights[step] * penalised
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
        assert metrics["kl_weight"] == weights[step]
        assert metrics["kl"] == pytest.approx(float(mean_kl.sum()), rel=1e-6)  # unclamped


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(7)
    model = tiny_vae("gaussian_learned")
    with torch.no_grad():
        model.likelihood.raw_log_std.uniform_(-1.0, 1.0)
    target = save_model(model, tmp_path / "saved")
    save_model(model, tmp_path / "saved")  # overwriting is fine and leaves no staging folders
    assert sorted(os.listdir(tmp_path)) == ["saved"]
    assert sorted(os.listdir(target)) == ["checksums.json", "config.json", "model.pt"]
    loaded = load_model(target)
    assert loaded.config == model.config
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    x = torch.randn(10, 8)
    torch.testing.assert_close(
        loaded.log_px_iwae(x, n_samples=20, seed=3),
        model.log_px_iwae(x, n_samples=20, seed=3),
        rtol=0,
        atol=0,
    )


def test_load_refuses_pickled_objects_and_names_missing_files(tmp_path):
    target = save_model(tiny_vae(), tmp_path / "saved")
    state = torch.load(target / "model.pt", weights_only=True)
    torch.save({**state, "payload": fractions.Fraction(1, 3)}, target / "model.pt")
    # the file really holds an arbitrary object: an unrestricted load would rebuild it
    assert torch.load(target / "model.pt", weights_only=False)["payload"] == fractions.Fraction(
        1, 3
    )
    with pytest.raises(CorruptFileError, match="model.pt is corrupt"):  # not what was saved
        load_model(target)
    (target / "checksums.json").unlink()  # as saved before checksums: weights_only refuses it
    with pytest.raises(pickle.UnpicklingError, match="Weights only"):
        load_model(target)
    (target / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_model(target)


def test_active_units_counts_live_mean_dimensions():
    torch.manual_seed(8)
    model = tiny_vae(latent=6)
    dead = [1, 3, 4]
    head = model.encoder.net[-1]  # rows 0..5 give mu, rows 6..11 give logvar
    with torch.no_grad():
        head.weight[:6] *= 10.0  # live units vary well above the 0.01 threshold
        head.weight[dead] = 0.0
        head.bias[dead] = torch.tensor([0.0, 2.0, -1.0])  # constant means are not activity
    x = torch.randn(500, 8)
    means = model.encode(x)[0]
    assert means[:, dead].var(0).max() == 0 and means.var(0)[[0, 2, 5]].min() > 0.1
    assert model.active_units(x) == 3
    assert model.active_units(x, max_rows=7) == 3
    assert model.active_units(x, threshold=1e6) == 0


def test_estimator_argument_errors():
    model, x = tiny_vae(), torch.randn(3, 8)
    with pytest.raises(ValueError, match=r"'elbo', 'iwae', 'prior_mc'"):
        estimate_log_px(model, x, method="vimco")
    for call in (model.elbo, model.log_px_iwae, model.log_px_prior_mc):
        with pytest.raises(ValueError, match="n_samples"):
            call(x, n_samples=0)

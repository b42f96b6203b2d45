"""The denoising input mask of the VAE (issue 17): the share of masked features, the decoder
still scored on every feature, scoring untouched, and bad values refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly.detector import VAEDetector
from generative.vae import VAE, VAEConfig


def test_the_masked_share_is_binomial_and_kept_features_are_unchanged() -> None:
    torch.manual_seed(0)
    model = VAE(VAEConfig((50,), latent_dim=2, hidden_dims=(8,), input_mask=0.3))
    x = torch.rand(400, 50) + 1.0  # no zeros of its own
    masked = model.masked_input(x)
    share = (masked == 0).float().mean().item()
    # 20,000 Bernoulli(0.3) draws: sd = sqrt(0.3 * 0.7 / 20000) = 0.0032; 5 sd
    assert abs(share - 0.3) < 5 * (0.3 * 0.7 / x.numel()) ** 0.5
    kept = masked != 0
    assert torch.equal(masked[kept], x[kept])


def test_no_mask_is_the_identity_and_scoring_does_not_mask() -> None:
    X = np.random.default_rng(0).normal(size=(300, 4))
    plain = VAEDetector(epochs=2, min_steps=0, random_state=0).fit(X)
    assert torch.equal(plain.model_.masked_input(torch.ones(3, 4)), torch.ones(3, 4))
    masked = VAEDetector(epochs=2, min_steps=0, input_mask=0.2, random_state=0).fit(X)
    assert masked.model_.config.input_mask == 0.2
    # scoring the same rows twice gives the same numbers: no random mask at scoring time
    np.testing.assert_array_equal(masked.score_samples(X[:20]), masked.score_samples(X[:20]))


def test_the_loss_reconstructs_masked_features_from_the_others() -> None:
    """With every input feature masked the encoder sees zeros, so the loss cannot depend on
    x through the encoder: two inputs give the same q(z|x) (gradient-free check)."""
    torch.manual_seed(0)
    model = VAE(VAEConfig((3,), latent_dim=2, hidden_dims=(8,), input_mask=0.999999))
    x = torch.randn(5, 3)
    mu_masked, _ = model.encode(model.masked_input(x))
    mu_zero, _ = model.encode(torch.zeros_like(x))
    torch.testing.assert_close(mu_masked, mu_zero)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_bad_mask_is_refused_by_name(value: float) -> None:
    with pytest.raises(ValueError, match="input_mask"):
        VAEConfig((3,), input_mask=value)
    with pytest.raises(ValueError, match="input_mask"):
        VAEDetector(input_mask=value).fit(np.zeros((50, 3)))

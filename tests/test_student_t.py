"""The Student-t decoder likelihood (`student_t`): torch's density, normalisation, the
Gaussian limit and heavy tails."""

from __future__ import annotations

import math

import torch

from generative.vae import LIKELIHOODS


def test_matches_torch_student_t_with_learned_scale_and_nu() -> None:
    likelihood = LIKELIHOODS["student_t"](3, gaussian_std=0.7)
    with torch.no_grad():
        likelihood.raw_nu.copy_(torch.tensor([-1.0, 0.5, 3.0]))
    generator = torch.Generator().manual_seed(0)
    params = torch.randn(4, 1, 3, generator=generator)
    x = 5 * torch.randn(4, 3, generator=generator)
    expected = torch.distributions.StudentT(
        likelihood.nu(x), params[:, 0, :], torch.exp(likelihood.log_std(x))
    ).log_prob(x)
    torch.testing.assert_close(likelihood.log_prob(params, x), expected.sum(-1))
    assert likelihood.nu(x)[0].item() > 1.0  # nu = 1 + softplus(raw) stays above 1


def test_density_integrates_to_one_and_tends_to_the_gaussian() -> None:
    likelihood = LIKELIHOODS["student_t"](1)
    grid = torch.linspace(-400.0, 400.0, 400_001, dtype=torch.float64)
    params = torch.zeros(1, 1, 1, dtype=torch.float64)
    density = torch.exp(likelihood.log_prob(params, grid[:, None]))
    # nu = 4: the mass beyond |x| = 400 is below 1e-9, the trapezoid error far below 1e-6.
    assert abs(torch.trapezoid(density, grid).item() - 1.0) < 1e-6
    with torch.no_grad():
        likelihood.raw_nu.fill_(1e6)  # nu ~ 1e6: the Gaussian up to O(1/nu)
    x = torch.tensor([[0.0], [1.5], [-3.0]], dtype=torch.float64)
    gaussian = -0.5 * x[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(likelihood.log_prob(params, x), gaussian, atol=1e-4, rtol=0)


def test_a_far_value_costs_logarithmically_not_quadratically() -> None:
    """At 100 scale units the Gaussian charges 5000 nats; the t with nu = 4 charges
    (nu + 1) / 2 log(1 + 100^2 / nu) + its constant, about 20 nats."""
    likelihood = LIKELIHOODS["student_t"](1)
    params = torch.zeros(1, 1, 1)
    cost = -likelihood.log_prob(params, torch.tensor([[100.0]])).item()
    expected = 2.5 * math.log1p(100.0**2 / 4) - (
        math.lgamma(2.5) - math.lgamma(2.0) - 0.5 * math.log(4 * math.pi)
    )
    assert abs(cost - expected) < 1e-4 and cost < 25.0

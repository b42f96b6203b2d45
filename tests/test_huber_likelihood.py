"""The Huber decoder likelihood (`huber`): normalisation, the Gaussian bulk, the linear tail
and its bounded influence on the fit."""

from __future__ import annotations

import math

import torch

from generative.vae import LIKELIHOODS
from generative.vae.likelihoods import Huber


def huber_with(k: float) -> type[Huber]:
    return type("HuberK", (Huber,), {"k": k})


def test_density_integrates_to_one_for_several_k() -> None:
    grid = torch.linspace(-200.0, 200.0, 400_001, dtype=torch.float64)
    for k in (0.5, 1.0, 2.0, 4.0):
        likelihood = huber_with(k)(1, gaussian_std=0.7)
        params = torch.full((1, 1, 1), 0.3, dtype=torch.float64)
        density = torch.exp(likelihood.log_prob(params, grid[:, None]))
        # The tail beyond |x| = 200 holds exp(-k (200 / 0.7 - k)) of the mass: below 1e-60.
        assert abs(torch.trapezoid(density, grid).item() - 1.0) < 1e-6


def test_bulk_is_gaussian_and_tail_is_linear() -> None:
    """Within k scales the log-density differs from the Gaussian's by the constant log
    normaliser difference; beyond, each further scale unit costs exactly k nats."""
    likelihood = LIKELIHOODS["huber"](1, gaussian_std=2.0)
    params = torch.zeros(1, 1, 1, dtype=torch.float64)
    inside = torch.tensor([[0.0], [1.0], [-3.9]], dtype=torch.float64)  # |r| <= 1.95 < k = 2
    gaussian = -0.5 * (inside[:, 0] / 2.0) ** 2 - math.log(2.0) - 0.5 * math.log(2 * math.pi)
    shift = 0.5 * math.log(2 * math.pi) - Huber.log_normaliser()
    torch.testing.assert_close(likelihood.log_prob(params, inside), gaussian + shift)
    far = likelihood.log_prob(params, torch.tensor([[20.0], [40.0]], dtype=torch.float64))
    assert abs((far[0] - far[1]).item() - Huber.k * 20.0 / 2.0) < 1e-6


def test_one_far_row_pulls_the_location_by_a_bounded_amount() -> None:
    """The gradient of -log p with respect to mu is r / s in the bulk and at most k / s beyond,
    so a row 1000 scales out pulls no harder than one at k = 2 scales."""
    likelihood = LIKELIHOODS["huber"](1)
    grads = []
    for value in (1.5, 1000.0):
        params = torch.zeros(1, 1, 1, requires_grad=True)
        (-likelihood.log_prob(params, torch.tensor([[value]]))).sum().backward()
        grads.append(params.grad.item())
    assert abs(grads[0] - (-1.5)) < 1e-6 and abs(grads[1] - (-Huber.k)) < 1e-6

"""Columns that never varied in training: the learned-scale likelihoods score them by Laplace's
rule of succession instead of the decoder.

A column holding one value c in all n training rows is scored as the mixture
(1 - e) f(x; c, s) + e f(x; c, 1) with e = 1 / (n + 2), f the family's density and s = 1e-3 its
scale floor. Each test compares with that closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

from anomaly import VAEDetector
from generative.vae import LIKELIHOODS
from generative.vae.likelihoods import GaussianLearned, Huber

FLOOR = 1e-3
ROWS = 64
NEW = 1 / (ROWS + 2)  # the rule of succession's chance of a new value
LEARNED = ("gaussian_learned", "huber", "student_t", "gaussian_bernoulli")


def training_rows() -> torch.Tensor:
    """Column 0 varies, column 1 is always 2.5, column 2 is always 0."""
    generator = torch.Generator().manual_seed(0)
    varying = torch.randn(ROWS, 1, generator=generator, dtype=torch.float64)
    return torch.cat([varying, torch.full((ROWS, 1), 2.5), torch.zeros(ROWS, 1)], dim=1).float()


def huber_log_density(x: float, scale: float) -> float:
    """log of Huber's density (k = 2) around 0 at `scale`, by its definition."""
    r = abs(x) / scale
    cost = 0.5 * r * r if r <= Huber.k else Huber.k * (r - 0.5 * Huber.k)
    return -cost - math.log(scale) - Huber.log_normaliser()


@pytest.mark.parametrize("name", LEARNED)
def test_fit_columns_marks_the_constant_columns_their_values_and_rows(name):
    likelihood = LIKELIHOODS[name](3)
    likelihood.fit_columns(training_rows())
    assert likelihood.constant_mask.tolist() == [False, True, True]
    assert likelihood.constant_value.tolist() == [0.0, 2.5, 0.0]
    assert float(likelihood.constant_rows) == ROWS


def test_gaussian_constant_columns_are_the_succession_mixture_whatever_the_decoder():
    likelihood = GaussianLearned(3)
    likelihood.fit_columns(training_rows())
    decoder = torch.tensor([[[0.3, -7.0, 4.0]]], dtype=torch.float64)  # ignored in columns 1, 2
    x = torch.tensor([[0.1, 2.5, 0.7]], dtype=torch.float64)

    def mixture(value: float, centre: float) -> float:
        parts = [norm.logpdf(value, centre, FLOOR) + math.log1p(-NEW)]
        return logsumexp([*parts, norm.logpdf(value, centre, 1.0) + math.log(NEW)])

    expected = norm.logpdf(0.1, 0.3, 1.0) + mixture(2.5, 2.5) + mixture(0.7, 0.0)
    assert likelihood.log_prob(decoder, x).item() == pytest.approx(expected, rel=1e-6)
    assert likelihood.mean(decoder).tolist() == [[0.3, 2.5, 0.0]]


def test_huber_new_value_costs_log_n_plus_the_floor_gap():
    """The row at c against the row one unit away in a constant column: the gap is the closed
    form of the two mixtures, which is log(n + 2) + log(1 / s) + 0.5 (to within 1e-3 nats) up
    to Huber's normaliser, about 11 nats for n = 64."""
    likelihood = Huber(3)
    likelihood.fit_columns(training_rows())
    params = torch.zeros(1, 1, 3, dtype=torch.float64)
    seen = torch.tensor([[0.0, 2.5, 0.0]], dtype=torch.float64)
    new = torch.tensor([[0.0, 2.5, 1.0]], dtype=torch.float64)
    gap = (likelihood.log_prob(params, seen) - likelihood.log_prob(params, new)).item()

    def mixture(value: float) -> float:
        parts = [huber_log_density(value, FLOOR) + math.log1p(-NEW)]
        return logsumexp([*parts, huber_log_density(value, 1.0) + math.log(NEW)])

    assert gap == pytest.approx(mixture(0.0) - mixture(1.0), rel=1e-6)
    assert gap == pytest.approx(math.log(ROWS + 2) + math.log(1 / FLOOR) + 0.5, abs=0.02)


def test_marks_survive_a_state_dict_and_an_old_state_dict_loads_without_them():
    likelihood = Huber(3)
    likelihood.fit_columns(training_rows())
    copy = Huber(3)
    copy.load_state_dict(likelihood.state_dict())
    assert copy.constant_mask.tolist() == [False, True, True]
    assert float(copy.constant_rows) == ROWS
    old = {"raw_log_std": torch.full((3,), -0.5)}  # saved before constant columns existed
    older = Huber(3)
    older.load_state_dict(old)
    assert not older.constant_mask.any()
    params, x = torch.zeros(2, 1, 3), torch.randn(2, 3)
    plain = sum(huber_log_density(v, math.exp(-0.5)) for v in x[0].tolist())
    assert older.log_prob(params, x)[0].item() == pytest.approx(plain, rel=1e-5)


def test_detector_charges_a_new_value_in_a_constant_column_by_the_rule_of_succession():
    """A table whose third column is always 0: the same row with a 1 there scores lower by the
    mixture's gap for the VAE's n training rows (12.65 nats), up to how the encoder's q(z|x)
    moves with the changed input (0.04 nats here; without the mixture the gap is about 1
    nat, with the bare floor scale about 2000)."""
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=(300, 2)), np.zeros(300)])
    detector = VAEDetector(epochs=5, min_steps=0, random_state=0).fit(X)
    n = float(detector.model_.likelihood.constant_rows)
    assert n == 189  # 300 rows less 20 % calibration, 10 % validation, the 10 % refit drops
    seen, new = detector.score_samples(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))

    def mixture(value: float) -> float:
        share = 1 / (n + 2)
        parts = [huber_log_density(value, FLOOR) + math.log1p(-share)]
        return logsumexp([*parts, huber_log_density(value, 1.0) + math.log(share)])

    assert seen - new == pytest.approx(mixture(0.0) - mixture(1.0), abs=0.5)

"""Decoder likelihoods p(x|z) over flattened data.

A decoder emits `params` of shape (..., n_params, D); `log_prob(params, x)` broadcasts x of shape
(..., D) against it and sums over the D dimensions, returning log p(x|z) in nats per row.
Discrete likelihoods (`bernoulli`, `logistic256`, `categorical256`) give probabilities of the
observed symbols, so -log p(x) is a code length; `gaussian*` give densities.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

_LOG_2PI = math.log(2.0 * math.pi)


class Likelihood(nn.Module):
    """Base class: a family of distributions p(x|params) over D-dimensional rows."""

    n_params: ClassVar[int] = 1
    discrete: ClassVar[bool] = False

    def __init__(self, data_dim: int, *, gaussian_std: float = 1.0) -> None:
        super().__init__()
        self.data_dim = data_dim

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|params) summed over the data dimensions."""
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|params], shape (..., D)."""
        return params[..., 0, :]

    def fit_columns(self, x: torch.Tensor) -> int:
        """Set per-column types from training rows `x`; a no-op returning 0 for likelihoods
        that treat every column alike."""
        return 0


class GaussianFixed(Likelihood):
    """N(mu, s^2 I) with a fixed standard deviation s = `gaussian_std`."""

    def __init__(self, data_dim: int, *, gaussian_std: float = 1.0) -> None:
        super().__init__(data_dim)
        if gaussian_std <= 0:
            raise ValueError(f"gaussian_std must be positive, got {gaussian_std}")
        self.initial_log_std = math.log(gaussian_std)

    def log_std(self, like: torch.Tensor) -> torch.Tensor:
        """Per-feature log standard deviation (D,), in the dtype and device of `like`."""
        return torch.full(
            (self.data_dim,), self.initial_log_std, dtype=like.dtype, device=like.device
        )

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_std = self.log_std(params)
        scaled = (x - params[..., 0, :]) * torch.exp(-log_std)
        constant = log_std.sum() + 0.5 * self.data_dim * _LOG_2PI
        return -0.5 * scaled.square().sum(dim=-1) - constant


class GaussianLearned(GaussianFixed):
    """N(mu, diag(s^2)) with one learned standard deviation per feature, floored at 1e-3."""

    min_log_std: ClassVar[float] = math.log(1e-3)

    def __init__(self, data_dim: int, *, gaussian_std: float = 1.0) -> None:
        super().__init__(data_dim, gaussian_std=gaussian_std)
        self.raw_log_std = nn.Parameter(torch.full((data_dim,), self.initial_log_std))

    def log_std(self, like: torch.Tensor) -> torch.Tensor:
        return self.raw_log_std.clamp(min=self.min_log_std).to(like.dtype)


class StudentT(GaussianLearned):
    """Student-t with location mu, one learned scale per feature (floored like the Gaussian's)
    and one learned degrees of freedom nu > 1 per feature (initially 4).

    Its log-density falls off like -(nu + 1) log |x - mu| instead of the Gaussian's -(x - mu)^2,
    so a value far in one feature's tail costs a few nats, not thousands: rows are then unusual
    for what their features say together, not for one heavy-tailed feature. As nu grows it
    tends to the Gaussian with the same scale.
    """

    initial_nu: ClassVar[float] = 4.0

    def __init__(self, data_dim: int, *, gaussian_std: float = 1.0) -> None:
        super().__init__(data_dim, gaussian_std=gaussian_std)
        # nu = 1 + softplus(raw_nu): starts at initial_nu.
        start = math.log(math.expm1(self.initial_nu - 1.0))
        self.raw_nu = nn.Parameter(torch.full((data_dim,), start))

    def nu(self, like: torch.Tensor) -> torch.Tensor:
        """Per-feature degrees of freedom (D,), in the dtype and device of `like`."""
        return (1.0 + F.softplus(self.raw_nu)).to(like.dtype)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_std, nu = self.log_std(params), self.nu(params)
        scaled = (x - params[..., 0, :]) * torch.exp(-log_std)
        normaliser = (
            torch.lgamma((nu + 1.0) / 2.0)
            - torch.lgamma(nu / 2.0)
            - 0.5 * torch.log(nu * math.pi)
            - log_std
        )
        tail = 0.5 * (nu + 1.0) * torch.log1p(scaled.square() / nu)
        return (normaliser - tail).sum(dim=-1)


class Huber(GaussianLearned):
    """Huber's density per feature: Gaussian within `k` scales of mu, Laplace-like beyond.

    -log p = r^2 / 2 for |r| <= k and k |r| - k^2 / 2 beyond (r = (x - mu) / s, one learned s
    per feature, floored like the Gaussian's), plus log s and the closed-form normaliser
    log(sqrt(2 pi) (2 Phi(k) - 1) + 2 exp(-k^2 / 2) / k). The bulk is scored like the
    Gaussian's; a value far out in one feature costs linearly, not quadratically, more.
    """

    k: ClassVar[float] = 2.0

    @classmethod
    def log_normaliser(cls) -> float:
        """log of the integral of exp(-rho_k(r)) over r."""
        k = cls.k
        inner = math.sqrt(2.0 * math.pi) * math.erf(k / math.sqrt(2.0))
        return math.log(inner + 2.0 * math.exp(-0.5 * k * k) / k)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_std = self.log_std(params)
        distance = ((x - params[..., 0, :]) * torch.exp(-log_std)).abs()
        cost = torch.where(
            distance <= self.k, 0.5 * distance.square(), self.k * (distance - 0.5 * self.k)
        )
        constant = log_std.sum() + self.data_dim * self.log_normaliser()
        return -cost.sum(dim=-1) - constant


class Bernoulli(Likelihood):
    """Independent Bernoulli pixels with logits; for binarised data."""

    discrete = True

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits = params[..., 0, :]
        return -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum(dim=-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params[..., 0, :])


class DiscretizedLogistic(Likelihood):
    """8-bit values k/255 with probability mass of a logistic on bins of width 2/255 in [-1, 1].

    The edge bins take the tails, so the 256 masses sum to one (PixelCNN++, Salimans et al. 2017).
    """

    n_params = 2
    discrete = True
    half_bin: ClassVar[float] = 1.0 / 255.0

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        centred = (2.0 * x - 1.0) - params[..., 0, :]
        log_scale = params[..., 1, :].clamp(min=-7.0)
        inv_scale = torch.exp(-log_scale)
        upper = inv_scale * (centred + self.half_bin)
        lower = inv_scale * (centred - self.half_bin)
        log_cdf_upper = upper - F.softplus(upper)
        log_sf_lower = -F.softplus(lower)
        mass = torch.sigmoid(upper) - torch.sigmoid(lower)
        middle = inv_scale * centred
        log_density_mid = middle - log_scale - 2.0 * F.softplus(middle) + math.log(self.half_bin)
        log_mass = torch.where(
            mass > 1e-5, torch.log(mass.clamp(min=1e-12)), log_density_mid + math.log(2.0)
        )
        x_full = x.expand_as(centred)
        log_mass = torch.where(x_full < 0.5 / 255.0, log_cdf_upper, log_mass)
        log_mass = torch.where(x_full > 254.5 / 255.0, log_sf_lower, log_mass)
        return log_mass.sum(dim=-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return ((params[..., 0, :] + 1.0) / 2.0).clamp(0.0, 1.0)


class Categorical256(Likelihood):
    """A 256-way categorical per dimension over the 8-bit value round(255 x)."""

    n_params = 256
    discrete = True

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        symbols = torch.round(x * 255.0).long().clamp(0, 255)
        log_probs = torch.log_softmax(params, dim=-2)
        index = symbols.expand(*log_probs.shape[:-2], symbols.shape[-1]).unsqueeze(-2)
        return log_probs.gather(-2, index).squeeze(-2).sum(dim=-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        levels = torch.arange(256, device=params.device, dtype=params.dtype) / 255.0
        return (torch.softmax(params, dim=-2) * levels[:, None]).sum(dim=-2)


class GaussianBernoulli(GaussianLearned):
    """Mixed rows: a Bernoulli on each two-valued column, `GaussianLearned` on the others.

    A two-valued column (say a 0/1 flag, standardised to two numbers lo < hi) gets
    p(x = hi) = sigmoid(logit), so a rare flag costs a bounded -log p nats instead of the
    unbounded squared error of a Gaussian whose variance shrank to the flag's rarity. The
    column types are buffers set by `fit_columns` from the training rows (saved with the
    state_dict); before that every column is Gaussian. log p(x) is then a density in the
    Gaussian columns times a probability mass in the flags.
    """

    def __init__(self, data_dim: int, *, gaussian_std: float = 1.0) -> None:
        super().__init__(data_dim, gaussian_std=gaussian_std)
        self.register_buffer("binary_mask", torch.zeros(data_dim, dtype=torch.bool))
        self.register_buffer("binary_low", torch.zeros(data_dim))
        self.register_buffer("binary_high", torch.ones(data_dim))

    @torch.no_grad()
    def fit_columns(self, x: torch.Tensor) -> int:
        """Mark the columns of `x` (rows, D) that take exactly two values; returns how many."""
        x = x.flatten(1).to(self.binary_low.device, torch.float32)
        low, high = x.min(dim=0).values, x.max(dim=0).values
        two_valued = (low < high) & ((x == low) | (x == high)).all(dim=0)
        self.binary_mask.copy_(two_valued)
        self.binary_low.copy_(torch.where(two_valued, low, torch.zeros_like(low)))
        self.binary_high.copy_(torch.where(two_valued, high, torch.ones_like(high)))
        return int(two_valued.sum())

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        location = params[..., 0, :]
        log_std = self.log_std(params)
        scaled = (x - location) * torch.exp(-log_std)
        gaussian = -0.5 * scaled.square() - log_std - 0.5 * _LOG_2PI
        is_high = (x > 0.5 * (self.binary_low + self.binary_high)).to(location.dtype)
        bernoulli = -F.binary_cross_entropy_with_logits(
            location, is_high.expand_as(location), reduction="none"
        )
        return torch.where(self.binary_mask, bernoulli, gaussian).sum(dim=-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        location = params[..., 0, :]
        flag_mean = self.binary_low + (self.binary_high - self.binary_low) * torch.sigmoid(location)
        return torch.where(self.binary_mask, flag_mean, location)


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "gaussian": GaussianFixed,
    "gaussian_learned": GaussianLearned,
    "gaussian_bernoulli": GaussianBernoulli,
    "student_t": StudentT,
    "huber": Huber,
    "bernoulli": Bernoulli,
    "logistic256": DiscretizedLogistic,
    "categorical256": Categorical256,
}


def make_likelihood(name: str, data_dim: int, *, gaussian_std: float = 1.0) -> Likelihood:
    """Build the likelihood registered under `name`."""
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name](data_dim, gaussian_std=gaussian_std)

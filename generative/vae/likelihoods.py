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

    def columns(
        self, location: torch.Tensor, log_std: torch.Tensor, x: torch.Tensor, params: torch.Tensor
    ) -> torch.Tensor:
        """log p per feature, shape (..., D), at the given location and log-scale (`params`
        for what else a family reads from the decoder)."""
        scaled = (x - location) * torch.exp(-log_std)
        return -0.5 * scaled.square() - log_std - 0.5 * _LOG_2PI

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.columns(params[..., 0, :], self.log_std(params), x, params).sum(dim=-1)


class GaussianLearned(GaussianFixed):
    """N(mu, diag(s^2)) with one learned standard deviation per feature, floored at 1e-3.

    A column that holds one value c in all n training rows (`fit_columns` finds them; buffers
    saved with the state_dict) is not left to the decoder. Laplace's rule of succession gives
    the next row a new value there with probability 1 / (n + 2): the column is scored by the
    family's density around c at the floor scale (weight 1 - 1 / (n + 2)) mixed with the
    family at scale 1 around c (weight 1 / (n + 2); scale 1 is the column's own units, as a
    constant column is not scaled). A value never seen there then costs about log(n + 2) + 7
    nats more than c, growing with how many rows showed only c. Without this the learned scale
    stays near its start (Adam moves it about the learning rate per step, so 0.3 in the 300
    steps of a small table) and a new value costs what one ordinary deviation costs.
    """

    min_log_std: ClassVar[float] = math.log(1e-3)

    def __init__(self, data_dim: int, *, gaussian_std: float = 1.0) -> None:
        super().__init__(data_dim, gaussian_std=gaussian_std)
        self.raw_log_std = nn.Parameter(torch.full((data_dim,), self.initial_log_std))
        self.register_buffer("constant_mask", torch.zeros(data_dim, dtype=torch.bool))
        self.register_buffer("constant_value", torch.zeros(data_dim))
        self.register_buffer("constant_rows", torch.zeros(()))

    @torch.no_grad()
    def fit_columns(self, x: torch.Tensor) -> int:
        """Mark the columns of `x` (rows, D) that hold one value in every row; returns how many."""
        x = x.flatten(1).to(self.constant_value.device, torch.float32)
        low, high = x.min(dim=0).values, x.max(dim=0).values
        constant = low == high
        self.constant_mask.copy_(constant)
        self.constant_value.copy_(torch.where(constant, low, torch.zeros_like(low)))
        self.constant_rows.fill_(len(x))
        return int(constant.sum())

    def log_std(self, like: torch.Tensor) -> torch.Tensor:
        return self.raw_log_std.clamp(min=self.min_log_std).to(like.dtype)

    def location(self, params: torch.Tensor) -> torch.Tensor:
        """The decoder's location, and c in the constant columns."""
        value = self.constant_value.to(params.dtype)
        return torch.where(self.constant_mask, value, params[..., 0, :])

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.location(params)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        per_column = self.columns(params[..., 0, :], self.log_std(params), x, params)
        if self.constant_mask.any():
            constant = self.constant_columns(x, params)
            per_column = torch.where(self.constant_mask, constant, per_column)
        return per_column.sum(dim=-1)

    def constant_columns(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p per feature under the rule-of-succession mixture (read in the constant
        columns only)."""
        new = 1.0 / (float(self.constant_rows) + 2.0)
        value = self.constant_value.to(params.dtype)
        floor = torch.full_like(value, self.min_log_std)
        seen = self.columns(value, floor, x, params) + math.log1p(-new)
        unseen = self.columns(value, torch.zeros_like(value), x, params) + math.log(new)
        return torch.logaddexp(seen, unseen)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        """A state_dict saved before the constant columns existed loads with none marked."""
        for name in ("constant_mask", "constant_value", "constant_rows"):
            state_dict.setdefault(prefix + name, torch.zeros_like(getattr(self, name)))
        super()._load_from_state_dict(state_dict, prefix, *args)


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

    def columns(
        self, location: torch.Tensor, log_std: torch.Tensor, x: torch.Tensor, params: torch.Tensor
    ) -> torch.Tensor:
        nu = self.nu(params)
        scaled = (x - location) * torch.exp(-log_std)
        normaliser = (
            torch.lgamma((nu + 1.0) / 2.0)
            - torch.lgamma(nu / 2.0)
            - 0.5 * torch.log(nu * math.pi)
            - log_std
        )
        return normaliser - 0.5 * (nu + 1.0) * torch.log1p(scaled.square() / nu)


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

    def columns(
        self, location: torch.Tensor, log_std: torch.Tensor, x: torch.Tensor, params: torch.Tensor
    ) -> torch.Tensor:
        distance = ((x - location) * torch.exp(-log_std)).abs()
        cost = torch.where(
            distance <= self.k, 0.5 * distance.square(), self.k * (distance - 0.5 * self.k)
        )
        return -cost - log_std - self.log_normaliser()


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
        """Mark the columns of `x` (rows, D) that take exactly two values (and, as the Gaussian
        does, the constant ones); returns how many take two values."""
        super().fit_columns(x)
        x = x.flatten(1).to(self.binary_low.device, torch.float32)
        low, high = x.min(dim=0).values, x.max(dim=0).values
        two_valued = (low < high) & ((x == low) | (x == high)).all(dim=0)
        self.binary_mask.copy_(two_valued)
        self.binary_low.copy_(torch.where(two_valued, low, torch.zeros_like(low)))
        self.binary_high.copy_(torch.where(two_valued, high, torch.ones_like(high)))
        return int(two_valued.sum())

    def columns(
        self, location: torch.Tensor, log_std: torch.Tensor, x: torch.Tensor, params: torch.Tensor
    ) -> torch.Tensor:
        gaussian = super().columns(location, log_std, x, params)
        logits = params[..., 0, :]
        is_high = (x > 0.5 * (self.binary_low + self.binary_high)).to(logits.dtype)
        bernoulli = -F.binary_cross_entropy_with_logits(
            logits, is_high.expand_as(logits), reduction="none"
        )
        return torch.where(self.binary_mask, bernoulli, gaussian)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        location = self.location(params)
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

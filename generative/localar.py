"""A local autoregressive image model: exact log p(x) from each pixel's causal neighbourhood.

p(x) = prod over pixels (raster order) of p(x_ij | the pixels above and to the left within
`radius`), computed in one pass by masked convolutions (PixelCNN, van den Oord et al. 2016)
whose receptive field is capped. It sees local texture and smoothness but no global shape,
which is what a background model for a likelihood ratio should capture (Ren et al. 2019;
Schirrmeister et al. 2020). Channels of one pixel are modelled independently given the
context. Training can perturb inputs (`mutation_rate`, Ren et al.'s background recipe):
each 8-bit value is replaced by a uniform random level with that probability; scoring never
perturbs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from generative.batching import pad_rows
from generative.configs import JsonConfig
from generative.vae.likelihoods import make_likelihood


@dataclass(frozen=True)
class LocalARConfig(JsonConfig):
    """input_shape (C, H, W); the first masked convolution spans `radius` pixels on each side
    (it excludes the centre), `n_layers` further 3x3 masked layers each widen the context by
    one; `likelihood` is a discrete key of `generative.vae.likelihoods.LIKELIHOODS`."""

    input_shape: tuple[int, ...]
    radius: int = 2
    channels: int = 32
    n_layers: int = 1
    likelihood: str = "categorical256"
    mutation_rate: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"LocalAR needs input_shape (C, H, W), got {self.input_shape}")
        if self.radius < 1 or self.channels < 1 or self.n_layers < 0:
            raise ValueError("radius and channels must be >= 1 and n_layers >= 0")
        if not 0.0 <= self.mutation_rate < 1.0:
            raise ValueError(f"mutation_rate must be in [0, 1), got {self.mutation_rate}")

    @property
    def data_dim(self) -> int:
        """Number of scalar dimensions of one input."""
        return math.prod(self.input_shape)


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only pixels before the centre in raster order; `include_centre`
    adds the centre itself (PixelCNN's mask B, for layers after the first)."""

    def __init__(self, n_in: int, n_out: int, kernel: int, *, include_centre: bool) -> None:
        super().__init__(n_in, n_out, kernel, padding=kernel // 2)
        mask = torch.zeros(kernel, kernel)
        centre = kernel // 2
        mask[:centre] = 1.0
        mask[centre, : centre + int(include_centre)] = 1.0
        self.register_buffer("mask", mask.expand_as(self.weight).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class LocalAR(nn.Module):
    """Exact log p(x) (nats per row) for 8-bit images given as values k/255 in [0, 1]."""

    family = "local_ar"

    def __init__(self, config: LocalARConfig) -> None:
        super().__init__()
        self.config = config
        self.likelihood = make_likelihood(config.likelihood, config.data_dim)
        if not self.likelihood.discrete:
            raise ValueError(f"LocalAR needs a discrete likelihood, got {config.likelihood!r}")
        c = config.input_shape[0]
        layers: list[nn.Module] = [
            MaskedConv2d(c, config.channels, 2 * config.radius + 1, include_centre=False)
        ]
        for _ in range(config.n_layers):
            layers += [
                nn.ReLU(),
                MaskedConv2d(config.channels, config.channels, 3, include_centre=True),
            ]
        layers += [nn.ReLU(), nn.Conv2d(config.channels, self.likelihood.n_params * c, 1)]
        self.net = nn.Sequential(*layers)

    def params(self, x: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters (N, n_params, C*H*W) of every pixel given its context."""
        images = x.view(len(x), *self.config.input_shape)
        out = self.net(2.0 * images - 1.0)
        return out.view(len(x), self.likelihood.n_params, -1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) per row, in nats."""
        return self.likelihood.log_prob(self.params(x).float(), x.flatten(1).float())

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        """Replace each value by a uniform random 8-bit level with probability `mutation_rate`."""
        rate = self.config.mutation_rate
        if rate == 0.0:
            return x
        levels = torch.randint_like(x, 256) / 255.0
        return torch.where(torch.rand_like(x) < rate, levels, x)

    def training_loss(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean negative log-likelihood of the (perturbed) batch."""
        log_px = self.log_prob(self.perturb(x))
        return -log_px.mean(), {"log_px": log_px.mean().item()}

    def validation_score(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per clean row (higher is better)."""
        return self.log_prob(x)

    @torch.no_grad()
    def score(self, x: torch.Tensor, max_rows: int = 256) -> torch.Tensor:
        """log p(x) per row for any number of rows, on the model's device, in chunks padded to
        `max_rows` rows: a row scores bit-identically in any batch (`generative.batching`)."""
        device = next(self.parameters()).device
        self.eval()
        scores = []
        for chunk in x.split(max_rows):
            (padded,) = pad_rows(max_rows, chunk.to(device))
            scores.append(self.log_prob(padded)[: chunk.shape[0]])
        return torch.cat(scores)

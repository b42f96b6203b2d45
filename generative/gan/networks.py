"""Generators and discriminators: MLPs for tables, DCGAN convolutional nets for images.

Class-conditional nets take labels: G concatenates a one-hot label to z; D adds a projection
term <embed(y), h(x)> to its output (Miyato & Koyama 2018), so one D serves every class.
Generators end in tanh for images (data scaled to [-1, 1]) and are linear for tables.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class NetworkSpec(Protocol):
    """What the nets read of a configuration (`generative.gan.config.GANConfig` has it)."""

    data_shape: tuple[int, ...]
    latent_dim: int
    hidden_dims: tuple[int, ...]
    base_channels: int
    num_classes: int
    architecture: str

    @property
    def data_dim(self) -> int: ...

    @property
    def is_image(self) -> bool: ...


def dcgan_start_size(size: int) -> int:
    """The side of DCGAN's first feature map: `size` halved until it is 4 or 7."""
    while size > 7 and size % 2 == 0:
        size //= 2
    return size


def check_dcgan_shape(shape: tuple[int, ...]) -> None:
    """Refuse image shapes the DCGAN nets cannot produce (square, 4 or 7 times 2^k)."""
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"the dcgan architecture needs square (C, H, W) images, got {shape}")
    if dcgan_start_size(shape[1]) not in (4, 7) or shape[1] < 8:
        raise ValueError(
            f"the dcgan architecture needs a side of 4 or 7 times a power of two (>= 8), "
            f"got {shape[1]}"
        )


def _one_hot(labels: torch.Tensor | None, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    if num_classes == 0:
        return like.new_zeros(like.shape[0], 0)
    if labels is None:
        raise ValueError(f"this GAN is class-conditional ({num_classes} classes): pass labels")
    return F.one_hot(labels.long(), num_classes).to(like.dtype)


class Projection(nn.Module):
    """D's output: a linear read-out of the features plus, when conditional, <embed(y), h>."""

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None
        if self.embed is not None:
            nn.init.zeros_(self.embed.weight)  # starts as the unconditional D

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        out = self.linear(h).squeeze(1)
        if self.embed is None:
            return out
        if labels is None:
            raise ValueError(
                f"this GAN is class-conditional ({self.num_classes} classes): pass labels"
            )
        return out + (self.embed(labels.long()) * h).sum(dim=1)


class MLPGenerator(nn.Module):
    """z (+ one-hot y) -> hidden layers (ReLU) -> data."""

    def __init__(self, config: NetworkSpec) -> None:
        super().__init__()
        self.config = config
        widths = (config.latent_dim + config.num_classes, *config.hidden_dims)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], config.data_dim))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.cat([z, _one_hot(labels, self.config.num_classes, z)], dim=1)
        out = self.body(h).view(-1, *self.config.data_shape)
        return torch.tanh(out) if self.config.is_image else out


class MLPDiscriminator(nn.Module):
    """x -> hidden layers (LeakyReLU 0.2) -> one value (logit or critic)."""

    def __init__(self, config: NetworkSpec) -> None:
        super().__init__()
        widths = (config.data_dim, *reversed(config.hidden_dims))
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.head = Projection(widths[-1], config.num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.body(x.flatten(1)), labels)


def _upsamplings(config: NetworkSpec) -> int:
    side = config.data_shape[1]
    return int(round(math.log2(side / dcgan_start_size(side))))


class DCGANGenerator(nn.Module):
    """z (+ one-hot y) as a 1x1 map -> transposed conv to s x s (s = 4 or 7) -> stride-2
    transposed convs doubling the side and halving the channels -> tanh image. Batch norm and
    ReLU after every layer but the last."""

    def __init__(self, config: NetworkSpec) -> None:
        super().__init__()
        self.config = config
        n_up, base = _upsamplings(config), config.base_channels
        channels = [base * 2 ** (n_up - 1 - i) for i in range(n_up)]  # widest first
        start = dcgan_start_size(config.data_shape[1])
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(config.latent_dim + config.num_classes, channels[0], start, 1, 0),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(),
        ]
        for fan_in, fan_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.ConvTranspose2d(fan_in, fan_out, 4, 2, 1), nn.BatchNorm2d(fan_out)]
            layers.append(nn.ReLU())
        layers.append(nn.ConvTranspose2d(channels[-1], config.data_shape[0], 4, 2, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.cat([z, _one_hot(labels, self.config.num_classes, z)], dim=1)
        return torch.tanh(self.body(h[:, :, None, None]))


class DCGANDiscriminator(nn.Module):
    """Image -> stride-2 convs (LeakyReLU 0.2; a norm on all but the first) down to s x s ->
    one linear read-out of the flattened map (plus the class projection). The norm is batch
    norm, or a per-sample layer norm when the loss has a gradient penalty."""

    def __init__(self, config: NetworkSpec, *, per_sample_norm: bool) -> None:
        super().__init__()
        n_down, base = _upsamplings(config), config.base_channels
        channels = [config.data_shape[0]] + [base * 2**i for i in range(n_down)]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
            layers.append(nn.Conv2d(fan_in, fan_out, 4, 2, 1))
            if index > 0:
                norm = nn.GroupNorm(1, fan_out) if per_sample_norm else nn.BatchNorm2d(fan_out)
                layers.append(norm)
            layers.append(nn.LeakyReLU(0.2))
        self.body = nn.Sequential(*layers)
        side = dcgan_start_size(config.data_shape[1])
        self.head = Projection(channels[-1] * side * side, config.num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.body(x).flatten(1), labels)


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


def apply_spectral_norm(net: nn.Module) -> None:
    """Spectrally normalise the weight of every convolution and linear map of `net`."""
    for module in list(net.modules()):
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.utils.parametrizations.spectral_norm(module)


def _mlp_pair(config: NetworkSpec, per_sample_norm: bool) -> tuple[nn.Module, nn.Module]:
    return MLPGenerator(config), MLPDiscriminator(config)


def _dcgan_pair(config: NetworkSpec, per_sample_norm: bool) -> tuple[nn.Module, nn.Module]:
    pair = DCGANGenerator(config), DCGANDiscriminator(config, per_sample_norm=per_sample_norm)
    for net in pair:
        dcgan_init(net)
    return pair


# architecture name -> builder of (G, D)
ARCHITECTURES = {"mlp": _mlp_pair, "dcgan": _dcgan_pair}


def build_networks(config: NetworkSpec, *, per_sample_norm: bool) -> tuple[nn.Module, nn.Module]:
    """(G, D) for the configured architecture."""
    return ARCHITECTURES[config.architecture](config, per_sample_norm)

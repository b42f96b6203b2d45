"""Encoder and decoder backbones: an MLP for any input, a small conv net for images."""

from __future__ import annotations

import math

import torch
from torch import nn

from generative.vae.config import VAEConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "linear": nn.Identity,  # linear maps throughout: linear-Gaussian models with closed forms
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(widths: list[int], activation: str) -> nn.Sequential:
    """Linear layers through `widths` with the activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(_activation(activation))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x (N, *input_shape) -> (mu, logvar), each (N, latent_dim)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths = [config.data_dim, *config.hidden_dims, 2 * config.latent_dim]
        self.net = mlp(widths, config.activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x.flatten(1)).chunk(2, dim=-1)
        return mu, logvar


class MLPDecoder(nn.Module):
    """z (N, latent_dim) -> likelihood params (N, n_params, D)."""

    def __init__(self, config: VAEConfig, n_params: int) -> None:
        super().__init__()
        widths = [config.latent_dim, *reversed(config.hidden_dims), n_params * config.data_dim]
        self.net = mlp(widths, config.activation)
        self.n_params = n_params

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], self.n_params, -1)


def _hidden_width(config: VAEConfig) -> int:
    return config.hidden_dims[0] if config.hidden_dims else 256


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions, then a dense layer to (mu, logvar)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        channels = [config.input_shape[0], *config.conv_channels]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [
                nn.Conv2d(n_in, n_out, 4, stride=2, padding=1),
                _activation(config.activation),
            ]
        self.features = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            n_features = self.features(torch.zeros(1, *config.input_shape)).shape[1]
        width = _hidden_width(config)
        self.head = mlp([n_features, width, 2 * config.latent_dim], config.activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.features(x)).chunk(2, dim=-1)
        return mu, logvar


class ConvDecoder(nn.Module):
    """Dense layers to a (channels, ceil(H/2^L), ceil(W/2^L)) map, transposed convs up, crop."""

    def __init__(self, config: VAEConfig, n_params: int) -> None:
        super().__init__()
        c, h, w = config.input_shape
        depth = len(config.conv_channels)
        self.start = (config.conv_channels[-1], math.ceil(h / 2**depth), math.ceil(w / 2**depth))
        width = _hidden_width(config)
        self.head = mlp([config.latent_dim, width, math.prod(self.start)], config.activation)
        channels = [*reversed(config.conv_channels), n_params * c]
        layers: list[nn.Module] = [_activation(config.activation)]
        for i, (n_in, n_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
            layers.append(nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1))
            if i < depth - 1:
                layers.append(_activation(config.activation))
        self.body = nn.Sequential(*layers)
        self.shape = (n_params, c, h, w)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n_params, c, h, w = self.shape
        maps = self.body(self.head(z).view(z.shape[0], *self.start))[..., :h, :w]
        return maps.reshape(z.shape[0], n_params, c * h * w)


BACKBONES: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "mlp": (MLPEncoder, MLPDecoder),
    "conv": (ConvEncoder, ConvDecoder),
}

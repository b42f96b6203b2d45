"""CycleGAN's networks (Zhu et al. 2017, appendix 7.2), scaled by `CycleGANConfig`.

Generator (Johnson et al. 2016): c7s1-k, d2k, d4k, R4k x `residual_blocks`, u2k, uk, c7s1-C
with tanh. c7s1-k is a reflection-padded 7x7 convolution with k filters, stride 1; dk a 3x3
stride-2 convolution; Rk a residual block of two reflection-padded 3x3 convolutions; uk a 3x3
stride-1/2 (transposed) convolution. Every layer but the last has instance norm and ReLU.

Discriminator: a PatchGAN: 4x4 convolutions C64-C128-... (stride 2, LeakyReLU 0.2, instance
norm on all but the first), one stride-1 4x4 convolution, then a 4x4 convolution to one value
per patch; the value map is what the adversarial loss averages over.
Weights start from N(0, 0.02), as in the paper's code.
"""

from __future__ import annotations

import torch
from torch import nn

from generative.cyclegan.config import CycleGANConfig


def _norm(channels: int) -> nn.Module:
    """Instance norm without affine parameters (the paper code's default)."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResidualBlock(nn.Module):
    """x + [pad, conv3x3, IN, ReLU, pad, conv3x3, IN](x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Image (C, H, W) in [-1, 1] -> image of the same shape in [-1, 1]."""

    def __init__(self, config: CycleGANConfig) -> None:
        super().__init__()
        k, c = config.base_channels, config.channels
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(c, k, 7), _norm(k), nn.ReLU(),
            nn.Conv2d(k, 2 * k, 3, stride=2, padding=1), _norm(2 * k), nn.ReLU(),
            nn.Conv2d(2 * k, 4 * k, 3, stride=2, padding=1), _norm(4 * k), nn.ReLU(),
        ]  # fmt: skip
        layers += [ResidualBlock(4 * k) for _ in range(config.residual_blocks)]
        layers += [
            nn.ConvTranspose2d(4 * k, 2 * k, 3, stride=2, padding=1, output_padding=1),
            _norm(2 * k), nn.ReLU(),
            nn.ConvTranspose2d(2 * k, k, 3, stride=2, padding=1, output_padding=1),
            _norm(k), nn.ReLU(),
            nn.ReflectionPad2d(3), nn.Conv2d(k, c, 7), nn.Tanh(),
        ]  # fmt: skip
        self.body = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PatchDiscriminator(nn.Module):
    """Image (C, H, W) in [-1, 1] -> (N, 1, h, w) map of per-patch real/fake values."""

    def __init__(self, config: CycleGANConfig) -> None:
        super().__init__()
        k = config.base_channels
        widths = [config.channels] + [k * 2**i for i in range(config.discriminator_layers)]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Conv2d(fan_in, fan_out, 4, stride=2, padding=1))
            if index > 0:
                layers.append(_norm(fan_out))
            layers.append(nn.LeakyReLU(0.2))
        last = widths[-1]
        layers += [
            nn.Conv2d(last, 2 * last, 4, stride=1, padding=1), _norm(2 * last), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * last, 1, 4, stride=1, padding=1),
        ]  # fmt: skip
        self.body = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@torch.no_grad()
def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Convolution weights ~ N(0, std), biases 0 (the paper code's "normal" init)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

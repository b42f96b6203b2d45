"""The Progressive GAN's building blocks (Karras et al. 2018), shared with StyleGAN.

- Equalised learning rate: weights are stored as N(0, 1) and multiplied at run time by He's
  constant sqrt(2 / fan_in) (times an optional learning-rate multiplier), so that Adam's
  scale-free updates move every layer's effective weights at the same relative speed.
- Pixelwise feature normalisation: each pixel's feature vector is divided by its root mean
  square over the channels.
- Minibatch standard deviation: the standard deviation of every feature over the batch,
  averaged to one number (per group), appended to D's last block as one extra feature map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from generative.distributed import active_batch

LEAKY_SLOPE = 0.2


class EqualizedLinear(nn.Module):
    """y = x (c W)^T + b with W ~ N(0, 1 / lr_multiplier^2) stored and c = gain / sqrt(fan_in)
    times lr_multiplier applied at run time (the bias is scaled by lr_multiplier)."""

    def __init__(
        self,
        fan_in: int,
        fan_out: int,
        *,
        gain: float = math.sqrt(2.0),
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((fan_out,), bias_init / lr_multiplier))
        self.weight_scale = gain / math.sqrt(fan_in) * lr_multiplier
        self.lr_multiplier = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.weight_scale, self.bias * self.lr_multiplier)


class EqualizedConv2d(nn.Module):
    """A stride-1 'same' convolution with the equalised learning rate (see EqualizedLinear)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, gain: float = math.sqrt(2.0)
    ) -> None:
        super().__init__()
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.randn(shape))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.weight_scale, self.bias, padding=self.padding)


class PixelNorm(nn.Module):
    """x / sqrt(mean over channels of x^2 + eps), at every pixel (or every row of a vector)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class MinibatchStdDev(nn.Module):
    """Appends one feature map: the standard deviation of each feature and pixel over a group
    of `group_size` samples (the whole batch when smaller), averaged over features and pixels,
    so D can see how varied a batch is (a collapsed G gives a small value).

    Inside a `generative.distributed.global_batch` block the groups are those of the global
    batch: every rank's features are gathered (with their gradients) and this rank keeps the
    statistics of its rows, as one process with the whole batch would compute them."""

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        self.group_size = group_size
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = active_batch()
        stat = self.statistics(x if batch is None else batch.gather(x))
        stat = stat if batch is None else batch.shard(stat)
        return torch.cat([x, stat.to(x.dtype)], dim=1)

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        """The extra feature map (N, 1, H, W) of a batch x (N, C, H, W): its group's value."""
        n, c, h, w = x.shape
        group = min(self.group_size, n)
        if n % group:
            group = n  # a batch the group size does not divide is one group
        grouped = x.reshape(group, n // group, c, h, w)  # sample i is in group i % (n // group)
        std = (grouped.var(dim=0, unbiased=False) + self.eps).sqrt()  # (n/g, c, h, w)
        stat = std.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)  # one number per group
        return stat.repeat(group, 1, h, w)


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour doubling of the side (every pixel becomes a 2 x 2 block)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def downsample(x: torch.Tensor) -> torch.Tensor:
    """2 x 2 average pooling (the exact adjoint-average of `upsample`)."""
    return F.avg_pool2d(x, 2)


def leaky(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with slope 0.2 (both papers' activation)."""
    return F.leaky_relu(x, LEAKY_SLOPE)


def fade(old: torch.Tensor, new: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha) old + alpha new: the fade-in of a new block; alpha = 1 skips `old`."""
    if alpha >= 1.0:
        return new
    return torch.lerp(old, new, float(alpha))

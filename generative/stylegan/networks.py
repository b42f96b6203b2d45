"""StyleGAN's generator: a mapping MLP z -> w and a synthesis net from a learned constant,
styled by AdaIN at every layer and given per-pixel noise (Karras et al. 2019).

The synthesis net has two layers per resolution; layer l takes its own w_l, so one image is
drawn from a (N, num_layers, w_dim) tensor `ws`. Each layer: [upsample, 3x3 conv], add noise
B * n (n ~ N(0, 1) one value per pixel, B learned per channel, starting at 0), leaky ReLU,
then AdaIN with (y_s, y_b) = A(w_l), a learned affine map. A toRGB per resolution lets it grow
progressively with the Progressive GAN's fade-in.
"""

from __future__ import annotations

import torch
from torch import nn

from generative.distributed import draw_rows
from generative.progressive.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    PixelNorm,
    fade,
    leaky,
    upsample,
)
from generative.progressive.networks import check_stage, to_rgb_layers
from generative.stylegan.config import StyleGANConfig

NOISE_MODES = ("random", "const", "none")
ADAIN_EPS = 1e-8


def adain(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """AdaIN(x, y) = y_s (x - mu(x)) / sigma(x) + y_b, with mu and sigma the mean and standard
    deviation of each sample's channel over its pixels; scale and bias are (N, C)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x.var(dim=(2, 3), keepdim=True, unbiased=False) + ADAIN_EPS).sqrt()
    return scale[:, :, None, None] * (x - mean) / std + bias[:, :, None, None]


class MappingNetwork(nn.Module):
    """z -> pixel norm -> `layers` equalised dense layers with leaky ReLU -> w."""

    def __init__(self, config: StyleGANConfig) -> None:
        super().__init__()
        widths = [config.latent_dim] + [config.w_dim] * config.mapping_layers
        self.norm = PixelNorm()
        self.layers = nn.ModuleList(
            EqualizedLinear(a, b, lr_multiplier=config.mapping_lr_multiplier)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.norm(z)
        for layer in self.layers:
            h = leaky(layer(h))
        return h


class StyleLayer(nn.Module):
    """[upsample + 3x3 conv] (or nothing, on the constant), per-pixel noise with learned
    per-channel strength, leaky ReLU, AdaIN styled by A(w) (scale bias starts at 1)."""

    def __init__(
        self, fan_in: int, fan_out: int, side: int, w_dim: int, *, conv: bool, up: bool
    ) -> None:
        super().__init__()
        self.conv = EqualizedConv2d(fan_in, fan_out, 3) if conv else None
        self.bias = None if conv else nn.Parameter(torch.zeros(fan_out))
        self.up = up
        self.noise_strength = nn.Parameter(torch.zeros(fan_out))
        self.register_buffer("const_noise", torch.randn(1, 1, side, side))
        self.style = EqualizedLinear(w_dim, 2 * fan_out, gain=1.0)
        with torch.no_grad():
            self.style.bias[:fan_out] = 1.0  # y_s starts at 1, y_b at 0

    def styles(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y_s, y_b) = A(w), each (N, C)."""
        return self.style(w).chunk(2, dim=1)

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str, rng: torch.Generator | None
    ) -> torch.Tensor:
        if self.up:
            x = upsample(x)
        x = self.conv(x) if self.conv is not None else x + self.bias[:, None, None]
        x = x + self.noise_strength[:, None, None] * self.noise(x, noise_mode, rng)
        return adain(leaky(x), *self.styles(w))

    def noise(self, x: torch.Tensor, mode: str, rng: torch.Generator | None) -> torch.Tensor:
        """One N(0, 1) value per pixel (shared by the channels): fresh (drawn for the whole
        global batch when distributed: `generative.distributed.draw_rows`), fixed, or zero."""
        if mode == "none":
            return x.new_zeros(1, 1, *x.shape[2:])
        if mode == "const":
            return self.const_noise.to(x.dtype)
        sample = lambda shape: torch.randn(shape, generator=rng, device=x.device)  # noqa: E731
        return draw_rows(sample, (x.shape[0], 1, *x.shape[2:])).to(x.dtype)


class SynthesisNetwork(nn.Module):
    """ws (N, num_layers, w_dim) -> image, from a learned 4x4 constant; toRGB per stage."""

    def __init__(self, config: StyleGANConfig) -> None:
        super().__init__()
        resolutions = config.resolutions
        first = config.channels(resolutions[0])
        self.const = nn.Parameter(torch.randn(1, first, 4, 4))  # StyleGAN2: N(0, 1)
        layers = [
            StyleLayer(first, first, 4, config.w_dim, conv=False, up=False),
            StyleLayer(first, first, 4, config.w_dim, conv=True, up=False),
        ]
        for r in resolutions[1:]:
            fan_in, fan_out = config.channels(r // 2), config.channels(r)
            layers.append(StyleLayer(fan_in, fan_out, r, config.w_dim, conv=True, up=True))
            layers.append(StyleLayer(fan_out, fan_out, r, config.w_dim, conv=True, up=False))
        self.layers = nn.ModuleList(layers)
        self.to_rgb = to_rgb_layers(config)

    @property
    def stages(self) -> int:
        """Number of resolutions."""
        return len(self.to_rgb)

    def features(
        self, ws: torch.Tensor, stage: int, noise_mode: str, rng: torch.Generator | None
    ) -> torch.Tensor:
        """The feature map after stage `stage`'s two layers."""
        h = self.const.expand(ws.shape[0], -1, -1, -1)
        for index, layer in enumerate(self.layers[: 2 * (stage + 1)]):
            h = layer(h, ws[:, index], noise_mode, rng)
        return h

    def forward(
        self,
        ws: torch.Tensor,
        stage: int | None = None,
        alpha: float = 1.0,
        *,
        noise_mode: str = "random",
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The image at stage `stage` (default: the last), new block faded in by alpha."""
        stage = self.stages - 1 if stage is None else stage
        check_stage(stage, alpha, self.stages)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if alpha >= 1.0:
            return self.to_rgb[stage](self.features(ws, stage, noise_mode, rng))
        previous = self.features(ws, stage - 1, noise_mode, rng)
        h = previous
        for index in (2 * stage, 2 * stage + 1):
            h = self.layers[index](h, ws[:, index], noise_mode, rng)
        return fade(upsample(self.to_rgb[stage - 1](previous)), self.to_rgb[stage](h), alpha)

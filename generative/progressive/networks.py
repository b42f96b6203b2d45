"""Progressive GAN generator and discriminator, built at full size and run up to a stage.

Stage k works at resolution 4 * 2^k. Growing to stage k fades the new block in: G's image is
(1 - alpha) * upsample(toRGB_{k-1}(h_{k-1})) + alpha * toRGB_k(block_k(h_{k-1})) and D's
features are (1 - alpha) * fromRGB_{k-1}(downsample(x)) + alpha * block_k(fromRGB_k(x)). At
alpha = 0 the grown nets compute exactly what the previous stage's nets computed (on the
upsampled image / of the downsampled image); at alpha = 1 the old path is gone.
"""

from __future__ import annotations

import torch
from torch import nn

from generative.progressive.config import ProGANConfig, ProgressiveImageConfig
from generative.progressive.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchStdDev,
    PixelNorm,
    downsample,
    fade,
    leaky,
    upsample,
)


def check_stage(stage: int, alpha: float, stages: int) -> None:
    """Refuse a stage outside 0..stages-1 or an alpha outside [0, 1] (alpha < 1 at stage 0)."""
    if not 0 <= stage < stages:
        raise ValueError(f"stage must be in [0, {stages}), got {stage}")
    if not 0.0 <= alpha <= 1.0 or (stage == 0 and alpha < 1.0):
        raise ValueError(f"alpha must be in [0, 1] (1 at stage 0), got {alpha} at stage {stage}")


def to_rgb_layers(config: ProgressiveImageConfig) -> nn.ModuleList:
    """A generator's toRGB per resolution, 4 first: a linear 1x1 equalised convolution from
    that stage's feature maps to the image's channels."""
    colour = config.data_shape[0]
    return nn.ModuleList(
        EqualizedConv2d(config.channels(r), colour, 1, gain=1.0) for r in config.resolutions
    )


class ConvBlock(nn.Module):
    """Two 3x3 equalised convolutions, each with leaky ReLU and (in G) pixel norm."""

    def __init__(self, fan_in: int, fan_out: int, *, pixel_norm: bool) -> None:
        super().__init__()
        self.conv1 = EqualizedConv2d(fan_in, fan_out, 3)
        self.conv2 = EqualizedConv2d(fan_out, fan_out, 3)
        self.norm = PixelNorm() if pixel_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(leaky(self.conv1(x)))
        return self.norm(leaky(self.conv2(x)))


class ProGANGenerator(nn.Module):
    """z -> pixel norm -> 4x4 map (a dense layer, i.e. the paper's 4x4 transposed conv) ->
    3x3 conv -> [upsample, two 3x3 convs] per stage; a 1x1 toRGB per stage; linear output."""

    def __init__(self, config: ProGANConfig) -> None:
        super().__init__()
        self.config = config
        resolutions = config.resolutions
        first = config.channels(resolutions[0])
        self.input_norm = PixelNorm()
        self.dense = EqualizedLinear(config.latent_dim, first * 16, gain=2**0.5 / 4)
        self.first_conv = EqualizedConv2d(first, first, 3)
        self.norm = PixelNorm()
        self.blocks = nn.ModuleList(
            ConvBlock(config.channels(r // 2), config.channels(r), pixel_norm=True)
            for r in resolutions[1:]
        )
        self.to_rgb = to_rgb_layers(config)

    @property
    def stages(self) -> int:
        """Number of resolutions."""
        return len(self.to_rgb)

    def features(self, z: torch.Tensor, stage: int) -> torch.Tensor:
        """The feature map of stage `stage` (all blocks up to it at full strength)."""
        first = self.config.channels(self.config.resolutions[0])
        h = leaky(self.dense(self.input_norm(z))).view(-1, first, 4, 4)
        h = self.norm(leaky(self.first_conv(self.norm(h))))
        for block in self.blocks[:stage]:
            h = block(upsample(h))
        return h

    def forward(
        self, z: torch.Tensor, stage: int | None = None, alpha: float = 1.0, **_: object
    ) -> torch.Tensor:
        """The image at stage `stage` (default: the last) with fade-in weight alpha."""
        stage = self.stages - 1 if stage is None else stage
        check_stage(stage, alpha, self.stages)
        if alpha >= 1.0:
            return self.to_rgb[stage](self.features(z, stage))
        previous = self.features(z, stage - 1)
        new = self.to_rgb[stage](self.blocks[stage - 1](upsample(previous)))
        return fade(upsample(self.to_rgb[stage - 1](previous)), new, alpha)


class ProGANDiscriminator(nn.Module):
    """fromRGB (1x1) -> [two 3x3 convs, 2x2 average pool] per stage down to 4x4 -> minibatch
    stddev -> 3x3 conv -> 4x4 'valid' conv (a dense layer on the 4x4 map) -> one linear
    critic value. No normalisation layers."""

    def __init__(self, config: ProGANConfig) -> None:
        super().__init__()
        resolutions = config.resolutions
        colour = config.data_shape[0]
        self.from_rgb = nn.ModuleList(
            EqualizedConv2d(colour, config.channels(r), 1) for r in resolutions
        )
        self.blocks = nn.ModuleList(
            ConvBlock(config.channels(r), config.channels(r // 2), pixel_norm=False)
            for r in resolutions[1:]
        )
        last = config.channels(resolutions[0])
        self.minibatch_std = MinibatchStdDev(config.minibatch_group)
        self.final_conv = EqualizedConv2d(last + 1, last, 3)
        self.final_dense = EqualizedLinear(last * 16, last)
        self.out = EqualizedLinear(last, 1, gain=1.0)

    @property
    def stages(self) -> int:
        """Number of resolutions."""
        return len(self.from_rgb)

    def forward(
        self, x: torch.Tensor, stage: int | None = None, alpha: float = 1.0, **_: object
    ) -> torch.Tensor:
        """One critic value per image of stage `stage`'s resolution."""
        stage = self.stages - 1 if stage is None else stage
        check_stage(stage, alpha, self.stages)
        h = leaky(self.from_rgb[stage](x))
        if stage > 0:
            h = downsample(self.blocks[stage - 1](h))
            if alpha < 1.0:
                h = fade(leaky(self.from_rgb[stage - 1](downsample(x))), h, alpha)
        for block in reversed(self.blocks[: max(stage - 1, 0)]):
            h = downsample(block(h))
        return self.head(h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """The 4x4 block: minibatch stddev, convs and the linear read-out."""
        h = leaky(self.final_conv(self.minibatch_std(h)))
        h = leaky(self.final_dense(h.flatten(1)))
        return self.out(h).squeeze(1)

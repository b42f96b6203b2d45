"""The Progressive GAN's config, and the resolution arithmetic both progressive families share."""

from __future__ import annotations

import math
from dataclasses import dataclass

from generative.configs import JsonConfig

START_RESOLUTION = 4  # every progressive net begins as a 4 x 4 generator and discriminator
DEFAULT_LOSS = "non_saturating"  # with R1 on D: StyleGAN2's recipe, cheaper than WGAN-GP
DEFAULT_R1_GAMMA = 1.0
DEFAULT_CHANNEL_BASE, DEFAULT_MAX_CHANNELS = 512, 64  # sized for 32x32 on a CPU budget


def stage_resolutions(side: int) -> list[int]:
    """4, 8, ..., side: the resolution of each training stage."""
    return [START_RESOLUTION * 2**k for k in range(int(math.log2(side // START_RESOLUTION)) + 1)]


def check_progressive_shape(shape: tuple[int, ...]) -> None:
    """Refuse anything but square (C, H, W) images with a side of 4 times a power of two."""
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"progressive nets need square (C, H, W) images, got {shape}")
    side = shape[1]
    if side < START_RESOLUTION or side & (side - 1):
        raise ValueError(
            f"progressive nets grow from 4x4 by doubling: the side must be a power of two >= 4, "
            f"got {side} (pad 28x28 images to 32x32)"
        )


def stage_channels(resolution: int, channel_base: int, max_channels: int) -> int:
    """Feature maps at one resolution: channel_base / resolution, at most max_channels (and at
    least 1): wide at low resolution, narrow where maps are large."""
    return max(1, min(max_channels, channel_base // resolution))


class ProgressiveImageConfig(JsonConfig):
    """Mixin for the progressive families' config dataclasses (fields data_shape,
    channel_base, max_channels): image facts and the per-resolution widths."""

    data_shape: tuple[int, ...]
    channel_base: int
    max_channels: int
    loss: str
    r1_gamma: float | None

    def __post_init__(self) -> None:
        """Store data_shape as a tuple of ints, resolve r1_gamma and run the checks every
        progressive family shares (a subclass with more fields calls this first, then checks
        its own)."""
        object.__setattr__(self, "data_shape", tuple(int(s) for s in self.data_shape))
        if self.r1_gamma is None:
            object.__setattr__(self, "r1_gamma", default_r1_gamma(self.loss))
        check_progressive_shape(self.data_shape)
        check_common(self)

    @property
    def num_classes(self) -> int:
        """Progressive nets here are unconditional."""
        return 0

    @property
    def is_image(self) -> bool:
        """Always images."""
        return True

    @property
    def data_dim(self) -> int:
        """Values per image."""
        return math.prod(self.data_shape)

    @property
    def resolutions(self) -> list[int]:
        """The side of each stage, 4 first."""
        return stage_resolutions(self.data_shape[1])

    def channels(self, resolution: int) -> int:
        """Feature maps at `resolution`."""
        return stage_channels(resolution, self.channel_base, self.max_channels)


@dataclass(frozen=True)
class ProGANConfig(ProgressiveImageConfig):
    """Everything needed to rebuild a Progressive GAN (Karras et al. 2018).

    data_shape: (C, R, R) with R = 4 * 2^k (32 for padded MNIST / Fashion-MNIST, up to 1024).
    latent_dim: size of z ~ N(0, I) (pixel-normalised before the first layer).
    channel_base, max_channels: the feature maps at resolution r are
        min(max_channels, channel_base // r) (the paper: 8192 and 512). The defaults, 512 and
        64, are sized for 32x32 images on a CPU budget (benchmarks/progressive_quality.py: FID
        277 against 427 for 2048 and 128 after 480 CPU s); raise channel_base with the side
        for larger images.
    loss: a key of `generative.gan.losses.GAN_LOSSES`: the non-saturating loss by default,
        with R1 (StyleGAN2's recipe); the paper's "wgan_gp" is the option.
    r1_gamma: weight gamma of the R1 penalty (gamma / 2) E||grad D(real)||^2 on D (0 = off),
        applied every `r1_interval` D steps and scaled by it (lazy regularisation); None
        resolves to `default_r1_gamma(loss)`: 1 with the non-saturating loss, 0 with WGAN-GP.
    drift: weight of eps * E D(x)^2 added to D's loss (keeps the critic near zero).
    ema_decay: exponential moving average of G's weights used for sampling (0 = off).
    minibatch_group: the minibatch-stddev group size.
    """

    data_shape: tuple[int, ...]
    latent_dim: int = 128
    channel_base: int = DEFAULT_CHANNEL_BASE
    max_channels: int = DEFAULT_MAX_CHANNELS
    loss: str = DEFAULT_LOSS
    r1_gamma: float | None = None
    r1_interval: int = 16
    drift: float = 1e-3
    ema_decay: float = 0.999
    minibatch_group: int = 4


def default_r1_gamma(loss: str) -> float:
    """R1's weight when the config leaves it out: `DEFAULT_R1_GAMMA` for a loss with no
    constraint of its own on D (non-saturating, minimax, LSGAN), 0 for WGAN-GP and WGAN, which
    bring their penalty or clipping (so a config saved before R1 existed keeps its recipe)."""
    from generative.gan.losses import GAN_LOSSES  # the names live with their definitions

    spec = GAN_LOSSES.get(loss)
    constrained = spec is not None and (spec.penalty_weight > 0 or spec.clip_value is not None)
    return 0.0 if constrained else DEFAULT_R1_GAMMA


def check_common(config: ProgressiveImageConfig) -> None:
    """Checks every progressive family's config shares (sizes, loss, EMA, drift)."""
    from generative.gan.losses import GAN_LOSSES  # the names live with their definitions

    if config.latent_dim < 1 or config.channel_base < 1 or config.max_channels < 1:
        raise ValueError("latent_dim, channel_base and max_channels must be >= 1")
    if config.loss not in GAN_LOSSES:
        raise ValueError(f"loss must be one of {sorted(GAN_LOSSES)}, got {config.loss!r}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
    if config.r1_gamma < 0 or config.r1_interval < 1:
        raise ValueError(
            f"r1_gamma must be >= 0 and r1_interval >= 1, got {config.r1_gamma!r} and "
            f"{config.r1_interval!r}"
        )
    if config.drift < 0 or config.minibatch_group < 1:
        raise ValueError("drift must be >= 0 and minibatch_group >= 1")

"""StyleGAN's config dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from generative.progressive.config import (
    DEFAULT_CHANNEL_BASE,
    DEFAULT_LOSS,
    DEFAULT_MAX_CHANNELS,
    ProgressiveImageConfig,
)


@dataclass(frozen=True)
class StyleGANConfig(ProgressiveImageConfig):
    """Everything needed to rebuild a StyleGAN (Karras et al. 2019).

    data_shape: (C, R, R) with R = 4 * 2^k.
    latent_dim, w_dim: sizes of z ~ N(0, I) and of the intermediate latent w.
    mapping_layers: depth of the mapping MLP z -> w: 2, as in StyleGAN2-ADA's small-data
        (CIFAR) configuration, not the paper's 8. With its learning rate scaled by
        `mapping_lr_multiplier` (0.01, the paper's) the mapping barely moves in a short run,
        and 8 freshly initialised layers send all z to nearly the same direction (mean cosine
        between ws ~0.7, ~0.3 with 2), which cost the samples their variety
        (docs/benchmarks.md, "StyleGAN's mapping depth").
    style_mixing_prob: share of training batches whose layers take two ws (mixing
        regularisation; the paper's 0.9). 0 by default, as in the same small-data
        configuration: it cost FID at the CPU budgets measured. Mixing at sampling (`mix_z`,
        `mix_layer`) works either way.
    channel_base, max_channels: feature maps min(max_channels, channel_base // r) at side r
        (defaults as `ProGANConfig`'s, sized for 32x32 on a CPU budget).
    w_avg_beta: decay of the running mean of w that the truncation trick pulls towards.
    truncation_cutoff: psi applies to the first this many layers (None = all).
    progressive: grow from 4x4 like the Progressive GAN (False: train at full size only).
    loss, r1_gamma, r1_interval, drift, ema_decay, minibatch_group: as in `ProGANConfig`
        (the discriminator is the Progressive GAN's).
    """

    data_shape: tuple[int, ...]
    latent_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    channel_base: int = DEFAULT_CHANNEL_BASE
    max_channels: int = DEFAULT_MAX_CHANNELS
    style_mixing_prob: float = 0.0
    w_avg_beta: float = 0.995
    truncation_cutoff: int | None = None
    progressive: bool = True
    loss: str = DEFAULT_LOSS
    r1_gamma: float | None = None
    r1_interval: int = 16
    drift: float = 1e-3
    ema_decay: float = 0.999
    minibatch_group: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.w_dim < 1 or self.mapping_layers < 1 or self.mapping_lr_multiplier <= 0:
            raise ValueError("w_dim, mapping_layers must be >= 1, mapping_lr_multiplier > 0")
        if not 0.0 <= self.style_mixing_prob <= 1.0:
            raise ValueError(f"style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}")
        if not 0.0 <= self.w_avg_beta < 1.0:
            raise ValueError(f"w_avg_beta must be in [0, 1), got {self.w_avg_beta}")
        if self.truncation_cutoff is not None and self.truncation_cutoff < 1:
            raise ValueError(f"truncation_cutoff must be >= 1, got {self.truncation_cutoff}")

    @property
    def num_layers(self) -> int:
        """Style inputs (two per resolution): the number of ws one image takes."""
        return 2 * len(self.resolutions)

"""The GAN family's one config dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass

from generative.configs import JsonConfig
from generative.gan.losses import GAN_LOSSES  # names live with their definitions
from generative.gan.networks import ARCHITECTURES, check_dcgan_shape


@dataclass(frozen=True)
class GANConfig(JsonConfig):
    """Everything needed to rebuild a GAN; saved as JSON beside its state_dict.

    data_shape: (D,) for tabular rows or (C, H, W) for images (H = W, a power of two times 4,
        or 28: DCGAN nets grow from 4x4 or 7x7 by stride-2 transposed convolutions).
    architecture: "mlp" (any data) or "dcgan" (images: strided convolutions, batch norm, no
        fully connected hidden layers, Radford et al. 2016).
    latent_dim: size of z ~ N(0, I).
    hidden_dims: MLP widths of G (D mirrors them).
    base_channels: channels of DCGAN's highest-resolution layer; each halving of the
        resolution doubles them.
    num_classes: > 0 makes G and D class-conditional (labels 0..num_classes-1).
    loss: a key of `generative.gan.losses.GAN_LOSSES`; it decides whether D ends in a
        probability logit or an unbounded critic value and whether D may use batch norm
        (not with a gradient penalty, which is per-sample).
    ema_decay: keep an exponential moving average of G's weights (0 = off); sampling uses it.
    spectral_norm: divide every weight of D's convolutions and linear maps by its largest
        singular value (one power iteration per training forward; Miyato et al. 2018), so each
        layer is 1-Lipschitz.
    """

    data_shape: tuple[int, ...]
    architecture: str = "mlp"
    latent_dim: int = 64
    hidden_dims: tuple[int, ...] = (256, 256)
    base_channels: int = 64
    num_classes: int = 0
    loss: str = "non_saturating"
    ema_decay: float = 0.0
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_shape", tuple(int(s) for s in self.data_shape))
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        if len(self.data_shape) not in (1, 3) or min(self.data_shape) < 1:
            raise ValueError(f"data_shape must be (D,) or (C, H, W), got {self.data_shape}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {sorted(ARCHITECTURES)}, got {self.architecture!r}"
            )
        if self.architecture == "dcgan":
            check_dcgan_shape(self.data_shape)
        if self.latent_dim < 1 or self.base_channels < 1 or self.num_classes < 0:
            raise ValueError("latent_dim and base_channels must be >= 1, num_classes >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.loss not in GAN_LOSSES:
            raise ValueError(f"loss must be one of {sorted(GAN_LOSSES)}, got {self.loss!r}")

    @property
    def data_dim(self) -> int:
        """Number of scalar dimensions of one sample."""
        return math.prod(self.data_shape)

    @property
    def is_image(self) -> bool:
        """True for (C, H, W) data."""
        return len(self.data_shape) == 3

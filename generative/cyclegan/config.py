"""The CycleGAN family's one config dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass

from generative.configs import JsonConfig


@dataclass(frozen=True)
class CycleGANConfig(JsonConfig):
    """Everything needed to rebuild a CycleGAN; saved as JSON beside its state_dict.

    image_shape: (C, H, W) of both domains (A and B share it); H and W must be multiples of 4
        (the generator halves them twice and doubles them back).
    base_channels: k of the generator's c7s1-k layer (d2k, d4k and the residual blocks follow)
        and the width of the discriminator's first layer. The paper uses 64 on 128-256 px
        images; a quarter of it suffices for 28 x 28 digits.
    residual_blocks: residual blocks at a quarter of the resolution (the paper: 6 at 128 px,
        9 at 256 px).
    discriminator_layers: stride-2 4x4 convolutions of the PatchGAN discriminator before its
        two stride-1 layers (the paper's 70x70 PatchGAN has 3 on 256 px images). With 2 on
        28 x 28 images D scores a 5 x 5 map of patches of 34 x 34 receptive field (the image
        plus its zero padding); with 1, a 12 x 12 map of 16 x 16 patches.
    loss: a key of `generative.cyclegan.losses.ADVERSARIAL_LOSSES` ("lsgan", the paper's
        least-squares loss, or "non_saturating").
    lambda_cycle: weight of each direction's L1 cycle-consistency loss (the paper's 10).
    lambda_identity: weight of the L1 identity loss as a MULTIPLE of lambda_cycle, as in the
        paper's code: the identity terms are weighted lambda_identity * lambda_cycle (0.5 * 10
        = 5 by default); 0 turns them off.
    history_size: generated images each discriminator draws from (Shrivastava et al. 2017;
        the paper's 50); 0 feeds D the newest fakes only.
    """

    image_shape: tuple[int, ...] = (1, 28, 28)
    base_channels: int = 16
    residual_blocks: int = 6
    discriminator_layers: int = 2
    loss: str = "lsgan"
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    history_size: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        from generative.cyclegan.losses import ADVERSARIAL_LOSSES  # names live with them

        shape = self.image_shape
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W), got {shape}")
        if shape[1] % 4 or shape[2] % 4 or min(shape[1:]) < 8:
            raise ValueError(
                f"image height and width must be multiples of 4 and >= 8 (two stride-2 "
                f"downsamplings), got {shape[1:]}"
            )
        if self.base_channels < 1 or self.residual_blocks < 0:
            raise ValueError("base_channels must be >= 1 and residual_blocks >= 0")
        if not 1 <= self.discriminator_layers <= 4:
            raise ValueError(
                f"discriminator_layers must be in 1..4, got {self.discriminator_layers}"
            )
        if min(shape[1:]) >> self.discriminator_layers < 3:
            raise ValueError(
                f"{self.discriminator_layers} stride-2 discriminator layers leave less than "
                f"3 x 3 of a {shape[1:]} image; use fewer"
            )
        if self.loss not in ADVERSARIAL_LOSSES:
            raise ValueError(f"loss must be one of {sorted(ADVERSARIAL_LOSSES)}, got {self.loss!r}")
        if self.lambda_cycle < 0 or self.lambda_identity < 0:
            raise ValueError("lambda_cycle and lambda_identity must be >= 0")
        if self.history_size < 0:
            raise ValueError(f"history_size must be >= 0, got {self.history_size}")

    @property
    def channels(self) -> int:
        """Image channels C."""
        return self.image_shape[0]

    @property
    def data_dim(self) -> int:
        """Scalar values of one image (C * H * W)."""
        return math.prod(self.image_shape)

    @property
    def identity_weight(self) -> float:
        """The absolute weight of each identity term: lambda_identity * lambda_cycle."""
        return self.lambda_identity * self.lambda_cycle

"""The Progressive GAN model: the grown G and D, an EMA copy of G, sampling at full size."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from generative.gan.model import AdversarialModel
from generative.progressive.config import ProGANConfig
from generative.progressive.networks import ProGANDiscriminator, ProGANGenerator


class ProgressiveModel(AdversarialModel):
    """An adversarial model whose nets run at a stage (resolution index) with a fade-in
    weight alpha: `fake` and `critic` are what the progressive trainer calls.

    The buffer `progress` = (stage, alpha) records how far training got (saved with the
    weights); sampling runs there and upsamples to full size, so a model whose training
    stopped at 16x16 still returns images of its data shape.
    """

    def __init__(self, config: Any, generator: nn.Module, discriminator: nn.Module) -> None:
        super().__init__(config, generator, discriminator)
        self.register_buffer("progress", torch.tensor([len(config.resolutions) - 1.0, 1.0]))

    def set_progress(self, stage: int, alpha: float) -> None:
        """Record the stage and fade-in weight training has reached."""
        self.progress.copy_(torch.tensor([float(stage), float(alpha)]))

    @property
    def stages(self) -> int:
        """Number of resolutions, 4x4 first."""
        return len(self.config.resolutions)

    def fake(
        self, z: torch.Tensor, stage: int, alpha: float, rng: torch.Generator | None
    ) -> torch.Tensor:
        """G's training-time images at a stage (model scale)."""
        return self.generator(z, stage, alpha)

    def critic(self, x: torch.Tensor, stage: int, alpha: float) -> torch.Tensor:
        """D's values for images at a stage."""
        return self.discriminator(x, stage, alpha)

    def _run_generator(
        self, net: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, **options: Any
    ) -> torch.Tensor:
        """Sampling at `stage` / `alpha` when given, else where training got; the image is
        upsampled (nearest) to full size."""
        stage, alpha = options.pop("stage", None), options.pop("alpha", None)
        if stage is None:
            stage, alpha = (
                int(self.progress[0]),
                float(self.progress[1]) if alpha is None else alpha,
            )
        image = net(z, stage, 1.0 if alpha is None else alpha, **options)
        factor = self.config.data_shape[-1] // image.shape[-1]
        if factor > 1:
            image = image.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)
        return image


class ProGAN(ProgressiveModel):
    """Karras et al. (2018): equalised learning rate, pixel norm, minibatch stddev, grown from
    4x4 by fading in blocks. Images are [0, 1] outside and [-1, 1] inside; G's output is
    linear (clamped when converted back to data scale)."""

    family = "progan"

    def __init__(self, config: ProGANConfig) -> None:
        super().__init__(config, ProGANGenerator(config), ProGANDiscriminator(config))

"""The GAN model: generator, discriminator and an optional EMA copy of G, with sampling.

Data scale vs model scale: images are given and returned in [0, 1] and live in [-1, 1] inside
the nets (G ends in tanh); tables are used as given (standardise them first).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from generative.gan.config import GANConfig
from generative.gan.losses import GAN_LOSSES, GANLoss
from generative.gan.networks import apply_spectral_norm, build_networks


class AdversarialModel(nn.Module):
    """What every adversarial family shares: a generator, a discriminator, an optional EMA
    copy of the generator, the configured loss, latent sampling and data-scale conversion.

    `truncation_space` says where `sample`'s truncation acts: "latent" (z is drawn from a
    truncated normal) or "w" (StyleGAN's psi, applied to the intermediate latent).
    Subclasses set `family` and may override `_run_generator` to pass their own options.
    """

    family = ""
    truncation_space = "latent"

    def __init__(self, config: Any, generator: nn.Module, discriminator: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.generator, self.discriminator = generator, discriminator
        self.generator_ema: nn.Module | None = None
        if config.ema_decay > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)

    @property
    def loss(self) -> GANLoss:
        """The configured adversarial loss."""
        return GAN_LOSSES[self.config.loss]

    def to_model_scale(self, x: torch.Tensor) -> torch.Tensor:
        """Data scale -> the nets' scale ([0, 1] images to [-1, 1]; tables unchanged)."""
        return x * 2.0 - 1.0 if self.config.is_image else x

    def to_data_scale(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of `to_model_scale`, clamped to [0, 1] for images."""
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0) if self.config.is_image else x

    def sample_latent(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        truncation: float | None = None,
    ) -> torch.Tensor:
        """n draws of z ~ N(0, I), or of N(0, I) truncated to [-t, t] per coordinate (the
        truncation trick: fewer, more typical samples' worth of diversity)."""
        device = next(self.parameters()).device
        z = torch.empty(n, self.config.latent_dim, device=device)
        if truncation is None:
            return z.normal_(generator=generator)
        if truncation <= 0:
            raise ValueError(f"truncation must be > 0, got {truncation}")
        return nn.init.trunc_normal_(z, 0.0, 1.0, -truncation, truncation, generator=generator)

    def sampling_generator(self) -> nn.Module:
        """The EMA generator when kept, else G."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def generate(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, **options: Any
    ) -> torch.Tensor:
        """Data-scale samples for given latents (eval mode, EMA weights when kept); `options`
        go to the family's generator (e.g. StyleGAN's psi, mixing and noise)."""
        net = self.sampling_generator()
        was_training = net.training
        net.eval()
        try:
            labels = self._labels(labels, len(z), z.device)
            return self.to_data_scale(self._run_generator(net, z, labels, **options).float())
        finally:
            net.train(was_training)

    def _run_generator(
        self, net: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, **options: Any
    ) -> torch.Tensor:
        if options:
            raise ValueError(f"{self.family} generators take no options, got {sorted(options)}")
        return net(z, labels)

    def sample(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        *,
        seed: int | None = None,
        truncation: float | None = None,
    ) -> torch.Tensor:
        """n data-scale samples; a conditional GAN needs `labels` (n of them, or one label).
        `truncation` acts where `truncation_space` says."""
        generator = None
        if seed is not None:
            device = next(self.parameters()).device
            generator = torch.Generator(device=device).manual_seed(seed)
        if self.truncation_space == "latent":
            z = self.sample_latent(n, generator=generator, truncation=truncation)
            return self.generate(z, labels)
        z = self.sample_latent(n, generator=generator)
        return self.generate(z, labels, psi=truncation, rng=generator)

    def _labels(
        self, labels: torch.Tensor | None, n: int, device: torch.device
    ) -> torch.Tensor | None:
        classes = self.config.num_classes
        if classes == 0:
            if labels is not None:
                raise ValueError("this GAN is unconditional: do not pass labels")
            return None
        if labels is None:
            raise ValueError(f"this GAN is class-conditional ({classes} classes): pass labels")
        labels = torch.as_tensor(labels, device=device).long().reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(n)
        if labels.numel() != n or labels.min() < 0 or labels.max() >= classes:
            raise ValueError(
                f"labels must be {n} integers in [0, {classes}), got {labels.tolist()[:10]}"
            )
        return labels

    @torch.no_grad()
    def update_ema(self, decay: float | None = None) -> None:
        """ema <- decay * ema + (1 - decay) * G for parameters (decay = the config's unless
        given); buffers are copied."""
        if self.generator_ema is None:
            return
        decay = self.config.ema_decay if decay is None else decay
        for ema, live in zip(
            self.generator_ema.parameters(), self.generator.parameters(), strict=True
        ):
            ema.lerp_(live.detach(), 1.0 - decay)
        for ema, live in zip(self.generator_ema.buffers(), self.generator.buffers(), strict=True):
            ema.copy_(live)


class GAN(AdversarialModel):
    """G(z, y) and D(x, y) for one `GANConfig`; `sample` draws data-scale samples."""

    family = "gan"

    def __init__(self, config: GANConfig) -> None:
        per_sample = GAN_LOSSES[config.loss].penalty_weight > 0
        generator, discriminator = build_networks(config, per_sample_norm=per_sample)
        if config.spectral_norm:
            apply_spectral_norm(discriminator)
        super().__init__(config, generator, discriminator)

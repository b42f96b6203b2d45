"""The StyleGAN model: mapping + synthesis generator with the running mean of w, style mixing
and the truncation trick; the Progressive GAN's discriminator."""

from __future__ import annotations

import torch
from torch import nn

from generative.distributed import active_batch, draw_rows
from generative.progressive.model import ProgressiveModel
from generative.progressive.networks import ProGANDiscriminator
from generative.stylegan.config import StyleGANConfig
from generative.stylegan.networks import MappingNetwork, SynthesisNetwork


def mix_styles(ws: torch.Tensor, other: torch.Tensor, cutoff: int) -> torch.Tensor:
    """Layers < cutoff keep `ws` (N, L, w_dim); layers >= cutoff take `other` (N, w_dim)."""
    mixed = ws.clone()
    mixed[:, cutoff:] = other[:, None, :]
    return mixed


class StyleGenerator(nn.Module):
    """z -> w (mapping) -> one w per layer (optionally mixed with a second w from `cutoff`
    on, then truncated towards the running mean `w_avg`) -> synthesis."""

    def __init__(self, config: StyleGANConfig) -> None:
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config)
        self.synthesis = SynthesisNetwork(config)
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def truncate(self, ws: torch.Tensor, psi: float) -> torch.Tensor:
        """w_avg + psi (w - w_avg) on the first `truncation_cutoff` layers (all by default)."""
        cutoff = self.config.truncation_cutoff or ws.shape[1]
        pulled = ws.clone()
        pulled[:, :cutoff] = torch.lerp(self.w_avg.to(ws.dtype), ws[:, :cutoff], psi)
        return pulled

    def styles(
        self,
        z: torch.Tensor,
        *,
        psi: float | None = None,
        mix_z: torch.Tensor | None = None,
        mix_layer: int | None = None,
    ) -> torch.Tensor:
        """The (N, num_layers, w_dim) ws of latents z, mixed and truncated as asked."""
        w = self.mapping(z)
        ws = w[:, None, :].expand(-1, self.config.num_layers, -1)
        if mix_z is not None:
            if mix_layer is None or not 0 <= mix_layer <= self.config.num_layers:
                raise ValueError(
                    f"mix_layer must be in [0, {self.config.num_layers}], got {mix_layer}"
                )
            ws = mix_styles(ws, self.mapping(mix_z), mix_layer)
        return ws if psi is None else self.truncate(ws, psi)

    def forward(
        self,
        z: torch.Tensor,
        stage: int | None = None,
        alpha: float = 1.0,
        *,
        psi: float | None = None,
        mix_z: torch.Tensor | None = None,
        mix_layer: int | None = None,
        noise_mode: str = "random",
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images for latents z (model scale) at a stage (default: full size)."""
        ws = self.styles(z, psi=psi, mix_z=mix_z, mix_layer=mix_layer)
        return self.synthesis(ws, stage, alpha, noise_mode=noise_mode, rng=rng)

    @torch.no_grad()
    def track_w_avg(self, w: torch.Tensor) -> None:
        """w_avg <- beta w_avg + (1 - beta) mean(w) over the batch (the global batch inside a
        `generative.distributed.global_batch` block)."""
        w, batch = w.detach().float(), active_batch()
        w = w if batch is None else batch.gather(w)
        self.w_avg.lerp_(w.mean(dim=0), 1.0 - self.config.w_avg_beta)


class StyleGAN(ProgressiveModel):
    """Karras et al. (2019): mapping network, learned constant, AdaIN, per-pixel noise, style
    mixing regularisation, truncation with psi. `sample`'s truncation is psi; `generate`
    also takes mix_z / mix_layer, noise_mode ("random", "const", "none") and rng."""

    family = "stylegan"
    truncation_space = "w"

    def __init__(self, config: StyleGANConfig) -> None:
        super().__init__(config, StyleGenerator(config), ProGANDiscriminator(config))

    def fake(
        self, z: torch.Tensor, stage: int, alpha: float, rng: torch.Generator | None
    ) -> torch.Tensor:
        """Training images: w_avg is tracked, and with probability `style_mixing_prob` the
        batch mixes in a second latent from a random layer in [1, active layers)."""
        generator: StyleGenerator = self.generator  # type: ignore[assignment]
        w = generator.mapping(z)
        generator.track_w_avg(w)
        ws = w[:, None, :].expand(-1, self.config.num_layers, -1)
        active = 2 * (stage + 1)
        if self.config.style_mixing_prob > 0 and self._draw(rng) < self.config.style_mixing_prob:
            cutoff = int(torch.randint(1, active, (1,), generator=rng, device=z.device))
            sample = lambda shape: torch.randn(  # noqa: E731
                shape, generator=rng, device=z.device, dtype=z.dtype
            )
            other = draw_rows(sample, z.shape)
            ws = mix_styles(ws, generator.mapping(other), cutoff)
        return generator.synthesis(ws, stage, alpha, rng=rng)

    @staticmethod
    def _draw(rng: torch.Generator | None) -> float:
        device = rng.device if rng is not None else None
        return float(torch.rand((), generator=rng, device=device))

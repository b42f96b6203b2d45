"""The hierarchical VAE family's one config dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass

from generative.configs import JsonConfig
from generative.vae.config import check_input_shape, check_trim

OBJECTIVES = ("elbo", "iwae")


@dataclass(frozen=True)
class HVAEConfig(JsonConfig):
    """Everything needed to rebuild a hierarchical VAE; saved as JSON beside its state_dict.

    input_shape: (D,) for tabular rows or (C, H, W) for images (flattened; MLP blocks).
    latent_dims: sizes of the stochastic layers z_1 (next to x) ... z_L (top), L >= 1.
    block_widths: width of the deterministic block under each stochastic layer (two hidden
        layers each, in the bottom-up encoder, the top-down prior and posterior and the
        decoder); one per layer.
    activation: a key of `generative.vae.networks.ACTIVATIONS`.
    likelihood: a key of `generative.vae.likelihoods.LIKELIHOODS`.
    gaussian_std: fixed (or initial, for "gaussian_learned") decoder standard deviation.
    objective: "elbo" (one sample, closed-form KL per layer given the layer above) or "iwae"
        (the importance-weighted bound with `train_samples` samples, Burda et al. 2015).
    train_samples: K of the "iwae" objective.
    kl_warmup_steps: the KL weight at step t is min(1, (t + 1) / kl_warmup_steps) ("elbo";
        0 = off).
    trim_fraction: share of each training batch, the rows with the highest loss, left out of
        the "elbo" objective (a trimmed ELBO, as `generative.vae.VAEConfig`; 0 = off).
    trim_warmup_steps: optimisation steps trained on whole batches before trimming starts.
    binarize_training: each training batch is redrawn as Bernoulli(x) at every step (dynamic
        binarisation of inputs in [0, 1], the usual protocol for binarised MNIST).
    """

    input_shape: tuple[int, ...]
    latent_dims: tuple[int, ...] = (32, 16)
    block_widths: tuple[int, ...] = (256, 128)
    activation: str = "elu"
    likelihood: str = "gaussian_learned"
    gaussian_std: float = 1.0
    objective: str = "elbo"
    train_samples: int = 1
    kl_warmup_steps: int = 0
    trim_fraction: float = 0.0
    trim_warmup_steps: int = 0
    binarize_training: bool = False

    def __post_init__(self) -> None:
        for name in ("input_shape", "latent_dims", "block_widths"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        check_input_shape(self.input_shape)
        if not self.latent_dims or min(self.latent_dims) < 1:
            raise ValueError(f"latent_dims must be one or more sizes >= 1, got {self.latent_dims}")
        if len(self.block_widths) != len(self.latent_dims) or min(self.block_widths) < 1:
            raise ValueError(
                f"block_widths needs one width >= 1 per stochastic layer ({len(self.latent_dims)}"
                f"), got {self.block_widths}"
            )
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.train_samples < 1 or (self.objective == "elbo" and self.train_samples != 1):
            raise ValueError(
                f"train_samples must be >= 1 (and 1 for the 'elbo' objective), got "
                f"{self.train_samples}"
            )
        check_trim(self.trim_fraction, self.trim_warmup_steps)
        if self.trim_fraction > 0 and self.objective != "elbo":
            raise ValueError("trim_fraction trims the 'elbo' objective only")
        if self.kl_warmup_steps < 0:
            raise ValueError(f"kl_warmup_steps must be >= 0, got {self.kl_warmup_steps}")

    @property
    def data_dim(self) -> int:
        """Number of scalar dimensions of one input."""
        return math.prod(self.input_shape)

    @property
    def n_layers(self) -> int:
        """L, the number of stochastic layers."""
        return len(self.latent_dims)

"""The VAE family's one config dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass

from generative.configs import JsonConfig


@dataclass(frozen=True)
class VAEConfig(JsonConfig):
    """Everything needed to rebuild a VAE; saved as JSON beside its state_dict.

    input_shape: (D,) for tabular rows or (C, H, W) for images.
    backbone: "mlp" (any input) or "conv" (images).
    hidden_dims: widths of the MLP layers (encoder; the decoder mirrors them). Empty = linear maps.
    conv_channels: channels of the stride-2 conv layers of the conv backbone.
    likelihood: a key of `generative.vae.likelihoods.LIKELIHOODS`.
    gaussian_std: fixed (or initial, for "gaussian_learned") decoder standard deviation.
    kl_warmup_steps: the KL weight at step t is min(1, (t + 1) / kl_warmup_steps) (0 = off).
    free_bits: nats per latent dimension below which the KL is not penalised (0 = off).
    trim_fraction: share of each training batch, the rows with the highest loss, left out of
        the loss (a trimmed ELBO: rows that are probably anomalies get no gradient; 0 = off).
    trim_warmup_steps: optimisation steps trained on whole batches before trimming starts.
    input_mask: share of the encoder's input features set to 0 (the mean of standardised rows)
        in each training row, drawn afresh per step; the decoder still reconstructs every
        feature, so it learns each feature from the others (a denoising VAE; 0 = off).
    """

    input_shape: tuple[int, ...]
    latent_dim: int = 16
    backbone: str = "mlp"
    hidden_dims: tuple[int, ...] = (128, 128)
    conv_channels: tuple[int, ...] = (32, 64)
    activation: str = "relu"
    likelihood: str = "gaussian_learned"
    gaussian_std: float = 1.0
    kl_warmup_steps: int = 0
    free_bits: float = 0.0
    trim_fraction: float = 0.0
    trim_warmup_steps: int = 0
    input_mask: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
        check_input_shape(self.input_shape)
        if self.backbone == "conv" and len(self.input_shape) != 3:
            raise ValueError("the conv backbone needs input_shape (C, H, W)")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.free_bits < 0 or self.kl_warmup_steps < 0:
            raise ValueError("free_bits and kl_warmup_steps must be >= 0")
        check_trim(self.trim_fraction, self.trim_warmup_steps)
        if not 0.0 <= self.input_mask < 1.0:
            raise ValueError(f"input_mask must be in [0, 1), got {self.input_mask!r}")

    @property
    def data_dim(self) -> int:
        """Number of scalar dimensions of one input."""
        return math.prod(self.input_shape)


def check_input_shape(shape: tuple[int, ...]) -> None:
    """ValueError unless `shape` is (D,) or (C, H, W) with every size >= 1."""
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ValueError(f"input_shape must be (D,) or (C, H, W), got {shape}")


def check_trim(fraction: float, warmup_steps: int) -> None:
    """ValueError unless the trimmed ELBO's share is in [0, 0.5) and its warm-up >= 0."""
    if not 0.0 <= fraction < 0.5 or warmup_steps < 0:
        raise ValueError(
            f"trim_fraction must be in [0, 0.5) and trim_warmup_steps >= 0, got "
            f"{fraction!r} and {warmup_steps!r}"
        )

"""Scores that correct a likelihood for what it gets wrong out of distribution.

A model trained on Fashion-MNIST gives MNIST digits a higher log p(x) than its own test set
(Nalisnick et al. 2019): the likelihood is dominated by low-level statistics (how many pixels
are black, how smooth the image is) that a simpler input has more of. Each correction
subtracts an estimate of that low-level part, in nats (higher = more normal):

- "likelihood_ratio": log p(x) - log p_bg(x), with p_bg a local autoregressive model
  (`generative.localar`) trained on perturbed training inputs (Ren et al. 2019). It sees only a
  small causal neighbourhood of each pixel, so it explains texture and background but not shape.
- "complexity": log p(x) + L(x) ln 2, with L(x) a lossless compressor's code length in bits
  (Serra et al. 2020). It is the negative of their S(x) = -log2 p(x) - L(x), in nats; both terms
  are code lengths of the same 8-bit pixels only when the model's likelihood is discrete.

The terms behind each score (`score_terms`) are reported too, so the baselines "background
model alone" and "compressor alone" can always be compared with the corrected scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from anomaly.complexity import COMPRESSORS, code_length_bits, to_uint8
from generative.localar import LocalAR, LocalARConfig
from generative.training import Callback, ProgressBar, Trainer, TrainerConfig

LOG_2 = math.log(2.0)


@dataclass(frozen=True)
class Correction:
    """What a correction needs and how it combines the terms into one score."""

    needs_background: bool
    needs_compressor: bool
    combine: Callable[[dict[str, np.ndarray]], np.ndarray]


CORRECTIONS: dict[str, Correction] = {
    "none": Correction(False, False, lambda terms: terms["log_px"]),
    "likelihood_ratio": Correction(
        True, False, lambda terms: terms["log_px"] - terms["background_log_px"]
    ),
    "complexity": Correction(
        False, True, lambda terms: terms["log_px"] + LOG_2 * terms["compressor_bits"]
    ),
}


@dataclass(frozen=True)
class BackgroundSettings:
    """The background model of the likelihood ratio and how it is trained."""

    radius: int = 1
    mutation_rate: float = 0.1
    epochs: int = 3
    channels: int = 32
    batch_size: int = 128
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"background_epochs must be >= 1, got {self.epochs}")
        try:
            self.model_config((1, 1, 1))
        except ValueError as error:
            raise ValueError(f"bad background model setting: {error}") from error

    def model_config(self, input_shape: tuple[int, ...]) -> LocalARConfig:
        """The LocalAR config for images of `input_shape`."""
        return LocalARConfig(
            input_shape,
            radius=self.radius,
            channels=self.channels,
            n_layers=0,
            likelihood="logistic256",
            mutation_rate=self.mutation_rate,
        )


def check_correction(correction: str, compressor: str) -> None:
    """Raise a ValueError naming the problem if the options are unknown."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {sorted(CORRECTIONS)}, got {correction!r}")
    if compressor not in COMPRESSORS:
        raise ValueError(f"compressor must be one of {sorted(COMPRESSORS)}, got {compressor!r}")


def compressor_accepts(compressor: str, input_shape: tuple[int, ...]) -> bool:
    """Whether `compressor` can code images of this shape (png: 1 or 3 channels)."""
    return len(input_shape) == 3 and (compressor != "png" or input_shape[0] in (1, 3))


def check_applicable(
    correction: str, input_shape: tuple[int, ...], discrete: bool, compressor: str = "png"
) -> None:
    """Corrections are defined for 8-bit images; the complexity one needs a discrete
    likelihood so that -log2 p(x) and the compressor's length are code lengths of one thing,
    and a compressor that takes the images' channels."""
    if correction == "none":
        return
    if len(input_shape) != 3:
        raise ValueError(
            f"correction={correction!r} needs images (n, c, h, w) of 8-bit pixels; "
            f"this data has rows of shape {input_shape}"
        )
    if correction == "complexity" and not discrete:
        raise ValueError(
            "correction='complexity' needs a discrete likelihood (logistic256, categorical256 "
            "or bernoulli): with a density on [0, 1] intensities, -log p(x) is not a code "
            "length and the 'correction' is the compressor alone"
        )
    if correction == "complexity" and not compressor_accepts(compressor, input_shape):
        raise ValueError(
            f"compressor {compressor!r} cannot code images of {input_shape[0]} channels; "
            "use zlib or bz2"
        )


def train_background(
    images: torch.Tensor,
    settings: BackgroundSettings,
    *,
    seed: int = 0,
    device: str = "auto",
    callbacks: list[Callback] | None = None,
    verbose: bool = False,
) -> LocalAR:
    """Fit the background model on training images (values k/255 in [0, 1])."""
    torch.manual_seed(seed)
    model = LocalAR(settings.model_config(tuple(images.shape[1:])))
    config = TrainerConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        seed=seed,
        device=device,
    )
    extra = [ProgressBar("background model")] if verbose else []
    Trainer(model, config, [*extra, *(callbacks or [])]).fit(images)
    return model.eval()


def score_terms(
    correction: str,
    log_px: np.ndarray,
    images: torch.Tensor,
    *,
    background: LocalAR | None,
    compressor: str,
    everything: bool,
) -> dict[str, np.ndarray]:
    """The terms of `correction`'s score and the score itself ("score"), per row. With
    `everything`, also the terms it does not need that can be computed (the baselines)."""
    needs = CORRECTIONS[correction]
    terms = {"log_px": log_px}
    if background is not None:
        terms["background_log_px"] = background_log_px(background, images)
    can_compress = compressor_accepts(compressor, tuple(images.shape[1:]))
    if needs.needs_compressor or (everything and can_compress):
        terms["compressor_bits"] = compressor_bits(images, compressor)
    terms["score"] = needs.combine(terms)
    return terms


def background_log_px(model: LocalAR, images: torch.Tensor) -> np.ndarray:
    """log p_bg(x) per image in nats, float64."""
    return model.score(images).double().cpu().numpy()


def compressor_bits(images: torch.Tensor, compressor: str) -> np.ndarray:
    """The compressor's code length in bits per image (values k/255 in [0, 1])."""
    return code_length_bits(to_uint8(images.cpu().numpy()), compressor)

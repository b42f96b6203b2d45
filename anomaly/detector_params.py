"""VAEDetector's own constructor parameters turned into checked settings: `check_params` refuses
a bad value with an error naming it (before any data is read), and `vae_config`,
`trainer_config` and `background_settings` resolve the parameters (the "auto"/None
architecture options included) into the configurations that `VAEDetector.fit` trains with.

The functions read the parameters through `VAEParams` (a protocol the detector satisfies), so
this module does not import the detector. The rule and split parameters every family shares
are checked by `anomaly.base.BaseDetector`."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from anomaly.corrections import BackgroundSettings, check_correction
from anomaly.errors import UserInputError
from anomaly.preprocessing import TABULAR_SCALERS
from generative.configs import JsonConfig
from generative.hvae import HVAEConfig
from generative.training import TrainerConfig
from generative.vae import METHODS, VAEConfig
from generative.vae.estimators import PRECISIONS


class VAEParams(Protocol):
    """The VAEDetector parameters these functions read."""

    score_method: str
    n_samples: int
    precision: str
    latent_dim: int | None
    latent_layers: int
    hidden_dims: tuple[int, ...] | None
    backbone: str
    likelihood: str
    image_mode: str
    epochs: int
    min_steps: int | None
    batch_size: int
    batch_growth: float
    teacher_decay: float | None
    learning_rate: float
    kl_warmup_steps: int
    free_bits: float
    input_mask: float
    scaling: str
    trim_fraction: float | str
    trim_warmup_epochs: int
    refit: bool
    refit_folds: int
    contamination: float
    correction: str
    compressor: str
    background_radius: int
    background_mutation_rate: float
    background_epochs: int
    random_state: int
    device: str


SCALINGS = tuple(TABULAR_SCALERS)

# Parameters renamed since an earlier release: old name -> new name. `score` shadowed the `score`
# method that scikit-learn's tooling and pipelines call on estimators.
RENAMED_PARAMS = {"score": "score_method"}


class RenamedParameterError(TypeError, UserInputError):
    """A parameter passed under its old name: a TypeError for Python callers (an unexpected
    keyword), a ValueError for the CLI and flows (bad input, exit status 2)."""


def refuse_renamed(owner: str, params: Mapping[str, Any]) -> None:
    """RenamedParameterError naming the new name when `params` uses a parameter's old name."""
    for old, new in RENAMED_PARAMS.items():
        if old in params:
            raise RenamedParameterError(
                f"{owner}: the parameter {old!r} was renamed to {new!r}; "
                f"pass {new}={params[old]!r} instead"
            )


def upgrade_params(params: dict[str, Any]) -> dict[str, Any]:
    """Saved parameters (detector.json's, also an earlier release's with old names) ready for
    the constructor: old names under the new, `hidden_dims` as a tuple."""
    upgraded = {RENAMED_PARAMS.get(name, name): value for name, value in params.items()}
    if upgraded.get("hidden_dims") is not None:
        upgraded["hidden_dims"] = tuple(upgraded["hidden_dims"])
    return upgraded


def refusing_renamed(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap an estimator's `__init__` so an old parameter name gets `refuse_renamed`'s error
    instead of Python's bare "unexpected keyword". The signature scikit-learn reads is kept."""

    @functools.wraps(init)
    def checked_init(self: Any, *args: Any, **kwargs: Any) -> None:
        refuse_renamed(type(self).__name__, kwargs)
        init(self, *args, **kwargs)

    return checked_init


def check_params(detector: VAEParams) -> None:
    """ValueError naming the first VAE parameter of `detector` that is out of its range."""
    if detector.score_method not in METHODS:
        raise ValueError(
            f"score_method must be one of {sorted(METHODS)}, got {detector.score_method!r}"
        )
    if not (isinstance(detector.n_samples, int | np.integer) and detector.n_samples >= 1):
        raise ValueError(f"n_samples must be a positive integer, got {detector.n_samples!r}")
    if detector.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {detector.precision!r}")
    if detector.image_mode not in ("scale", "binarize"):
        raise ValueError(f"image_mode must be 'scale' or 'binarize', got {detector.image_mode!r}")
    if detector.scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {detector.scaling!r}")
    trim_fraction(detector)  # raises on a bad trim_fraction
    if not (
        isinstance(detector.trim_warmup_epochs, int | np.integer)
        and detector.trim_warmup_epochs >= 0
    ):
        raise ValueError(
            f"trim_warmup_epochs must be an integer >= 0, got {detector.trim_warmup_epochs!r}"
        )
    min_steps = detector.min_steps
    if min_steps is not None and not (isinstance(min_steps, int | np.integer) and min_steps >= 0):
        raise ValueError(f"min_steps must be None or an integer >= 0, got {min_steps!r}")
    if not (isinstance(detector.batch_growth, int | float) and detector.batch_growth >= 1):
        raise ValueError(f"batch_growth must be a number >= 1, got {detector.batch_growth!r}")
    decay = detector.teacher_decay
    if decay is not None and not (
        isinstance(decay, int | float) and not isinstance(decay, bool) and 0 <= decay < 1
    ):
        raise ValueError(f"teacher_decay must be None or a number in [0, 1), got {decay!r}")
    if not (isinstance(detector.input_mask, int | float) and 0 <= detector.input_mask < 1):
        raise ValueError(f"input_mask must be a number in [0, 1), got {detector.input_mask!r}")
    check_hierarchy(detector)
    if not isinstance(detector.refit, bool | np.bool_):
        raise ValueError(f"refit must be True or False, got {detector.refit!r}")
    folds = detector.refit_folds
    if not (isinstance(folds, int | np.integer) and not isinstance(folds, bool) and folds >= 1):
        raise ValueError(f"refit_folds must be an integer >= 1, got {folds!r}")
    check_correction(detector.correction, detector.compressor)
    background_settings(detector)  # raises on a bad background setting, before training


def check_hierarchy(detector: VAEParams) -> None:
    """ValueError for a bad `latent_layers`, or an option the hierarchical VAE lacks."""
    layers = detector.latent_layers
    if not (isinstance(layers, int | np.integer) and not isinstance(layers, bool) and layers >= 1):
        raise ValueError(f"latent_layers must be an integer >= 1, got {layers!r}")
    if layers == 1:
        return
    unsupported = {
        "score_method='prior_mc'": detector.score_method == "prior_mc",
        "backbone='conv'": detector.backbone == "conv",
        "free_bits > 0": detector.free_bits > 0,
        "input_mask > 0": detector.input_mask > 0,
        "teacher_decay > 0": (detector.teacher_decay or 0) > 0,
    }
    for option, used in unsupported.items():
        if used:
            raise ValueError(
                f"latent_layers={layers} (a hierarchical VAE with MLP blocks) does not support "
                f"{option}; use latent_layers=1 for it"
            )


TRIM_WORDS = ("contamination", "estimate")  # trim_fraction's values that are not numbers


def trim_fraction(detector: VAEParams) -> float:
    """The share of each batch the (first) trimmed fit leaves out: `trim_fraction`, or the
    detector's `contamination` for "contamination" and for "estimate" (whose refit then trims
    the share `estimated_outlier_share` finds); ValueError outside [0, 0.5)."""
    value = detector.trim_fraction
    if value in TRIM_WORDS:
        value = detector.contamination
    if isinstance(value, str) or not 0.0 <= float(value) < 0.5:
        raise ValueError(
            f"trim_fraction must be a number in [0, 0.5), 'contamination' or 'estimate', got "
            f"{detector.trim_fraction!r}"
        )
    return float(value)


def estimated_outlier_share(losses: np.ndarray, cap: float = 0.45) -> float:
    """Share of `losses` (per-row -ELBO of the training rows) above Tukey's upper fence
    Q3 + 1.5 IQR, at most `cap`: an estimate of the training rows' anomaly share that needs no
    label and is near 0 for rows of one well-fitted population."""
    q1, q3 = np.quantile(losses, [0.25, 0.75])
    return float(min(cap, np.mean(losses > q3 + 1.5 * (q3 - q1))))


def is_image_shape(input_shape: tuple[int, ...]) -> bool:
    """Whether rows of `input_shape` (without the batch axis) are images (C, H, W), not a table."""
    return len(input_shape) == 3


def vae_config(
    detector: VAEParams,
    input_shape: tuple[int, ...],
    n_train: int = 0,
    trim: float | None = None,
) -> VAEConfig:
    """The VAE for inputs of `input_shape` (without the batch axis): options left at "auto"/None
    resolve to an MLP with the Huber likelihood (a learned scale per feature) for tabular rows,
    a conv net with an 8-bit discretised logistic (or, for `image_mode="binarize"`, Bernoulli)
    likelihood for images."""
    images = is_image_shape(input_shape)
    data_dim = math.prod(input_shape)
    backbone = detector.backbone
    if backbone == "auto":
        backbone = "conv" if images else "mlp"
    likelihood = detector.likelihood
    if likelihood == "auto":
        image_likelihood = "bernoulli" if detector.image_mode == "binarize" else "logistic256"
        likelihood = image_likelihood if images else "huber"
    if detector.hidden_dims is not None:
        hidden = tuple(detector.hidden_dims)
    else:
        width = int(min(512, max(32, 2 ** math.ceil(math.log2(2 * data_dim)))))
        hidden = (width, width) if not images else (256,)
    latent = detector.latent_dim or int(min(32, max(2, data_dim // 2)))
    return VAEConfig(
        input_shape=input_shape,
        latent_dim=latent,
        backbone=backbone,
        hidden_dims=hidden,
        likelihood=likelihood,
        kl_warmup_steps=detector.kl_warmup_steps,
        free_bits=detector.free_bits,
        input_mask=detector.input_mask,
        trim_fraction=trim_fraction(detector) if trim is None else trim,
        trim_warmup_steps=detector.trim_warmup_epochs * math.ceil(n_train / detector.batch_size),
    )


def density_config(
    detector: VAEParams, input_shape: tuple[int, ...], n_train: int = 0, trim: float | None = None
) -> tuple[str, JsonConfig]:
    """(model family, its config): the VAE of `vae_config` for `latent_layers=1`; for L > 1 a
    hierarchical VAE with MLP blocks whose bottom layer has the VAE's latent size and width and
    each layer above half the one below (at least 2 units, width at least 16)."""
    vae = vae_config(detector, input_shape, n_train, trim)
    if detector.latent_layers == 1:
        return "vae", vae
    layers = range(detector.latent_layers)
    width = max(vae.hidden_dims)
    return "hvae", HVAEConfig(
        input_shape=input_shape,
        latent_dims=tuple(max(2, vae.latent_dim >> i) for i in layers),
        block_widths=tuple(max(16, width >> i) for i in layers),
        likelihood=vae.likelihood,
        kl_warmup_steps=vae.kl_warmup_steps,
        trim_fraction=vae.trim_fraction,
        trim_warmup_steps=vae.trim_warmup_steps,
    )


# The step floor `min_steps=None` resolves to for tables (none for images). Chosen on the 25
# ADBench dev sets (docs/benchmarks.md, "A step floor without early stopping").
TABULAR_MIN_STEPS = 300


def training_epochs(detector: VAEParams, n_train: int, images: bool = False) -> int:
    """`epochs`, or more when that many epochs over `n_train` rows in batches of `batch_size`
    make fewer than `min_steps` optimisation steps (small data sets). `min_steps=None` is
    `TABULAR_MIN_STEPS` for tables and 0 for images."""
    min_steps = detector.min_steps
    if min_steps is None:
        min_steps = 0 if images else TABULAR_MIN_STEPS
    steps_per_epoch = max(1, math.ceil(n_train / detector.batch_size))
    return max(detector.epochs, math.ceil(min_steps / steps_per_epoch))


# The EMA teacher's decay `teacher_decay=None` resolves to for a table fit that trims (none
# for fits that do not trim, images and the hierarchical VAE). Chosen on the 25 ADBench dev
# sets (docs/benchmarks.md, "Paired per-set checks, capacity and the EMA teacher").
TABULAR_TEACHER_DECAY = 0.99


def teacher_decay(detector: VAEParams, images: bool = False, trim: float = 0.0) -> float:
    """`teacher_decay`, or for None: `TABULAR_TEACHER_DECAY` for a fit of a table that trims
    (`trim` > 0) with `latent_layers=1`, else 0 (no teacher: it only ranks the rows to trim)."""
    if detector.teacher_decay is not None:
        return float(detector.teacher_decay)
    tabular_vae = not images and detector.latent_layers == 1
    return TABULAR_TEACHER_DECAY if tabular_vae and trim > 0 else 0.0


def trainer_config(
    detector: VAEParams, n_train: int = 0, images: bool = False, trim: float = 0.0
) -> TrainerConfig:
    """The VAE's optimisation settings for `n_train` training rows (of images, or a table) in
    a fit that trims the share `trim` of each batch."""
    return TrainerConfig(
        epochs=training_epochs(detector, n_train, images),
        batch_size=detector.batch_size,
        batch_growth=detector.batch_growth,
        teacher_decay=teacher_decay(detector, images, trim),
        learning_rate=detector.learning_rate,
        seed=detector.random_state,
        device=detector.device,
    )


def background_settings(detector: VAEParams) -> BackgroundSettings:
    """The background model's settings (for the "likelihood_ratio" correction)."""
    return BackgroundSettings(
        radius=detector.background_radius,
        mutation_rate=detector.background_mutation_rate,
        epochs=detector.background_epochs,
        batch_size=detector.batch_size,
        learning_rate=detector.learning_rate,
    )

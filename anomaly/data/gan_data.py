"""The data of a GAN training run: training rows at the GAN's scale, real reference rows for the
quality metrics, the class labels and the table scaler.

Images are used in [0, 1] (8-bit values are divided by 255). Table rows are standardised with
the training rows' per-feature mean and standard deviation (`anomaly.preprocessing.Standardizer`,
kept as JSON beside the model); the reference rows stay in the data's own units. The reference
rows are never trained on: the test split of a catalog image set (fashion-mnist, mnist),
otherwise a seeded held-out fraction of the rows read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomaly.data import load_dataset
from anomaly.data.catalog import IMAGE_SETS
from anomaly.errors import ConfigError, UserInputError
from anomaly.evaluation import digest
from anomaly.packaged.scoring import default_feature_names
from anomaly.preprocessing import Standardizer

MIN_REFERENCE_ROWS = 10  # the C2ST's 5 folds, KID and precision/recall need a few rows


@dataclass(frozen=True)
class GanDataSpec:
    """Which data and how much of it: the data set (catalog name or file), its split and label
    column, a cap on the training rows, the held-out fraction (when there is no test split)
    and a cap on the reference rows."""

    dataset: str
    split: str | None = None
    label_column: str | None = None
    max_rows: int | None = None
    holdout_fraction: float = 0.2
    reference_rows: int = 2000

    def __post_init__(self) -> None:
        if self.max_rows is not None and self.max_rows < 1:
            raise ConfigError(f"max_rows must be >= 1, got {self.max_rows}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.reference_rows < 2:
            raise ConfigError(f"reference_rows must be >= 2, got {self.reference_rows}")

    @property
    def feature_set(self) -> str | None:
        """The catalog image set whose feature net measures image quality, if any."""
        return self.dataset.lower() if self.dataset.lower() in IMAGE_SETS else None

    @property
    def has_test_split(self) -> bool:
        """A catalog image set read from its training split: its test split is the reference."""
        return self.feature_set is not None and self.split in (None, "train")


@dataclass(frozen=True)
class GanData:
    """Training rows (float32; images in [0, 1], tables standardised) with their class
    indices, and real reference rows at data scale with their class labels."""

    train: np.ndarray
    train_labels: np.ndarray | None
    reference: np.ndarray
    reference_labels: np.ndarray | None
    classes: list[int]
    feature_names: list[str]
    scaler: Standardizer | None
    name: str
    digest: str
    reference_source: str
    feature_set: str | None = None

    @property
    def is_image(self) -> bool:
        """True for (n, c, h, w) images."""
        return self.train.ndim == 4


def load_gan_data(spec: GanDataSpec, *, seed: int) -> GanData:
    """Read the data set and cut it into training and reference rows (seeded)."""
    data = load_dataset(spec.dataset, split=spec.split, label_column=spec.label_column)
    X, y = to_data_scale(data.X), data.y
    rng = np.random.default_rng(seed)
    if spec.has_test_split:
        test = load_dataset(spec.dataset, split="test")
        reference, reference_y = to_data_scale(test.X), test.y
        train_rows = rng.permutation(len(X))
    else:
        order = rng.permutation(len(X))
        cut = max(1, int(round(spec.holdout_fraction * len(X))))
        reference, reference_y = X[order[:cut]], None if y is None else y[order[:cut]]
        train_rows = order[cut:]
    train_rows = np.sort(train_rows[: spec.max_rows])
    keep = np.sort(rng.permutation(len(reference))[: spec.reference_rows])
    if len(keep) < MIN_REFERENCE_ROWS:
        raise UserInputError(
            f"only {len(keep)} reference rows for the quality metrics (>= {MIN_REFERENCE_ROWS} "
            "needed): give more rows or a larger holdout_fraction"
        )
    train, train_y = X[train_rows], None if y is None else y[train_rows]
    classes = [] if train_y is None else sorted(int(c) for c in np.unique(train_y))
    scaler = None if train.ndim == 4 else Standardizer().fit(train)
    return GanData(
        train=(train if scaler is None else scaler.transform(train)).astype(np.float32),
        train_labels=None if train_y is None else np.searchsorted(classes, train_y),
        reference=reference[keep],
        reference_labels=None if reference_y is None else reference_y[keep],
        classes=classes,
        feature_names=data.feature_names or default_feature_names(tuple(X.shape[1:])),
        scaler=scaler,
        name=data.name,
        digest=digest(data.X),
        reference_source=reference_description(spec, len(keep)),
        feature_set=spec.feature_set,
    )


def reference_description(spec: GanDataSpec, rows: int) -> str:
    """Where the reference rows come from, in words (logged as a parameter)."""
    if spec.has_test_split:
        return f"{spec.dataset} test split ({rows} rows)"
    return f"held-out {spec.holdout_fraction:g} of the rows ({rows} rows)"


def to_data_scale(X: np.ndarray) -> np.ndarray:
    """Images as float32 in [0, 1] (8-bit values divided by 255), tables as float64; refuses
    NaN or infinite values, which no GAN can learn from."""
    if X.ndim == 4:
        scaled = X.astype(np.float32)
        if X.dtype == np.uint8 or scaled.max(initial=0.0) > 1.0:
            scaled /= 255.0
    else:
        scaled = np.asarray(X, dtype=np.float64)
    bad = int((~np.isfinite(scaled)).sum())
    if bad:
        raise UserInputError(f"the data hold {bad} NaN or infinite values; clean them first")
    if X.ndim == 4 and (scaled.min(initial=0.0) < 0.0 or scaled.max(initial=0.0) > 1.0):
        raise UserInputError("image values must be 8-bit (0..255) or in [0, 1]")
    return scaled

"""A fitted detector packaged for serving: its input columns, its name and version, and the
per-row output every consumer sees (`log_px`, `normality`, `score`, `p_value`, `is_anomaly`).

The package is a folder: the detector's own files (state_dict + JSON, see `BaseDetector.save`)
plus `model_info.json` with the feature columns and where the training data came from. The
MLflow pyfunc model, the batch scoring job and the CLI all load it with `load_bundle`.

A loaded bundle may be shared (cached per process, served): a scoring run that needs another
flag rule or identity takes a view (`with_flag_rule`, `with_identity`) and leaves it unchanged.
Only the detector contract (`anomaly.base.BaseDetector`) is used here, whatever the family.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomaly.base import BaseDetector, load_detector
from anomaly.errors import UserInputError
from anomaly.typicality import TypicalityTest
from anomaly.validation import missing_columns_message

MODEL_INFO_FILE = "model_info.json"
OUTPUT_COLUMNS = ("log_px", "normality", "score", "p_value", "is_anomaly")
UNREGISTERED = "unregistered"


class InputColumnsError(UserInputError):
    """A frame to score lacks columns the model needs, or has non-numeric ones."""


def default_feature_names(input_shape: tuple[int, ...]) -> list[str]:
    """Column names for flattened rows: x0..x{d-1} for tables, pixel0.. for images."""
    prefix = "pixel" if len(input_shape) == 3 else "x"
    return [f"{prefix}{i}" for i in range(math.prod(input_shape))]


@dataclass
class ScoringModel:
    """A fitted detector with the column names it expects and its registry identity.

    `score_array` / `score_frame` return one row per input with
    `log_px` (estimated log p(x), nats),
    `normality` (the detector's score, higher = more normal: `log_px` itself, or the corrected
    score when the detector has a `correction`, e.g. the likelihood ratio),
    `score` (threshold - normality: how far below the threshold; > 0 exactly when flagged
    under the default "threshold" rule), `p_value` (conformal, against the calibration scores) and
    `is_anomaly` (bool, by the detector's `flag_rule`; "fdr" applies Benjamini-Hochberg over the
    rows scored in one call).
    """

    detector: BaseDetector
    feature_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    name: str = UNREGISTERED
    version: str = UNREGISTERED

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input row: (d,) for tables, (c, h, w) for images."""
        return tuple(self.detector.input_shape_)

    def with_flag_rule(self, rule: str, level: float | None = None) -> ScoringModel:
        """A view flagging by `rule` at `level` (`BaseDetector.with_flag_rule`): it shares
        this model's fitted detector, and this model is left unchanged."""
        return dataclasses.replace(self, detector=self.detector.with_flag_rule(rule, level))

    def with_identity(self, name: str, version: str) -> ScoringModel:
        """A view with the registered `name` and `version`; this model is left unchanged."""
        return dataclasses.replace(self, name=name, version=version)

    def typicality_test(self) -> TypicalityTest:
        """The typicality test of row groups against the detector's calibration scores."""
        return TypicalityTest(self.detector.calibration_scores_, seed=self.detector.random_state)

    def score_array(self, X: np.ndarray) -> pd.DataFrame:
        """Score rows of X: (n, d) for tables; (n, c, h, w), (n, h, w) or flattened (n, c*h*w)
        for image models."""
        return pd.DataFrame(self.score_columns(X))

    def score_columns(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """`score_array`'s columns as arrays (no DataFrame: the batch engine's fast path)."""
        X = np.asarray(X)
        if len(self.input_shape) == 3 and X.ndim == 2:
            X = X.reshape(len(X), *self.input_shape)
        if len(X) == 0:
            empty = empty_output()
            return {column: empty[column].to_numpy() for column in OUTPUT_COLUMNS}
        terms = self.detector.score_terms(X, all_terms=False)
        normality = terms["score"]
        p_value, flagged = self.detector.flags(normality)
        return {
            "log_px": terms["log_px"],
            "normality": normality,
            "score": self.detector.offset_ - normality,
            "p_value": p_value,
            "is_anomaly": flagged,
        }

    def score_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Score a DataFrame holding (at least) the model's feature columns, in any order."""
        return self.score_array(select_features(frame, self.feature_names))


def select_features(frame: pd.DataFrame, feature_names: list[str]) -> np.ndarray:
    """The model's feature columns of `frame` as float64, with errors that name the problem."""
    if not isinstance(frame, pd.DataFrame):
        raise InputColumnsError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    columns = [str(c) for c in frame.columns]
    if not set(feature_names) <= set(columns):
        raise InputColumnsError(missing_columns_message(feature_names, columns))
    selected = frame.set_axis(columns, axis=1)[feature_names]
    bad = [name for name in feature_names if not pd.api.types.is_numeric_dtype(selected[name])]
    if bad:
        first = bad[0]
        values = pd.to_numeric(selected[first], errors="coerce")
        row = int(np.flatnonzero(values.isna() & selected[first].notna())[0])
        raise InputColumnsError(
            f"non-numeric values in column(s) {bad[:10]}: e.g. row {row} of column {first!r} "
            f"is {selected[first].iloc[row]!r}"
        )
    return selected.to_numpy(dtype=np.float64, na_value=np.nan)


def empty_output() -> pd.DataFrame:
    """A zero-row output frame with the right dtypes."""
    return pd.DataFrame(
        {
            "log_px": np.empty(0, np.float64),
            "normality": np.empty(0, np.float64),
            "score": np.empty(0, np.float64),
            "p_value": np.empty(0, np.float64),
            "is_anomaly": np.empty(0, bool),
        }
    )


def save_bundle(
    detector: BaseDetector,
    path: str | os.PathLike,
    *,
    feature_names: list[str] | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write the detector and `model_info.json` (feature columns, provenance) to folder `path`."""
    folder = detector.save(path)
    names = feature_names or default_feature_names(tuple(detector.input_shape_))
    if len(names) != detector.n_features_in_:
        raise ValueError(
            f"{len(names)} feature names for a model with {detector.n_features_in_} features"
        )
    payload = {"feature_names": list(names), "info": info or {}}
    (folder / MODEL_INFO_FILE).write_text(json.dumps(payload, indent=2))
    return folder


def load_bundle(path: str | os.PathLike, *, device: str = "cpu") -> ScoringModel:
    """Load a folder written by `save_bundle`."""
    folder = Path(path)
    info_file = folder / MODEL_INFO_FILE
    if not info_file.is_file():
        raise FileNotFoundError(f"no genad model at {folder} (missing {MODEL_INFO_FILE})")
    payload = json.loads(info_file.read_text())
    detector = load_detector(folder, device=device)
    return ScoringModel(detector, list(payload["feature_names"]), dict(payload.get("info", {})))

"""The detector contract every density family follows: scikit-learn's outlier API in PyOD's
vocabulary, with the calibration split, threshold, conformal p-values, flag rules and
persistence owned here, once.

A family (e.g. `anomaly.detector.VAEDetector`) supplies its density: `_fit_density` (train on
the training rows), `_transform` (raw rows to the family's input), `_terms` (log p(x) and the
score per row) and its own files and JSON state (`_write_density`, `_density_state`,
`_load_density`). It registers under a name with `@register_detector(name)`; `load_detector`
finds the family of a saved folder in `DETECTOR_FAMILIES`.

A fitted detector is shared, not changed, by whoever scores with it: `with_flag_rule` returns
a view with its own rule and level that shares the fitted density and calibration.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted

from anomaly.detector_files import read_state, write_state
from anomaly.errors import ConfigError
from anomaly.thresholds import FLAG_RULES, conformal_offset, conformal_p_values
from anomaly.validation import check_input
from generative.registry import atomic_directory

BASE_FITTED_ATTRIBUTES = ("offset_", "calibration_scores_", "n_features_in_", "input_shape_")
# The family of detectors saved before families were named (their detector.json has no "family").
LEGACY_FAMILY = "vae"
# family name -> detector class, filled by `register_detector`
DETECTOR_FAMILIES: dict[str, type[BaseDetector]] = {}

Family = TypeVar("Family", bound="type[BaseDetector]")


def register_detector(name: str) -> Callable[[Family], Family]:
    """Class decorator: register a detector family under `name` (saved in its detector.json)."""

    def register(cls: Family) -> Family:
        if name in DETECTOR_FAMILIES:
            raise ValueError(f"detector family {name!r} is already registered")
        cls.family = name
        DETECTOR_FAMILIES[name] = cls
        return cls

    return register


def keep_params(estimator: BaseEstimator, params: dict[str, Any]) -> None:
    """Store an `__init__`'s parameters (its `locals()`) on the estimator unchanged, as
    scikit-learn's contract asks, without one assignment line per parameter."""
    for name, value in params.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


def load_detector(path: str | os.PathLike, device: str = "auto") -> BaseDetector:
    """Load a detector written by `BaseDetector.save`, of whichever registered family."""
    return BaseDetector.load(path, device=device)


class BaseDetector(OutlierMixin, BaseEstimator):
    """Flag rows that a density model, fitted on normal data, finds unlikely.

    `score_samples(X)` is the family's score (higher = more normal), `decision_function` =
    `score_samples - offset_` (negative = flagged) and `predict` +1 / -1 (inlier / outlier).

    `fit` holds out `calibration_fraction` of the rows (and `validation_fraction` for the
    family's early stopping) and fits the density on the rest. Two rules set `offset_`:
    - `target_fpr` = q (the guarantee): set on the held-out calibration scores only, so a new
      normal row is flagged with probability at most q (a conformal order statistic).
    - `contamination` = c (used when `target_fpr` is None; scikit-learn's and PyOD's meaning):
      the c-quantile of the scores of all the rows given to `fit`.

    `p_values(X)` are conformal p-values against the calibration scores. `predict` flags by
    `flag_rule`: "threshold" (below `offset_`), "alpha" (p <= level) or "fdr"
    (Benjamini-Hochberg over the rows scored together); the level is `flag_level`.

    Fitted attributes: `offset_` (`threshold_` is PyOD's name for it), `calibration_scores_`
    (sorted), `n_features_in_`, `input_shape_`, and the family's own.
    """

    family: ClassVar[str]
    _fitted_attributes: ClassVar[tuple[str, ...]] = BASE_FITTED_ATTRIBUTES

    def __init__(
        self,
        *,
        validation_fraction: float = 0.1,
        calibration_fraction: float = 0.2,
        contamination: float = 0.1,
        target_fpr: float | None = None,
        flag_rule: str = "threshold",
        alpha: float | None = None,
        random_state: int = 0,
        verbose: bool = False,
    ) -> None:
        self.validation_fraction = validation_fraction
        self.calibration_fraction = calibration_fraction
        self.contamination = contamination
        self.target_fpr = target_fpr
        self.flag_rule = flag_rule
        self.alpha = alpha
        self.random_state = random_state
        self.verbose = verbose

    # --- the family's part -----------------------------------------------------------------
    def _fit_density(
        self, X: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, **options: Any
    ) -> Any:
        """Fit the density on rows `train_idx` of X (`val_idx` for early stopping); return
        every row of X in the family's input form (indexable by row-index arrays)."""
        raise NotImplementedError

    def _transform(self, X: np.ndarray) -> Any:
        """Checked raw rows in the family's input form."""
        raise NotImplementedError

    def _terms(self, rows: Any, *, everything: bool) -> dict[str, np.ndarray]:
        """Per row: `log_px` (nats), the family's other terms and `score` (higher = more
        normal); with `everything`, also terms the score does not need."""
        raise NotImplementedError

    def _write_density(self, folder: Path) -> None:
        """Write the family's files (networks) into `folder`."""
        raise NotImplementedError

    def _density_state(self) -> dict[str, Any]:
        """The family's fitted state for detector.json (JSON values)."""
        raise NotImplementedError

    def _load_density(self, folder: Path, state: dict[str, Any], device: str) -> None:
        """Set the family's fitted attributes from its files and `state`."""
        raise NotImplementedError

    @classmethod
    def _params_from_state(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Constructor parameters from a saved detector.json's "params"."""
        return params

    # --- fitting ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, **fit_options: Any) -> Self:
        """Fit the density on X (normal data) and set the threshold on a held-out calibration
        split; `fit_options` go to the family's density fit (see the family's docs)."""
        return self._fit(X, fit_options)

    def _fit(self, X: Any, fit_options: dict[str, Any]) -> Self:
        """`fit`'s work, for a family's `fit` with its own signature to call directly."""
        self._check_params()
        X = check_input(X)
        train_idx, val_idx, cal_idx = self._split(len(X))
        self.input_shape_ = tuple(X.shape[1:])
        self.n_features_in_ = math.prod(self.input_shape_)
        rows = self._fit_density(X, train_idx, val_idx, **fit_options)
        self.calibration_scores_ = np.sort(self._scores(rows[cal_idx]))
        self.offset_ = self._threshold(rows, np.concatenate([train_idx, val_idx]))
        return self

    def _check_params(self) -> None:
        """ValueError naming the first rule or split parameter out of its range."""
        check_flag_rule(self.flag_rule)
        for name, high in (("contamination", 0.5), ("target_fpr", 0.5), ("alpha", 1.0)):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < high:
                raise ConfigError(f"{name} must be in (0, {high:g}), got {value!r}")
        if not 0.0 <= self.validation_fraction < 0.5:
            raise ConfigError(
                f"validation_fraction must be in [0, 0.5), got {self.validation_fraction!r}"
            )
        if not 0.0 < self.calibration_fraction < 0.5:
            raise ConfigError(
                f"calibration_fraction must be in (0, 0.5), got {self.calibration_fraction!r}: "
                "the threshold needs held-out rows"
            )

    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shuffled disjoint index sets: training, validation (early stopping), calibration."""
        n_cal = max(1, round(self.calibration_fraction * n))
        n_val = round(self.validation_fraction * n)
        if n - n_cal - n_val < 2:
            n_val = 0
        if n - n_cal < 1 or n < 2:
            raise ConfigError(
                f"{type(self).__name__} needs at least 2 samples (training plus calibration), "
                f"got {n} sample(s)"
            )
        order = np.random.default_rng(self.random_state).permutation(n)
        return order[n_cal + n_val :], order[n_cal : n_cal + n_val], order[:n_cal]

    def _threshold(self, rows: Any, fitted_rows: np.ndarray) -> float:
        """`offset_`: by `target_fpr` on the calibration scores, else the `contamination`
        quantile of the scores of every row given to `fit` (`fitted_rows` plus calibration)."""
        if self.target_fpr is not None:
            return self._calibrated_offset(self.calibration_scores_)
        scores = np.concatenate([self._scores(rows[fitted_rows]), self.calibration_scores_])
        return float(np.percentile(scores, 100.0 * self.contamination))

    def _calibrated_offset(self, calibration_scores: np.ndarray) -> float:
        offset = conformal_offset(calibration_scores, self.target_fpr)
        if offset == -np.inf:
            warnings.warn(
                f"{len(calibration_scores)} calibration rows are too few to flag at target_fpr "
                f"{self.target_fpr}: nothing will be flagged; use more data or a larger "
                "calibration_fraction",
                stacklevel=5,  # the caller of fit (fit, _fit, _threshold, here)
            )
        return offset

    # --- scoring ---------------------------------------------------------------------------
    @property
    def threshold_(self) -> float:
        """PyOD's name for `offset_`: rows scoring below it are flagged."""
        check_is_fitted(self, "offset_")
        return self.offset_

    def score_samples(self, X: Any) -> np.ndarray:
        """The family's score per row (e.g. log p(x) in nats; higher = more normal)."""
        return self._scores(self._prepare(X))

    def score_terms(self, X: Any, *, all_terms: bool = True) -> dict[str, np.ndarray]:
        """The terms the score is built from, per row (`log_px` in nats and the family's
        others; with `all_terms=False` only those the score needs), and `score`
        (= `score_samples`)."""
        return self._terms(self._prepare(X), everything=all_terms)

    def _prepare(self, X: Any) -> Any:
        check_is_fitted(self, self._fitted_attributes)
        images = len(self.input_shape_) == 3
        X = check_input(
            X,
            n_features=None if images else self.n_features_in_,
            image_shape=self.input_shape_ if images else None,
            estimator=type(self).__name__,
        )
        return self._transform(X)

    def _scores(self, rows: Any) -> np.ndarray:
        return self._terms(rows, everything=False)["score"]

    def decision_function(self, X: Any) -> np.ndarray:
        """score_samples(X) - offset_: negative for flagged rows."""
        return self.score_samples(X) - self.offset_

    def p_values(self, X: Any) -> np.ndarray:
        """Conformal p-values against the calibration scores: small = unlikely under normality
        (a normal row gets p <= a with probability <= a)."""
        return conformal_p_values(self.calibration_scores_, self.score_samples(X))

    @property
    def flag_level(self) -> float:
        """The level of the `alpha` and `fdr` rules: `alpha`, else `target_fpr`, else
        `contamination`."""
        for level in (self.alpha, self.target_fpr):
            if level is not None:
                return level
        return self.contamination

    def flags(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p-values, flags) of `score_samples` values already computed, by `flag_rule`:
        "threshold" (below `offset_`), "alpha" (p <= level) or "fdr" (Benjamini-Hochberg over
        these rows)."""
        check_is_fitted(self, self._fitted_attributes)
        p = conformal_p_values(self.calibration_scores_, scores)
        rule = FLAG_RULES[self.flag_rule]
        return p, rule(scores, p, self.offset_, self.flag_level)

    def predict(self, X: Any) -> np.ndarray:
        """+1 for inliers, -1 for rows flagged by `flag_rule` (for "fdr", over the rows of X)."""
        _, flagged = self.flags(self.score_samples(X))
        return np.where(flagged, -1, 1)

    def with_flag_rule(self, rule: str, level: float | None = None) -> Self:
        """A view of this fitted detector that flags by `rule` at `level` (its `alpha`; None
        keeps this detector's): it shares the fitted density, `offset_` and calibration
        scores, owns its parameters, and leaves this detector unchanged."""
        check_is_fitted(self, self._fitted_attributes)
        check_flag_rule(rule)
        if level is not None:
            check_flag_level(level)
        view = copy.copy(self)
        view.flag_rule = rule
        view.alpha = self.alpha if level is None else level
        return view

    # --- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted detector to folder `path` atomically: the family's files and
        detector.json (family, parameters, calibration, the family's state); no pickle."""
        check_is_fitted(self, self._fitted_attributes)
        with atomic_directory(path) as staging:
            self._write_density(staging)
            write_state(staging, self._state())
        return Path(path)

    def _state(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "params": self.get_params(),
            "offset": self.offset_,
            "calibration_scores": self.calibration_scores_.tolist(),
            "input_shape": list(self.input_shape_),
            **self._density_state(),
        }

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> Self:
        """Load a detector written by `save` (its family from detector.json); the networks go
        to `device`. On a family's class, a folder of another family is refused."""
        folder = Path(path)
        state = read_state(folder)
        name = state.get("family", LEGACY_FAMILY)
        if name not in DETECTOR_FAMILIES:
            raise ValueError(
                f"{folder}: unknown detector family {name!r}; known: {sorted(DETECTOR_FAMILIES)}"
            )
        family = DETECTOR_FAMILIES[name]
        if not issubclass(family, cls):
            raise TypeError(f"{folder} holds a {family.__name__}, not a {cls.__name__}")
        detector = family(**family._params_from_state(state["params"]))
        detector._restore(folder, state, device)
        return detector

    def _restore(self, folder: Path, state: dict[str, Any], device: str) -> None:
        self.offset_ = float(state["offset"])
        self.calibration_scores_ = np.asarray(state["calibration_scores"], dtype=np.float64)
        self.input_shape_ = tuple(state["input_shape"])
        self.n_features_in_ = math.prod(self.input_shape_)
        self._load_density(folder, state, device)


def check_flag_rule(rule: str) -> None:
    """ValueError unless `rule` names a flag rule."""
    if rule not in FLAG_RULES:
        raise ConfigError(f"flag_rule must be one of {sorted(FLAG_RULES)}, got {rule!r}")


def check_flag_level(level: float) -> None:
    """ValueError unless `level` (of the "alpha" and "fdr" rules) is in (0, 1)."""
    if not 0.0 < level < 1.0:
        raise ConfigError(f"the flag level must be in (0, 1), got {level}")

"""Preprocessors fitted on training data only, saved as JSON-compatible dicts.

Each one offers `fit(X) -> self`, `transform(X) -> float32 array`, `to_dict()` and
`from_dict(d)`; `preprocessor_from_dict` rebuilds any of them through the `PREPROCESSORS`
registry from the "type" key that `to_dict` writes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
from scipy.special import ndtri
from sklearn.exceptions import NotFittedError

from anomaly.validation import check_input

IMAGE_MODES = ("scale", "binarize")


class Standardizer:
    """Per-feature standardisation (x - mean) / std for tabular data.

    Features whose training std is below `min_std` (constant ones) get scale 1: they are only
    centred, so nothing is divided by zero.
    """

    kind: ClassVar[str] = "standardize"

    def __init__(self, *, min_std: float = 1e-8) -> None:
        self.min_std = min_std

    def fit(self, X: Any) -> Self:
        """Learn `mean_` and `scale_` from the training rows X (n, d)."""
        data = _tabular(check_input(X))
        self.mean_ = data.mean(axis=0, dtype=np.float64)
        self.scale_ = _std_or_one(data, self.min_std)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Standardise X with the training statistics; returns float32 (n, d)."""
        _require_fitted(self, "mean_")
        data = _tabular(check_input(X, n_features=len(self.mean_)))
        return ((data - self.mean_) / self.scale_).astype(np.float32)

    def inverse_transform(self, Z: Any) -> np.ndarray:
        """Standardised rows back to the data's units; returns float64 (n, d)."""
        _require_fitted(self, "mean_")
        return np.asarray(Z, dtype=np.float64) * self.scale_ + self.mean_

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as a JSON-compatible dict."""
        _require_fitted(self, "mean_")
        return {
            "type": self.kind,
            "min_std": self.min_std,
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Standardizer:
        """Rebuild a fitted Standardizer from `to_dict`'s output."""
        standardizer = cls(min_std=float(state["min_std"]))
        standardizer.mean_ = np.asarray(state["mean"], dtype=np.float64)
        standardizer.scale_ = np.asarray(state["scale"], dtype=np.float64)
        return standardizer


class RobustScaler(Standardizer):
    """Per-feature (x - median) / (IQR / 1.349) for tabular data with outliers or heavy tails.

    The median and the interquartile range move little when a share of the rows are anomalies,
    unlike the mean and the standard deviation. IQR / 1.349 is the standard deviation of a
    normal feature. A feature whose IQR is below `min_std` (a binary or mostly constant one) is
    scaled by its standard deviation instead, and by 1 when that is below `min_std` too.
    """

    kind: ClassVar[str] = "robust"

    def fit(self, X: Any) -> Self:
        """Learn `mean_` (the medians) and `scale_` from the training rows X (n, d)."""
        data = _tabular(check_input(X))
        low, median, high = np.percentile(data, [25.0, 50.0, 75.0], axis=0)
        spread = (high - low) / 1.349
        fallback = _std_or_one(data, self.min_std)
        self.mean_ = median.astype(np.float64)
        self.scale_ = np.where(spread < self.min_std, fallback, spread).astype(np.float64)
        return self


class QuantileScaler:
    """Per-feature map of tabular data to standard-normal quantiles, for heavy tails.

    `fit` keeps each feature's empirical quantiles at `n_quantiles` levels (fewer with fewer
    rows). `transform` takes a value to its interpolated level u and returns
    Phi^-1(u), with u kept inside [1/(2n), 1 - 1/(2n)] (n training rows) so the training
    extremes stay finite. Tied values (binary or discrete features) get the midpoint of their
    levels, so a 0/1 flag maps to two points. Beyond the training range the map goes on
    linearly, one standard deviation of the feature per unit: it stays monotone, so a value
    further out still scores as more unusual, but a heavy tail no longer costs a quadratic
    penalty measured in standard deviations of the bulk.
    """

    kind: ClassVar[str] = "quantile"

    def __init__(self, *, n_quantiles: int = 1000, min_std: float = 1e-8) -> None:
        self.n_quantiles = n_quantiles
        self.min_std = min_std

    def fit(self, X: Any) -> Self:
        """Learn `quantiles_` (levels x features), `levels_`, `tail_scale_` and the clip."""
        data = _tabular(check_input(X))
        if self.n_quantiles < 2:
            raise ValueError(f"n_quantiles must be at least 2, got {self.n_quantiles}.")
        n_levels = min(self.n_quantiles, len(data))
        self.levels_ = np.linspace(0.0, 1.0, max(n_levels, 2))
        quantiles = np.quantile(data.astype(np.float64), self.levels_, axis=0)
        self.quantiles_ = np.maximum.accumulate(quantiles, axis=0)
        self.tail_scale_ = _std_or_one(data, self.min_std)
        self.clip_ = 0.5 / max(len(data), 1)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Normal scores of X with the training quantiles; returns float32 (n, d)."""
        _require_fitted(self, "quantiles_")
        data = _tabular(check_input(X, n_features=self.quantiles_.shape[1])).astype(np.float64)
        out = np.empty_like(data)
        for j in range(data.shape[1]):
            out[:, j] = self._feature_scores(data[:, j], j)
        return out.astype(np.float32)

    def _feature_scores(self, values: np.ndarray, j: int) -> np.ndarray:
        q = self.quantiles_[:, j]
        forward = np.interp(values, q, self.levels_)
        backward = -np.interp(-values, -q[::-1], -self.levels_[::-1])
        level = np.clip(0.5 * (forward + backward), self.clip_, 1.0 - self.clip_)
        scores = ndtri(level)
        edge_low, edge_high = ndtri(self.clip_), ndtri(1.0 - self.clip_)
        below, above = values < q[0], values > q[-1]
        scores[below] = edge_low - (q[0] - values[below]) / self.tail_scale_[j]
        scores[above] = edge_high + (values[above] - q[-1]) / self.tail_scale_[j]
        return scores

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as a JSON-compatible dict."""
        _require_fitted(self, "quantiles_")
        return {
            "type": self.kind,
            "n_quantiles": self.n_quantiles,
            "min_std": self.min_std,
            "levels": self.levels_.tolist(),
            "quantiles": self.quantiles_.tolist(),
            "tail_scale": self.tail_scale_.tolist(),
            "clip": self.clip_,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> QuantileScaler:
        """Rebuild a fitted QuantileScaler from `to_dict`'s output."""
        scaler = cls(n_quantiles=int(state["n_quantiles"]), min_std=float(state["min_std"]))
        scaler.levels_ = np.asarray(state["levels"], dtype=np.float64)
        scaler.quantiles_ = np.asarray(state["quantiles"], dtype=np.float64)
        scaler.tail_scale_ = np.asarray(state["tail_scale"], dtype=np.float64)
        scaler.clip_ = float(state["clip"])
        return scaler


class ImageScaler:
    """Map 8-bit images (n, c, h, w) or (n, h, w) to [0, 1].

    mode="scale" divides by 255; mode="binarize" then sets pixels above 0.5 to 1 and the rest
    to 0. `fit` records the image shape (c, h, w) in `input_shape_`; `transform` rejects others.
    """

    kind: ClassVar[str] = "image"

    def __init__(self, mode: str = "scale") -> None:
        self.mode = mode

    def fit(self, X: Any) -> Self:
        """Check the mode and record the images' shape (c, h, w)."""
        if self.mode not in IMAGE_MODES:
            raise ValueError(f"ImageScaler mode must be one of {IMAGE_MODES}, got {self.mode!r}.")
        self.input_shape_ = _images(check_input(X)).shape[1:]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Scale (or binarise) X; returns float32 (n, c, h, w) in [0, 1]."""
        _require_fitted(self, "input_shape_")
        images = _images(check_input(X, image_shape=self.input_shape_))
        low, high = images.min(), images.max()
        if low < 0 or high > 255:
            raise ValueError(
                f"ImageScaler expects 8-bit pixel values in [0, 255], got values in "
                f"[{low}, {high}]."
            )
        scaled = (images / 255.0).astype(np.float32)
        return (scaled > 0.5).astype(np.float32) if self.mode == "binarize" else scaled

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as a JSON-compatible dict."""
        _require_fitted(self, "input_shape_")
        return {"type": self.kind, "mode": self.mode, "input_shape": list(self.input_shape_)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ImageScaler:
        """Rebuild a fitted ImageScaler from `to_dict`'s output."""
        scaler = cls(mode=state["mode"])
        scaler.input_shape_ = tuple(int(size) for size in state["input_shape"])
        return scaler


PREPROCESSORS: dict[str, type[Standardizer] | type[QuantileScaler] | type[ImageScaler]] = {
    Standardizer.kind: Standardizer,
    RobustScaler.kind: RobustScaler,
    QuantileScaler.kind: QuantileScaler,
    ImageScaler.kind: ImageScaler,
}


# `VAEDetector(scaling=...)`'s choices for tabular data.
TABULAR_SCALERS: dict[str, type[Standardizer] | type[QuantileScaler]] = {
    "standard": Standardizer,
    "robust": RobustScaler,
    "quantile": QuantileScaler,
}


def preprocessor_from_dict(state: dict[str, Any]) -> Standardizer | QuantileScaler | ImageScaler:
    """Rebuild the fitted preprocessor that `to_dict` saved, chosen by its "type" key."""
    kind = state.get("type")
    if kind not in PREPROCESSORS:
        raise ValueError(
            f"Unknown preprocessor type {kind!r}; known types: {sorted(PREPROCESSORS)}."
        )
    return PREPROCESSORS[kind].from_dict(state)


def _std_or_one(data: np.ndarray, min_std: float) -> np.ndarray:
    """Each column's standard deviation, or 1 where it is below `min_std` (constant columns)."""
    std = data.std(axis=0, dtype=np.float64)
    return np.where(std < min_std, 1.0, std)


def _tabular(data: np.ndarray) -> np.ndarray:
    return _require_ndim(
        data,
        2,
        "Standardizer expects tabular data (n_samples, n_features)",
        "use ImageScaler for images",
    )


def _images(data: np.ndarray) -> np.ndarray:
    return _require_ndim(
        data,
        4,
        "ImageScaler expects images (n, c, h, w) or (n, h, w)",
        "use Standardizer for tabular data",
    )


def _require_ndim(data: np.ndarray, ndim: int, expects: str, instead: str) -> np.ndarray:
    if data.ndim != ndim:
        raise ValueError(f"{expects}, got shape {data.shape}; {instead}.")
    return data


def _require_fitted(preprocessor: Standardizer | ImageScaler, attribute: str) -> None:
    if not hasattr(preprocessor, attribute):
        raise NotFittedError(
            f"This {type(preprocessor).__name__} is not fitted yet; call fit(X) first."
        )

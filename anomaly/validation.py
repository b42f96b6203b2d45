"""Input checks shared by preprocessors and detectors, with messages that say what to fix.

`check_input` turns arrays, nested lists and DataFrames into a float array that is either tabular
(n_samples, n_features) or a batch of images (n, c, h, w); (n, h, w) is read as one channel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse

RESHAPE_HINT = (
    "Reshape your data either using array.reshape(-1, 1) if your data has a single feature "
    "or array.reshape(1, -1) if it contains a single sample."
)


def check_input(
    X: Any,
    *,
    n_features: int | None = None,
    image_shape: tuple[int, ...] | None = None,
    name: str = "X",
    estimator: str = "model",
) -> np.ndarray:
    """Validate X and return it as a float array of shape (n, d) or (n, c, h, w).

    Integers of up to 16 bits and booleans become float32 (exactly), float32 stays float32 and
    everything else becomes float64. `n_features` is compared with d (c*h*w for images);
    `image_shape` ((c, h, w), or (h, w) for one channel) with the images' shape. Raises ValueError
    for empty, 1-D, non-numeric, complex, non-finite or mismatched input; TypeError where numpy
    cannot convert an object element (e.g. a dict) to float.
    """
    array = _as_numeric_array(X, name)
    if array.ndim == 1:
        raise ValueError(
            f"Expected a 2-D array (n_samples, n_features) or images, got a 1-D {name} with "
            f"shape {array.shape}. {RESHAPE_HINT}"
        )
    if array.ndim == 3:
        array = array[:, np.newaxis]
    if array.ndim not in (2, 4):
        raise ValueError(
            f"{name} has {array.ndim} dimensions (shape {array.shape}); expected 2 "
            "(n_samples, n_features), 3 (n, h, w) or 4 (n, c, h, w)."
        )
    _check_not_empty(array, name)
    _check_finite(array, name)
    if n_features is not None:
        _check_n_features(array, n_features, name, estimator)
    if image_shape is not None:
        _check_image_shape(array, image_shape, name)
    return array


def _as_numeric_array(X: Any, name: str) -> np.ndarray:
    if scipy.sparse.issparse(X):
        raise TypeError(
            f"{name} is a sparse matrix; sparse input is not supported. "
            "Convert it with X.toarray()."
        )
    if isinstance(X, pd.DataFrame):
        return _frame_to_array(X, name)
    try:
        array = np.asarray(X)
    except ValueError as error:
        raise ValueError(f"{name} could not be converted to an array: {error}") from error
    kind = array.dtype.kind
    if kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {array.dtype}.")
    if kind == "O":
        return _object_to_float(array, name)
    if kind not in "biuf":
        raise ValueError(
            f"{name} has non-numeric dtype {array.dtype}; convert it to numbers first."
        )
    return array.astype(np.result_type(array.dtype, np.float32), copy=False)


def _frame_to_array(frame: pd.DataFrame, name: str) -> np.ndarray:
    bad = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise ValueError(f"{name} has non-numeric columns: {bad}; encode or drop them first.")
    return frame.to_numpy(dtype=np.float64, na_value=np.nan)


def _object_to_float(array: np.ndarray, name: str) -> np.ndarray:
    try:
        return array.astype(np.float64)
    except ValueError as error:
        raise ValueError(f"{name} has non-numeric values: {error}") from error


def _check_not_empty(array: np.ndarray, name: str) -> None:
    if array.shape[0] == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={array.shape}) while a minimum of 1 is "
            f"required: {name} is empty."
        )
    if math.prod(array.shape[1:]) == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={array.shape}) while a minimum of 1 is "
            f"required: {name} has no features."
        )


def _check_finite(array: np.ndarray, name: str) -> None:
    finite = np.isfinite(array)
    if finite.all():
        return
    n_nan = int(np.isnan(array).sum())
    n_inf = int(finite.size - finite.sum()) - n_nan
    flat = finite.reshape(len(array), -1)
    first = int(np.argmin(flat.all(axis=1)))
    column = int(np.argmin(flat[first]))
    where = f"column {column}" if array.ndim == 2 else f"flattened pixel {column}"
    raise ValueError(
        f"{name} contains {n_nan} NaN and {n_inf} inf value(s); the first is in row {first}, "
        f"{where}. Impute or drop them first."
    )


def _check_n_features(array: np.ndarray, n_features: int, name: str, estimator: str) -> None:
    got = math.prod(array.shape[1:])
    if got != n_features:
        raise ValueError(
            f"{name} has {got} features, but {estimator} is expecting {n_features} features "
            "as input."
        )


def _check_image_shape(array: np.ndarray, image_shape: tuple[int, ...], name: str) -> None:
    expected = tuple(image_shape) if len(image_shape) != 2 else (1, *image_shape)
    if array.ndim != 4:
        raise ValueError(
            f"{name} is tabular with shape {array.shape}, but the model expects images of shape "
            f"{expected} (n, c, h, w)."
        )
    if array.shape[1:] != expected:
        raise ValueError(
            f"{name} has images of shape {array.shape[1:]}, but the model was fitted with "
            f"images of shape {expected}."
        )

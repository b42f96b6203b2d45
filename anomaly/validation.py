"""Input checks shared by preprocessors and detectors, with messages that say what to fix.

`check_input` turns arrays, nested lists and DataFrames into a float array that is either tabular
(n_samples, n_features) or a batch of images (n, c, h, w); (n, h, w) is read as one channel.
`missing_columns_message` words every "the input lacks columns" error (library, served model,
batch files, CLI) the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
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


SHOWN_NAMES = 5  # column names quoted in a message; the rest are counted
SHOWN_NAME_CHARS = 40  # longer names are cut (a whole header read as one name, say)
_SPELLING = re.compile(r"[\s_.\-]+")


def missing_columns_message(
    expected: Sequence[str], present: Iterable[Any], *, source: str = "input"
) -> str:
    """One bounded line for input that lacks some of the `expected` columns: how many are
    missing and the first few, the first columns of `source` ("input", "file") that were not
    expected, and the likely cause when those differ from the missing ones only in spelling
    (case, spaces, '_', '-', '.'), e.g. pixel_0 for pixel0."""
    have = [str(name) for name in present]
    wanted, found = set(expected), set(have)
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in have if name not in wanted]
    parts = [
        f"missing columns {_names(missing)} ({len(missing)} of the {len(expected)} the model needs)"
    ]
    if unexpected:
        parts.append(f"the {source}'s first unexpected columns: {_names(unexpected)}")
    hint = _spelling_hint(missing, unexpected, source)
    if hint:
        parts.append(hint)
    return "; ".join(parts)


def _names(names: Sequence[str]) -> str:
    """The first SHOWN_NAMES names as a list literal, then how many more there are."""
    shown = [
        repr(name) if len(name) <= SHOWN_NAME_CHARS else repr(name[:SHOWN_NAME_CHARS]) + "..."
        for name in names[:SHOWN_NAMES]
    ]
    more = len(names) - len(shown)
    return f"[{', '.join(shown)}]" + (f" and {more} more" if more else "")


def _spelling_key(name: str) -> str:
    return _SPELLING.sub("", name).casefold()


def _spelling_hint(missing: Sequence[str], unexpected: Sequence[str], source: str) -> str:
    """The likely cause when unexpected columns are missing ones spelled differently."""
    by_key: dict[str, str] = {}
    for name in missing:
        by_key.setdefault(_spelling_key(name), name)
    pairs = [(name, by_key[key]) for name in unexpected if (key := _spelling_key(name)) in by_key]
    if not pairs:
        return ""
    found, wanted = pairs[0]
    matched = len({want for _, want in pairs})
    share = (
        "the missing column matches"
        if len(missing) == 1
        else f"{matched} of the {len(missing)} missing columns match"
    )
    return (
        f"likely cause: the {source}'s columns look like the model's with different spelling: "
        f"{found!r} vs {wanted!r} ({share} when case, spaces, '_', '-' and '.' are ignored): "
        "rename them"
    )

"""What whole-file reads return (`Dataset`), the errors every reader raises, and their helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly.errors import UserInputError


class DatasetNotFoundError(UserInputError, FileNotFoundError):
    """A dataset file or folder is missing (and cannot be downloaded)."""


class DatasetFormatError(UserInputError):
    """A dataset file exists but cannot be read as the format it claims to be."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features X (n, d) or images (n, c, h, w), with labels y where known.

    For the anomaly sets y is 0 (normal) / 1 (anomaly); for image sets it is the class label.
    `kind` is "tabular" or "image".
    """

    X: np.ndarray
    y: np.ndarray | None
    name: str
    feature_names: list[str] | None = None
    kind: str = "tabular"

    def __post_init__(self) -> None:
        if self.y is not None and len(self.y) != len(self.X):
            raise ValueError(
                f"Dataset {self.name!r}: {len(self.X)} rows in X but {len(self.y)} labels in y."
            )


def to_path(uri: str | os.PathLike[str]) -> Path:
    """Turn a path or a file:// URI into a Path, expanding ~."""
    text = os.fspath(uri)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return Path(text).expanduser()


def frame_dataset(frame: pd.DataFrame, path: Path, label_column: str | None) -> Dataset:
    """A table as a Dataset: `label_column` (if given) becomes y, every other column must be
    numeric and becomes a float64 feature."""
    y = None
    if label_column is not None:
        if label_column not in frame.columns:
            raise DatasetFormatError(
                f"{path}: no label column {label_column!r} (columns: {list(frame.columns)})."
            )
        y = labels(frame.pop(label_column).to_numpy())
    bad = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DatasetFormatError(f"{path}: non-numeric columns {bad}; encode or drop them.")
    X = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    return Dataset(X, y, stem(path), feature_names=[str(c) for c in frame.columns])


def labels(y: np.ndarray) -> np.ndarray:
    """Labels as a 1-D array; integer and boolean labels become int64."""
    y = np.asarray(y).reshape(-1)
    return y.astype(np.int64) if y.dtype.kind in "biu" else y


def reject_label_column(label_column: str | None, path: Path) -> None:
    """Refuse a label column for inputs that hold none (IDX files, image folders)."""
    if label_column is not None:
        raise ValueError(
            f"{path}: label_column applies to CSV, Parquet and npz files only, "
            f"not to IDX files or image folders."
        )


def stem(path: Path) -> str:
    """A dataset's name: its file name up to the first dot."""
    return path.name.split(".")[0]

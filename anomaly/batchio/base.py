"""Shared pieces of the batch readers: the records they exchange and small helpers."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from anomaly.data.readers import DatasetFormatError
from anomaly.validation import missing_columns_message

READ_ERRORS = (
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
    UnicodeDecodeError,
    pa.ArrowException,
    OSError,
)


@dataclass(frozen=True)
class Partition:
    """Rows [start, stop) of an input; CSV partitions also carry their byte range."""

    index: int
    start: int
    stop: int
    byte_start: int | None = None
    byte_stop: int | None = None


@dataclass(frozen=True)
class BatchSource:
    """An opened input: its format, row count and row shape, learned without reading the data.

    `columns` lists all CSV/Parquet columns in file order; `feature_columns` holds the columns
    given to `open_source` (the default selection of `iter_chunks`; `row_shape` counts them).
    """

    path: Path
    format: str
    n_rows: int
    columns: list[str] | None
    row_shape: tuple[int, ...]
    files: list[str] | None = None
    feature_columns: list[str] | None = None


@dataclass(frozen=True)
class BadRow:
    """A row left out of a chunk: its global (0-based) data row id, the column (None for a
    problem of the whole row, e.g. a CSV line with extra fields) and the reason."""

    row_id: int
    column: str | None
    reason: str


@dataclass(frozen=True)
class Chunk:
    """Rows of an input with their global (0-based) row ids, in order.

    Rows are consecutive unless bad rows were skipped: those are listed in `rejected`.
    """

    row_ids: np.ndarray
    X: np.ndarray
    keys: list[str] | None = None
    rejected: tuple[BadRow, ...] = ()


def reject_columns(fmt: str, columns: Sequence[str] | None, path: Path) -> None:
    if columns is not None and fmt in ("npz", "images"):
        raise ValueError(f"{path}: columns apply to CSV and Parquet inputs only, not to {fmt}")
    if isinstance(columns, str):
        raise ValueError(f"columns must be a sequence of names, not the string {columns!r}")


def check_columns(source: BatchSource, columns: Sequence[str]) -> list[str]:
    selected = list(columns)
    if not selected:
        raise ValueError(f"{source.path}: no columns selected")
    have = source.columns or []
    if not set(selected) <= set(have):
        message = missing_columns_message(selected, have, source="file")
        raise DatasetFormatError(f"{source.path}: {message}{_delimiter_hint(have)}.")
    return selected


def _delimiter_hint(names: list[str]) -> str:
    """A hint when a CSV header read as one column holds another delimiter."""
    if len(names) != 1:
        return ""
    for delimiter, label in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
        if delimiter in names[0]:
            return f"; the header looks {label}-separated, but genad reads comma-separated CSV"
    return ""


def row_ids(lo: int, hi: int) -> np.ndarray:
    return np.arange(lo, hi, dtype=np.int64)


def read_exact(stream: Any, size: int, path: Path) -> bytes:
    try:
        data = stream.read(size)
    except (zlib.error, zipfile.BadZipFile, EOFError, OSError) as error:
        raise DatasetFormatError(f"{path}: corrupt X.npy data ({error}).") from error
    if len(data) < size:
        raise DatasetFormatError(f"{path}: X.npy is truncated.")
    return data


def skip(stream: Any, size: int, path: Path) -> None:
    while size > 0:
        size -= len(read_exact(stream, min(size, 1 << 20), path))


def next_or_none(items: Iterator[Any], path: Path, what: str) -> Any:
    """The next item, or None at the end; a reading error becomes a DatasetFormatError."""
    try:
        return next(items, None)
    except READ_ERRORS as error:
        raise DatasetFormatError(f"{path}: unreadable {what} data ({error}).") from error

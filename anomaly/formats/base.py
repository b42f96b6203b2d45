"""The contract of an input format (`InputFormat`) and the records its streaming reads exchange."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from anomaly.formats.dataset import Dataset, DatasetFormatError

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

    `format` is the name of its `InputFormat` (`anomaly.formats.input_format` returns it).
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

    def span(self, partition: Partition | None) -> tuple[int, int]:
        """The rows [start, stop) of `partition`, or all rows when None."""
        return (0, self.n_rows) if partition is None else (partition.start, partition.stop)


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


Opener = Callable[[Path], BatchSource]
ChunkReader = Callable[[BatchSource, Partition | None, int, list[str]], Iterator[Chunk]]
WholeReader = Callable[[Path, str | None], Dataset]
Planner = Callable[[BatchSource, list[tuple[int, int]]], list[Partition]]
ColumnCheck = Callable[[BatchSource, list[str]], None]


def row_partitions(source: BatchSource, ranges: list[tuple[int, int]]) -> list[Partition]:
    """Partitions of the row ranges alone: readers of the format find any row by its id."""
    return [Partition(i, lo, hi) for i, (lo, hi) in enumerate(ranges)]


def any_columns(source: BatchSource, columns: list[str]) -> None:
    """Accept every existing column (the selection checks only that they exist)."""


@dataclass(frozen=True)
class InputFormat:
    """One input format: how to read it whole, how to stream it, and what it can do.

    `read(path, label_column)` loads a whole input as a `Dataset` (training, evaluation).
    `open(path)` learns a `BatchSource` from metadata only, and `chunks(source, partition,
    chunk_rows, columns)` yields the `Chunk`s of a partition (None: all rows), listing the rows
    it finds bad in `Chunk.rejected` (the bad-row policy raises or drops them); `columns` is
    the checked selection (empty for formats without column names).

    Callers ask its capabilities instead of comparing names:
    - `has_column_names`: rows have named columns, so a model selects its feature columns;
    - `per_row_files`: each row is a file, named in `Chunk.keys` (and in the scored output);
    - `holds_images`: inputs may hold images (n, c, h, w);
    - `partitions(source, ranges)`: the partitions of the row ranges (CSV adds byte ranges,
      found in one pass, so that a worker seeks straight to its rows);
    - `check_columns(source, selected)`: what a selection must be beyond existing (Parquet:
      numeric types).
    `name` is recorded in `BatchSource.format` and job fingerprints; `label` names the format
    in messages.
    """

    name: str
    label: str
    open: Opener
    chunks: ChunkReader
    read: WholeReader
    has_column_names: bool = False
    per_row_files: bool = False
    holds_images: bool = False
    partitions: Planner = row_partitions
    check_columns: ColumnCheck = any_columns


def row_ids(lo: int, hi: int) -> np.ndarray:
    """Row ids lo, ..., hi - 1 as int64."""
    return np.arange(lo, hi, dtype=np.int64)


def next_or_none(items: Iterator[Any], path: Path, what: str) -> Any:
    """The next item, or None at the end; a reading error becomes a DatasetFormatError."""
    try:
        return next(items, None)
    except READ_ERRORS as error:
        raise DatasetFormatError(f"{path}: unreadable {what} data ({error}).") from error

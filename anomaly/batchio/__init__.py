"""Bounded-memory input and atomic Parquet output for batch scoring.

Each input format (`anomaly.formats`) does the reading; this module picks the format of a path
and checks the requests. A batch job reads its input in three steps, none of which holds the
whole input in memory:

1. `open_source` learns the row count and row shape from metadata only: the Parquet footer, the
   .npy header of the npz member `X.npy`, the header line of a CSV plus a streaming count of its
   lines (read in 1 MiB blocks), or the listing of an image folder plus its first image.
2. `plan_partitions` splits the rows into consecutive ranges (`Partition`s) that can be scored
   independently, in any order or process. For CSV it also records each partition's byte range
   (one streaming pass that keeps only the partition boundaries), so a worker seeks straight to
   its rows.
3. `iter_chunks` yields a partition as `Chunk`s of at most `chunk_rows` rows: Parquet through
   `iter_batches` over the row groups that overlap the partition, CSV through pandas' chunked
   reader on a file object that stops at the partition's last byte, npz by reading the
   (progressively decompressed) member stream one chunk at a time, images by opening only the
   files of the chunk. Memory is proportional to the chunk (plus, for Parquet, the column
   buffers of one row group), whatever the size of the file.

`AtomicParquetWriter` writes to a temp file beside the target and renames it into place only
on success, so no reader ever sees a half-written output.

Bad rows (`anomaly.batchio.badrows`): `iter_chunks(..., bad_rows="fail")` (the default) raises
`DatasetFormatError` at the first cell that is not a number, missing, infinite or beyond the
float32 range, or at a CSV line with more fields than the header, naming the file, the 0-based
data row and the column; `bad_rows="skip"` drops those rows and lists them in `Chunk.rejected`
(row id, column, reason), the kept rows keeping their original row ids. Extra columns are
fine (only the selected ones are used); a CSV line with fewer fields than the header leaves the
missing cells NaN, so it is a bad row when a selected column is among them. CSV bytes that
are not UTF-8 are read as U+FFFD, making a bad cell where they fall in a selected column.

CSV limits: one row per line (\\n or \\r\\n endings, no quoted fields spanning lines); blank and
whitespace-only lines are skipped, as pandas does. A partition that parses to a different number
of rows than planned raises `DatasetFormatError` rather than misnumbering rows.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence

from anomaly.batchio.badrows import BAD_ROW_POLICIES, apply_policy, check_policy
from anomaly.batchio.writer import AtomicParquetWriter
from anomaly.errors import ConfigError, UserInputError
from anomaly.formats import FILE_FORMATS, column_format_labels, format_for, input_format
from anomaly.formats.base import BadRow, BatchSource, Chunk, InputFormat, Partition
from anomaly.formats.dataset import DatasetFormatError, DatasetNotFoundError, to_path
from anomaly.validation import missing_columns_message

__all__ = [
    "BAD_ROW_POLICIES",
    "AtomicParquetWriter",
    "BadRow",
    "BatchSource",
    "Chunk",
    "Partition",
    "check_policy",
    "input_format",
    "iter_chunks",
    "open_source",
    "plan_partitions",
    "with_columns",
]


def open_source(
    path: str | os.PathLike[str], *, columns: Sequence[str] | None = None
) -> BatchSource:
    """Open a .csv, .parquet or .npz file or a folder of PNG/JPEG images without reading it.

    `columns` (CSV/Parquet only) are the feature columns a model needs: they must exist (and be
    numeric in Parquet); `row_shape` then counts them and `iter_chunks` reads them by default.
    """
    path = to_path(path)
    if not path.exists():
        if path.is_symlink():
            raise DatasetNotFoundError(f"{path}: a symbolic link to nothing (or a link loop).")
        raise DatasetNotFoundError(f"No such file or folder: {path}")
    if path.is_dir() and path.suffix.lower() in FILE_FORMATS:
        raise DatasetFormatError(f"{path}: a folder, not a {path.suffix} file.")
    fmt = format_for(path)
    if fmt is None:
        raise DatasetFormatError(
            f"{path}: unsupported input format {path.suffix!r}; supported: "
            f"{', '.join(FILE_FORMATS)} files or a folder of PNG/JPEG images."
        )
    _reject_columns(fmt, columns, path)
    source = fmt.open(path)
    return source if columns is None else with_columns(source, columns)


def with_columns(source: BatchSource, columns: Sequence[str]) -> BatchSource:
    """An opened CSV/Parquet source narrowed to the feature `columns` a model needs: they must
    exist (and be numeric in Parquet); `row_shape` counts them and `iter_chunks` reads them."""
    fmt = input_format(source)
    _reject_columns(fmt, columns, source.path)
    selected = _check_columns(source, columns)
    fmt.check_columns(source, selected)
    return dataclasses.replace(source, row_shape=(len(selected),), feature_columns=selected)


def plan_partitions(source: BatchSource, rows_per_partition: int) -> list[Partition]:
    """Split [0, n_rows) into consecutive ranges of at most `rows_per_partition` rows.

    CSV partitions also get their byte range, found in one streaming pass over the file. An
    input without data rows (a header only, a 0-row Parquet or npz) has nothing to partition:
    `DatasetFormatError`.
    """
    if rows_per_partition < 1:
        raise ConfigError(f"rows_per_partition must be at least 1, got {rows_per_partition}")
    if source.n_rows == 0:
        raise DatasetFormatError(f"{source.path}: no data rows (0 rows); nothing to score.")
    ranges = [
        (lo, min(lo + rows_per_partition, source.n_rows))
        for lo in range(0, source.n_rows, rows_per_partition)
    ]
    return input_format(source).partitions(source, ranges)


def iter_chunks(
    source: BatchSource,
    partition: Partition | None = None,
    *,
    chunk_rows: int = 8192,
    columns: Sequence[str] | None = None,
    bad_rows: str = "fail",
) -> Iterator[Chunk]:
    """Yield the rows of `partition` (default: all rows) in order, `chunk_rows` at a time.

    Tabular X is float64 with `columns` (default: the source's feature columns, else all of
    them) in the given order; image X is uint8 (n, c, h, w), npz 3-D/4-D X keeps its dtype.
    `bad_rows` ("fail" or "skip", see `anomaly.batchio.badrows`) says what a bad row does:
    raise `DatasetFormatError` naming file, row and column, or leave the chunk and be listed in
    its `rejected` (a chunk may then hold fewer rows, even none, and gaps in its row ids).
    """
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be at least 1, got {chunk_rows}")
    check_policy(bad_rows)
    fmt = input_format(source)
    _reject_columns(fmt, columns, source.path)
    if partition is not None:
        start, stop = partition.start, partition.stop
        if not 0 <= start <= stop <= source.n_rows:
            raise ValueError(f"partition rows [{start}, {stop}) outside [0, {source.n_rows})")
    selected: list[str] = []
    if fmt.has_column_names:
        default = source.feature_columns or source.columns or []
        selected = _check_columns(source, default if columns is None else columns)
    chunks = fmt.chunks(source, partition, chunk_rows, selected)
    return (apply_policy(chunk, selected, source.path, bad_rows) for chunk in chunks)


def _reject_columns(fmt: InputFormat, columns: Sequence[str] | None, path: os.PathLike) -> None:
    if columns is not None and not fmt.has_column_names:
        raise ValueError(
            f"{path}: columns apply to {column_format_labels()} inputs only, not to {fmt.name}"
        )
    if isinstance(columns, str):
        raise ValueError(f"columns must be a sequence of names, not the string {columns!r}")


def _check_columns(source: BatchSource, columns: Sequence[str]) -> list[str]:
    selected = list(columns)
    if not selected:
        raise UserInputError(f"{source.path}: no columns selected")
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

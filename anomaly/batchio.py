"""Bounded-memory input and atomic Parquet output for batch scoring.

A batch job reads its input in three steps, none of which holds the whole input in memory:

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

CSV limits: one row per line (\\n or \\r\\n endings, no quoted fields spanning lines); blank and
whitespace-only lines are skipped, as pandas does. A partition that parses to a different number
of rows than planned raises `DatasetFormatError` rather than misnumbering rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import struct
import uuid
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.lib import format as npy_format
from PIL import Image, UnidentifiedImageError

from anomaly.data.readers import (
    GRAYSCALE_MODES,
    IMAGE_SUFFIXES,
    DatasetFormatError,
    DatasetNotFoundError,
    to_path,
)

FILE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".npz": "npz"}
_BLOCK = 1 << 20  # bytes per block in streaming passes over CSV files
_MAX_HEADER = 1 << 24  # longest CSV header line accepted
_BLANK = b" \t\r"  # a CSV line of only these bytes is blank
_BLANK_OR_NL = np.frombuffer(_BLANK + b"\n", np.uint8)
_CSV_ERRORS = (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError)
_READ_ERRORS = (*_CSV_ERRORS, pa.ArrowException, OSError)
_IMAGE_ERRORS = (UnidentifiedImageError, OSError, Image.DecompressionBombError)


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
class Chunk:
    """Consecutive rows of an input with their global (0-based) row ids."""

    row_ids: np.ndarray
    X: np.ndarray
    keys: list[str] | None = None


def open_source(
    path: str | os.PathLike[str], *, columns: Sequence[str] | None = None
) -> BatchSource:
    """Open a .csv, .parquet or .npz file or a folder of PNG/JPEG images without reading it.

    `columns` (CSV/Parquet only) are the feature columns a model needs: they must exist (and be
    numeric in Parquet); `row_shape` then counts them and `iter_chunks` reads them by default.
    """
    path = to_path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"No such file or folder: {path}")
    fmt = "images" if path.is_dir() else FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DatasetFormatError(
            f"{path}: unsupported input format {path.suffix!r}; supported: "
            f"{', '.join(FILE_FORMATS)} files or a folder of PNG/JPEG images."
        )
    _reject_columns(fmt, columns, path)
    openers = {"csv": _open_csv, "parquet": _open_parquet, "npz": _open_npz, "images": _open_images}
    source = openers[fmt](path)
    if columns is None:
        return source
    selected = _check_columns(source, columns)
    if fmt == "parquet":
        with _parquet_file(path) as parquet:
            _check_parquet_types(parquet, path, selected)
    return dataclasses.replace(source, row_shape=(len(selected),), feature_columns=selected)


def plan_partitions(source: BatchSource, rows_per_partition: int) -> list[Partition]:
    """Split [0, n_rows) into consecutive ranges of at most `rows_per_partition` rows.

    CSV partitions also get their byte range, found in one streaming pass over the file.
    """
    if rows_per_partition < 1:
        raise ValueError(f"rows_per_partition must be at least 1, got {rows_per_partition}")
    ranges = [
        (lo, min(lo + rows_per_partition, source.n_rows))
        for lo in range(0, source.n_rows, rows_per_partition)
    ]
    if source.format != "csv" or not ranges:
        return [Partition(i, lo, hi) for i, (lo, hi) in enumerate(ranges)]
    data_start = _csv_header(source.path)[1]
    ends = _csv_row_offsets(source, data_start, [hi for _, hi in ranges])
    starts = [data_start, *ends[:-1]]
    return [
        Partition(i, lo, hi, byte_lo, byte_hi)
        for i, ((lo, hi), byte_lo, byte_hi) in enumerate(zip(ranges, starts, ends, strict=True))
    ]


def iter_chunks(
    source: BatchSource,
    partition: Partition | None = None,
    *,
    chunk_rows: int = 8192,
    columns: Sequence[str] | None = None,
) -> Iterator[Chunk]:
    """Yield the rows of `partition` (default: all rows) in order, `chunk_rows` at a time.

    Tabular X is float64 with `columns` (default: the source's feature columns, else all of
    them) in the given order; image X is uint8 (n, c, h, w), npz 3-D/4-D X keeps its dtype.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    _reject_columns(source.format, columns, source.path)
    start, stop = 0, source.n_rows
    if partition is not None:
        start, stop = partition.start, partition.stop
        if not 0 <= start <= stop <= source.n_rows:
            raise ValueError(f"partition rows [{start}, {stop}) outside [0, {source.n_rows})")
    if source.format == "npz":
        return _npz_chunks(source, start, stop, chunk_rows)
    if source.format == "images":
        return _image_chunks(source, start, stop, chunk_rows)
    default = source.feature_columns or source.columns or []
    selected = _check_columns(source, default if columns is None else columns)
    if source.format == "csv":
        return _csv_chunks(source, partition, stop, chunk_rows, selected)
    return _parquet_chunks(source, start, stop, chunk_rows, selected)


class AtomicParquetWriter:
    """Context manager writing Parquet to a temp file renamed onto `path` on success only.

    On an exception the temp file is removed and any existing file at `path` is left as is.
    Zero writes still produce a valid, empty Parquet file with the schema.
    """

    def __init__(self, path: str | os.PathLike[str], schema: pa.Schema) -> None:
        self.path = to_path(path)
        self.schema = schema
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> AtomicParquetWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            self._writer = pq.ParquetWriter(self._tmp, self.schema)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        return self

    def write(self, table_or_frame: pa.Table | pd.DataFrame) -> None:
        """Append a pyarrow Table or pandas DataFrame (converted to the schema)."""
        if self._writer is None:
            raise RuntimeError("AtomicParquetWriter.write() outside its with-block")
        table = table_or_frame
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, schema=self.schema, preserve_index=False)
        elif not table.schema.equals(self.schema, check_metadata=False):
            table = table.select(self.schema.names).cast(self.schema)
        self._writer.write_table(table)

    def __exit__(self, exc_type: type[BaseException] | None, *exc_rest: object) -> None:
        assert self._writer is not None and self._tmp is not None
        try:
            self._writer.close()
        except Exception:
            if exc_type is None:  # else the with-block's own exception propagates
                raise
        else:
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            self._writer = None
            self._tmp.unlink(missing_ok=True)


def _reject_columns(fmt: str, columns: Sequence[str] | None, path: Path) -> None:
    if columns is not None and fmt in ("npz", "images"):
        raise ValueError(f"{path}: columns apply to CSV and Parquet inputs only, not to {fmt}")
    if isinstance(columns, str):
        raise ValueError(f"columns must be a sequence of names, not the string {columns!r}")


def _check_columns(source: BatchSource, columns: Sequence[str]) -> list[str]:
    selected = list(columns)
    if not selected:
        raise ValueError(f"{source.path}: no columns selected")
    missing = [name for name in selected if name not in (source.columns or [])]
    if missing:
        have = source.columns or []
        shown = have if len(have) <= 30 else [*have[:30], "..."]
        raise DatasetFormatError(f"{source.path}: missing columns {missing} (file has {shown}).")
    return selected


def _row_ids(lo: int, hi: int) -> np.ndarray:
    return np.arange(lo, hi, dtype=np.int64)


def _open_csv(path: Path) -> BatchSource:
    if path.stat().st_size == 0:
        raise DatasetFormatError(f"{path}: empty file (expected a header line).")
    names, data_start = _csv_header(path)
    n_rows = sum(len(ends) for ends in _csv_row_ends(path, data_start))
    return BatchSource(path, "csv", n_rows, names, (len(names),))


def _csv_header(path: Path) -> tuple[list[str], int]:
    """Column names (as pandas reads them) and the byte offset of the first data line."""
    with open(path, "rb") as file:
        line = file.readline(_MAX_HEADER)
    if not line.endswith(b"\n") and len(line) == _MAX_HEADER:
        raise DatasetFormatError(f"{path}: header line longer than {_MAX_HEADER} bytes.")
    if not line.strip(_BLANK + b"\n"):
        raise DatasetFormatError(f"{path}: the first line is blank; expected column names.")
    try:
        names = pd.read_csv(io.BytesIO(line), nrows=0).columns
    except _CSV_ERRORS as error:
        raise DatasetFormatError(f"{path}: unreadable CSV header ({error}).") from error
    return [str(name) for name in names], len(line)


def _csv_row_ends(path: Path, data_start: int) -> Iterator[np.ndarray]:
    """Yield, block by block, the byte offsets just after each non-blank data line."""
    offset, pending = data_start, False  # pending: the unfinished line so far has content
    with open(path, "rb") as file:
        file.seek(data_start)
        while block := file.read(_BLOCK):
            buf = np.frombuffer(block, np.uint8)
            newlines = np.flatnonzero(buf == 10)
            if len(newlines) == 0:
                pending = pending or bool(block.strip(_BLANK))
                offset += len(block)
                continue
            # Lines ending in a non-blank byte have content; check the others (rare) one by one.
            maybe_blank = np.isin(buf[np.maximum(newlines - 1, 0)], _BLANK_OR_NL)
            maybe_blank[0] = True
            has_content = ~maybe_blank
            for i in np.flatnonzero(maybe_blank):
                line_start = newlines[i - 1] + 1 if i else 0
                has_content[i] = bool(block[line_start : newlines[i]].strip(_BLANK))
            has_content[0] |= pending
            yield offset + newlines[has_content] + 1
            pending = bool(block[newlines[-1] + 1 :].strip(_BLANK))
            offset += len(block)
    if pending:
        yield np.array([offset], dtype=np.int64)


def _csv_row_offsets(source: BatchSource, data_start: int, stops: Sequence[int]) -> list[int]:
    """Byte offsets just after data row stop-1 for each of the sorted `stops` (0: data_start)."""
    wanted = np.asarray(stops, dtype=np.int64) - 1
    found = [data_start] * int(np.sum(wanted < 0))
    k, base = len(found), 0
    for ends in _csv_row_ends(source.path, data_start):
        hi = int(np.searchsorted(wanted, base + len(ends)))
        found.extend(int(end) for end in ends[wanted[k:hi] - base])
        k, base = hi, base + len(ends)
        if k == len(wanted):
            return found
    raise DatasetFormatError(
        f"{source.path}: has {base} data rows but {source.n_rows} when opened; it changed."
    )


class _ByteRange(io.RawIOBase):
    """Read-only view of bytes [start, stop) of a file (stop None: to the end)."""

    def __init__(self, path: Path, start: int, stop: int | None) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._file.seek(start)
        self._left = None if stop is None else stop - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._left is not None:
            view = view[: self._left]
        count = self._file.readinto(view) or 0
        if self._left is not None:
            self._left -= count
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


def _csv_chunks(
    source: BatchSource, partition: Partition | None, stop: int, chunk_rows: int, names: list[str]
) -> Iterator[Chunk]:
    start = 0 if partition is None else partition.start
    if start == stop:
        return
    data_start = _csv_header(source.path)[1]
    byte_start, byte_stop = data_start, None
    if partition is not None:
        byte_start, byte_stop = partition.byte_start, partition.byte_stop
        if byte_start is None or byte_stop is None:
            byte_start, byte_stop = _csv_row_offsets(source, data_start, [start, stop])
    row = start
    with io.BufferedReader(_ByteRange(source.path, byte_start, byte_stop), 1 << 20) as handle:
        reader = pd.read_csv(
            handle,
            header=None,
            names=source.columns,
            usecols=list(dict.fromkeys(names)),
            index_col=False,
            chunksize=chunk_rows,
        )
        with reader:
            while (frame := _next_or_none(reader, source.path, "CSV")) is not None:
                yield Chunk(_row_ids(row, row + len(frame)), _frame_X(frame, names, source, row))
                row += len(frame)
    if row != stop:
        raise DatasetFormatError(
            f"{source.path}: rows [{start}, {stop}) parsed as {row - start} rows; the file "
            "changed since it was opened, or has quoted fields spanning lines (unsupported)."
        )


def _frame_X(frame: pd.DataFrame, names: list[str], source: BatchSource, row: int) -> np.ndarray:
    """The selected columns as float64; non-numeric cells raise, naming the first one."""
    bad = []  # (position, column name, value) of each column's first non-numeric cell
    for name in dict.fromkeys(names):
        if not pd.api.types.is_numeric_dtype(frame[name]):
            values = pd.to_numeric(frame[name], errors="coerce")
            wrong = np.flatnonzero(values.isna().to_numpy() & frame[name].notna().to_numpy())
            bad += [(int(wrong[0]), name, frame[name].iloc[wrong[0]])] if len(wrong) else []
            frame[name] = values
    if bad:
        position, name, value = min(bad, key=lambda cell: cell[0])
        raise DatasetFormatError(
            f"{source.path}: non-numeric value {value!r} in column {name!r} at data row "
            f"{row + position} (0-based, header not counted)."
        )
    return frame[names].to_numpy(dtype=np.float64, na_value=np.nan)


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 16)
    except (pa.ArrowException, OSError) as error:
        raise DatasetFormatError(f"{path}: not a readable Parquet file ({error}).") from error


def _open_parquet(path: Path) -> BatchSource:
    with _parquet_file(path) as parquet:
        names = list(parquet.schema_arrow.names)
        return BatchSource(path, "parquet", parquet.metadata.num_rows, names, (len(names),))


def _check_parquet_types(parquet: pq.ParquetFile, path: Path, names: list[str]) -> None:
    schema = parquet.schema_arrow
    for name in names:
        kind = schema.field(name).type
        numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
        if not any(test(kind) for test in (*numeric, pa.types.is_decimal, pa.types.is_null)):
            raise DatasetFormatError(
                f"{path}: column {name!r} has non-numeric type {kind}; encode or drop it."
            )


def _parquet_chunks(
    source: BatchSource, start: int, stop: int, chunk_rows: int, names: list[str]
) -> Iterator[Chunk]:
    """Row groups one at a time, unthreaded, without pre-buffering: measured, this keeps the
    peak memory near 1.5 row groups (pyarrow's defaults cache far more, up to the whole file)."""
    with _parquet_file(source.path) as parquet:
        _check_parquet_types(parquet, source.path, names)
        row = 0
        for group in range(parquet.metadata.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            if row >= stop:
                break
            if row + size <= start:
                row += size
                continue
            batches = parquet.iter_batches(
                chunk_rows, [group], list(dict.fromkeys(names)), use_threads=False
            )
            while (
                row < stop and (batch := _next_or_none(batches, source.path, "Parquet")) is not None
            ):
                lo, hi = max(start - row, 0), min(stop - row, batch.num_rows)
                if lo < hi:
                    yield Chunk(
                        _row_ids(row + lo, row + hi), _batch_X(batch.slice(lo, hi - lo), names)
                    )
                row += batch.num_rows


def _next_or_none(items: Iterator[Any], path: Path, what: str) -> Any:
    """The next item, or None at the end; a reading error becomes a DatasetFormatError."""
    try:
        return next(items, None)
    except _READ_ERRORS as error:
        raise DatasetFormatError(f"{path}: unreadable {what} data ({error}).") from error


def _batch_X(batch: pa.RecordBatch, names: list[str]) -> np.ndarray:
    X = np.empty((batch.num_rows, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        X[:, j] = pc.cast(batch.column(name), pa.float64()).to_numpy(zero_copy_only=False)
    return X


def _open_npz_member(path: Path) -> tuple[zipfile.ZipFile, zipfile.ZipInfo]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DatasetFormatError(f"{path}: not a valid .npz file ({error}).") from error
    try:
        return archive, archive.getinfo("X.npy")
    except KeyError:
        keys = sorted(name.removesuffix(".npy") for name in archive.namelist())
        archive.close()
        raise DatasetFormatError(f"{path}: no array 'X' in the npz file (keys: {keys}).") from None


def _npy_header(member: Any, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the .npy header; leaves `member` at the first data byte."""
    try:
        version = npy_format.read_magic(member)
        read = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
        header = read[version](member) if version in read else None
    except (ValueError, EOFError, zlib.error, zipfile.BadZipFile) as error:
        raise DatasetFormatError(f"{path}: X.npy has a corrupt .npy header ({error}).") from error
    if header is None:
        raise DatasetFormatError(f"{path}: X.npy uses unsupported .npy format {version}.")
    shape, fortran_order, dtype = header
    if dtype.hasobject:
        raise DatasetFormatError(f"{path}: X has object dtype {dtype}; save a numeric array.")
    if len(shape) not in (2, 3, 4):
        raise DatasetFormatError(f"{path}: X has shape {shape}; expected 2-D, 3-D or 4-D.")
    if fortran_order and len(shape) != 2:
        raise DatasetFormatError(
            f"{path}: X ({len(shape)}-D) is stored in Fortran order; "
            "save np.ascontiguousarray(X) instead."
        )
    return tuple(shape), dtype, bool(fortran_order)


def _open_npz(path: Path) -> BatchSource:
    archive, info = _open_npz_member(path)
    with archive, archive.open(info) as member:
        shape, _, _ = _npy_header(member, path)
    row_shape = (1, *shape[1:]) if len(shape) == 3 else shape[1:]
    return BatchSource(path, "npz", shape[0], None, row_shape)


def _npz_chunks(source: BatchSource, start: int, stop: int, chunk_rows: int) -> Iterator[Chunk]:
    archive, info = _open_npz_member(source.path)
    with archive, archive.open(info) as member:
        shape, dtype, fortran = _npy_header(member, source.path)
        header_size = member.tell()
        row_bytes = dtype.itemsize * math.prod(shape[1:])
        if info.file_size < header_size + shape[0] * row_bytes:
            raise DatasetFormatError(f"{source.path}: X.npy is truncated.")
        if fortran:
            yield from _fortran_chunks(source, member, shape, dtype, (start, stop), chunk_rows)
            return
        out_dtype = np.dtype(np.float64) if len(shape) == 2 else dtype.newbyteorder("=")
        with _npz_data(source.path, archive, info, member, header_size + start * row_bytes) as raw:
            for lo in range(start, stop, chunk_rows):
                hi = min(lo + chunk_rows, stop)
                data = _read_exact(raw, (hi - lo) * row_bytes, source.path)
                X = np.frombuffer(data, dtype).reshape(hi - lo, *source.row_shape)
                yield Chunk(_row_ids(lo, hi), X.astype(out_dtype))


def _fortran_chunks(
    source: BatchSource,
    member: Any,
    shape: tuple[int, ...],
    dtype: np.dtype,
    rows: tuple[int, int],
    chunk_rows: int,
) -> Iterator[Chunk]:
    """A column-major (n, d) X (e.g. saved from pandas' `to_numpy()`): one pass over the
    member keeps rows [start, stop) of every column, so memory grows with the partition's rows,
    not the file's."""
    start, stop = rows
    n, d = shape
    block = np.empty((stop - start, d), dtype=np.float64)
    for column in range(d):
        _skip(member, start * dtype.itemsize, source.path)
        data = _read_exact(member, (stop - start) * dtype.itemsize, source.path)
        block[:, column] = np.frombuffer(data, dtype)
        _skip(member, (n - stop) * dtype.itemsize, source.path)
    for lo in range(start, stop, chunk_rows):
        hi = min(lo + chunk_rows, stop)
        yield Chunk(_row_ids(lo, hi), block[lo - start : hi - start])


def _skip(stream: Any, size: int, path: Path) -> None:
    while size > 0:
        size -= len(_read_exact(stream, min(size, 1 << 20), path))


def _npz_data(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: Any, position: int
) -> Any:
    """A file object at byte `position` of the member: a plain seek when stored uncompressed,
    else read-and-discard through the decompressor (in 1 MiB steps)."""
    if info.compress_type == zipfile.ZIP_STORED:
        raw = open(path, "rb")  # noqa: SIM115 - the caller closes it
        raw.seek(info.header_offset)
        local = raw.read(30)
        if local[:4] != b"PK\x03\x04":
            raw.close()
            raise DatasetFormatError(f"{path}: corrupt zip entry for X.npy.")
        name_size, extra_size = struct.unpack("<HH", local[26:30])
        raw.seek(info.header_offset + 30 + name_size + extra_size + position)
        return raw
    _skip(member, position - member.tell(), path)
    return contextlib.nullcontext(member)


def _read_exact(stream: Any, size: int, path: Path) -> bytes:
    try:
        data = stream.read(size)
    except (zlib.error, zipfile.BadZipFile, EOFError, OSError) as error:
        raise DatasetFormatError(f"{path}: corrupt X.npy data ({error}).") from error
    if len(data) < size:
        raise DatasetFormatError(f"{path}: X.npy is truncated.")
    return data


def _open_images(path: Path) -> BatchSource:
    files = sorted(
        entry.name
        for entry in path.iterdir()
        if entry.suffix.lower() in IMAGE_SUFFIXES and entry.is_file()
    )
    if not files:
        raise DatasetFormatError(f"{path}: no PNG or JPEG images in this folder.")
    try:
        with Image.open(path / files[0]) as image:
            (width, height), mode = image.size, image.mode
    except _IMAGE_ERRORS as error:
        raise DatasetFormatError(f"{path / files[0]}: not a readable image ({error}).") from error
    channels = 1 if mode in GRAYSCALE_MODES else 3
    return BatchSource(path, "images", len(files), None, (channels, height, width), files=files)


def _image_chunks(source: BatchSource, start: int, stop: int, chunk_rows: int) -> Iterator[Chunk]:
    """Images as uint8 (n, c, h, w): grayscale (c=1) or RGB (c=3) as set by the first image."""
    channels, height, width = source.row_shape
    files = source.files or []
    for lo in range(start, stop, chunk_rows):
        hi = min(lo + chunk_rows, stop)
        X = np.empty((hi - lo, channels, height, width), dtype=np.uint8)
        for i, name in enumerate(files[lo:hi]):
            X[i] = _load_image(source.path / name, "L" if channels == 1 else "RGB", source)
        yield Chunk(_row_ids(lo, hi), X, keys=files[lo:hi])


def _load_image(file: Path, mode: str, source: BatchSource) -> np.ndarray:
    expected = (source.row_shape[2], source.row_shape[1])
    try:
        with Image.open(file) as image:
            size = image.size
            pixels = np.asarray(image.convert(mode), dtype=np.uint8) if size == expected else None
    except _IMAGE_ERRORS as error:
        raise DatasetFormatError(f"{file}: not a readable image ({error}).") from error
    if pixels is None:
        raise DatasetFormatError(
            f"{file}: image size {size} (w, h) differs from {expected}, the size of "
            f"{(source.files or ['?'])[0]}; all images of a folder must have one size."
        )
    return pixels[np.newaxis] if mode == "L" else pixels.transpose(2, 0, 1)

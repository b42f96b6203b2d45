"""CSV inputs: row counting and partition byte ranges by streaming passes, chunked parsing,
and whole-file reads."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomaly.formats.base import (
    BadRow,
    BatchSource,
    Chunk,
    InputFormat,
    Partition,
    next_or_none,
    row_ids,
)
from anomaly.formats.dataset import Dataset, DatasetFormatError, frame_dataset

_BLOCK = 1 << 20  # bytes per block in streaming passes over CSV files
_MAX_HEADER = 1 << 24  # longest CSV header line accepted
_BLANK = b" \t\r"  # a CSV line of only these bytes is blank
_BLANK_OR_NL = np.frombuffer(_BLANK + b"\n", np.uint8)
_CSV_ERRORS = (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError)
_SKIPPED_LINE = re.compile(r"Skipping line (\d+): expected (\d+) fields, saw (\d+)")


def read_csv(path: Path, label_column: str | None = None) -> Dataset:
    """Read a CSV file with a header row; all columns but `label_column` must be numeric."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetFormatError(f"{path}: not a readable CSV file ({error}).") from error
    return frame_dataset(frame, path, label_column)


def open_csv(path: Path) -> BatchSource:
    """The CSV's columns from its header and its row count from one streaming pass."""
    if path.stat().st_size == 0:
        raise DatasetFormatError(f"{path}: empty file (expected a header line).")
    names, data_start = csv_header(path)
    n_rows = sum(len(ends) for ends in _csv_row_ends(path, data_start))
    return BatchSource(path, "csv", n_rows, names, (len(names),))


def csv_header(path: Path) -> tuple[list[str], int]:
    """Column names (as pandas reads them) and the byte offset of the first data line."""
    with open(path, "rb") as file:
        line = file.readline(_MAX_HEADER)
    if not line.endswith(b"\n") and len(line) == _MAX_HEADER:
        raise DatasetFormatError(f"{path}: header line longer than {_MAX_HEADER} bytes.")
    if b"\0" in line or line.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DatasetFormatError(
            f"{path}: the header line holds NUL bytes: not UTF-8 text (UTF-16, or a binary "
            "file?); save the file as UTF-8 CSV."
        )
    if not line.strip(_BLANK + b"\n"):
        raise DatasetFormatError(f"{path}: the first line is blank; expected column names.")
    try:
        names = pd.read_csv(io.BytesIO(line), nrows=0).columns
        raw = pd.read_csv(io.BytesIO(line), header=None, nrows=1, dtype=str).iloc[0]
    except UnicodeDecodeError as error:
        raise DatasetFormatError(
            f"{path}: the header line is not UTF-8 text ({error}); save the file as UTF-8 CSV."
        ) from error
    except _CSV_ERRORS as error:
        raise DatasetFormatError(f"{path}: unreadable CSV header ({error}).") from error
    duplicated = sorted({str(name) for name in raw[raw.duplicated()] if isinstance(name, str)})
    if duplicated:
        raise DatasetFormatError(f"{path}: duplicated column names {duplicated} in the header.")
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


def csv_row_offsets(source: BatchSource, data_start: int, stops: Sequence[int]) -> list[int]:
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


def csv_partitions(source: BatchSource, ranges: list[tuple[int, int]]) -> list[Partition]:
    """Partitions of the row ranges with their byte ranges, found in one streaming pass."""
    data_start = csv_header(source.path)[1]
    ends = csv_row_offsets(source, data_start, [hi for _, hi in ranges])
    starts = [data_start, *ends[:-1]]
    return [
        Partition(i, lo, hi, byte_lo, byte_hi)
        for i, ((lo, hi), byte_lo, byte_hi) in enumerate(zip(ranges, starts, ends, strict=True))
    ]


class _ByteRange(io.RawIOBase):
    """Read-only view of `prefix`, then bytes [start, stop) of a file (stop None: to the end)."""

    def __init__(self, path: Path, start: int, stop: int | None, prefix: bytes = b"") -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._file.seek(start)
        self._left = None if stop is None else stop - start
        self._prefix = prefix

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            count = min(len(view), len(self._prefix))
            view[:count], self._prefix = self._prefix[:count], self._prefix[count:]
            return count
        if self._left is not None:
            view = view[: self._left]
        count = self._file.readinto(view) or 0
        if self._left is not None:
            self._left -= count
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


def csv_chunks(
    source: BatchSource, partition: Partition | None, chunk_rows: int, names: list[str]
) -> Iterator[Chunk]:
    """Chunks of the selected columns as float64. Non-numeric cells and lines with more fields
    than the header come back in `Chunk.rejected` (the policy step raises or drops them).

    pandas takes the field count of a stream's first line as the norm (a longer first line
    would silently truncate every line up to its length), so the stream starts with a
    synthetic line of exactly the header's field count, dropped after parsing.
    """
    start, stop = source.span(partition)
    if start == stop:
        return
    data_start = csv_header(source.path)[1]
    byte_start, byte_stop = data_start, None
    if partition is not None:
        byte_start, byte_stop = partition.byte_start, partition.byte_stop
        if byte_start is None or byte_stop is None:
            byte_start, byte_stop = csv_row_offsets(source, data_start, [start, stop])
    n_columns = len(source.columns or [])
    rows = _RowIds(_LineLocator(source.path, byte_start, start), start, n_columns)
    norm = ",".join(['""'] * n_columns).encode() + b"\n"
    with (
        io.BufferedReader(_ByteRange(source.path, byte_start, byte_stop, norm), 1 << 20) as handle,
        rows.locator,
        pd.read_csv(
            handle,
            header=None,
            names=source.columns,
            index_col=False,
            chunksize=chunk_rows,
            on_bad_lines="warn",
            encoding_errors="replace",
        ) as reader,
    ):
        first = True
        while (frame := _next_frame(reader, source.path, rows)) is not None:
            if first:
                frame, first = frame.iloc[1:], False
            ids, ragged = rows.take(len(frame))
            if len(frame) or ragged:
                X, non_numeric = _frame_X(frame, names, ids)
                yield Chunk(ids, X, rejected=(*ragged, *non_numeric))
    if rows.pending:
        yield Chunk(row_ids(0, 0), np.empty((0, len(names))), rejected=rows.take(0, final=True)[1])
    if rows.next_row != stop:
        raise DatasetFormatError(
            f"{source.path}: rows [{start}, {stop}) parsed as {rows.next_row - start} rows; the "
            "file changed since it was opened, or has quoted fields spanning lines (unsupported)."
        )


def _next_frame(reader: Any, path: Path, rows: _RowIds) -> pd.DataFrame | None:
    """The next frame; the lines pandas skipped for extra fields go to `rows`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = next_or_none(reader, path, "CSV")
    for warning in caught:
        found = _SKIPPED_LINE.findall(str(warning.message))
        if isinstance(warning.message, pd.errors.ParserWarning) and found:
            # line numbers count the synthetic first line
            rows.add_ragged([(int(line) - 1, int(fields)) for line, _, fields in found])
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return frame


class _LineLocator:
    """Row ids of physical lines (1-based, counted from a partition's first byte), found by
    reading forward only: lines must be asked for in increasing order."""

    def __init__(self, path: Path, byte_start: int, first_row: int) -> None:
        self._path, self._byte_start = path, byte_start
        self._file: Any = None
        self._line, self._row = 0, first_row  # lines read; row id of the next non-blank line

    def row_of(self, line: int) -> int:
        if self._file is None:
            self._file = open(self._path, "rb")  # noqa: SIM115 - closed in __exit__
            self._file.seek(self._byte_start)
        while self._line < line - 1:
            text = self._file.readline()
            if not text:
                raise DatasetFormatError(f"{self._path}: the file changed while being read.")
            self._line += 1
            self._row += bool(text.strip(_BLANK + b"\n"))
        return self._row

    def __enter__(self) -> _LineLocator:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


class _RowIds:
    """Hands out the row ids of parsed rows, stepping over the lines pandas skipped."""

    def __init__(self, locator: _LineLocator, first_row: int, n_columns: int) -> None:
        self.locator, self.next_row, self.n_columns = locator, first_row, n_columns
        self._ragged: dict[int, BadRow] = {}

    @property
    def pending(self) -> bool:
        return bool(self._ragged)

    def add_ragged(self, lines: list[tuple[int, int]]) -> None:
        for line, fields in lines:
            row = self.locator.row_of(line)
            reason = f"line has {fields} fields but the header has {self.n_columns}"
            self._ragged[row] = BadRow(row, None, reason)

    def take(self, n: int, *, final: bool = False) -> tuple[np.ndarray, tuple[BadRow, ...]]:
        """The ids of the next `n` parsed rows and the skipped lines among (or, when `final`,
        after) them."""
        if not self._ragged:  # the common case: consecutive ids
            self.next_row += n
            return row_ids(self.next_row - n, self.next_row), ()
        ids, skipped = [], []
        while len(ids) < n or (final and self._ragged):
            if self.next_row in self._ragged:
                skipped.append(self._ragged.pop(self.next_row))
            else:
                ids.append(self.next_row)
            self.next_row += 1
        return np.asarray(ids, dtype=np.int64), tuple(skipped)


def _frame_X(
    frame: pd.DataFrame, names: list[str], ids: np.ndarray
) -> tuple[np.ndarray, list[BadRow]]:
    """The selected columns as float64 (NaN where a cell is not a number) and a `BadRow` for
    each non-numeric cell."""
    bad = []
    for name in dict.fromkeys(names):
        if not pd.api.types.is_numeric_dtype(frame[name]):
            values = pd.to_numeric(frame[name], errors="coerce")
            wrong = np.flatnonzero(values.isna().to_numpy() & frame[name].notna().to_numpy())
            bad += [BadRow(int(ids[i]), name, _non_numeric(frame[name].iloc[i])) for i in wrong]
            frame[name] = values
    return frame[names].to_numpy(dtype=np.float64, na_value=np.nan), bad


def _non_numeric(value: object) -> str:
    text = f"non-numeric value {value!r}"
    return text + " (bytes that are not UTF-8 show as \ufffd)" if "\ufffd" in str(value) else text


CSV = InputFormat(
    "csv",
    "CSV",
    open_csv,
    csv_chunks,
    read_csv,
    has_column_names=True,
    partitions=csv_partitions,
)

"""CSV inputs: row counting and partition byte ranges by streaming passes, chunked parsing."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomaly.batchio.base import BatchSource, Chunk, Partition, next_or_none, row_ids
from anomaly.data.readers import DatasetFormatError

_BLOCK = 1 << 20  # bytes per block in streaming passes over CSV files
_MAX_HEADER = 1 << 24  # longest CSV header line accepted
_BLANK = b" \t\r"  # a CSV line of only these bytes is blank
_BLANK_OR_NL = np.frombuffer(_BLANK + b"\n", np.uint8)
_CSV_ERRORS = (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError)


def open_csv(path: Path) -> BatchSource:
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


def csv_chunks(
    source: BatchSource, partition: Partition | None, stop: int, chunk_rows: int, names: list[str]
) -> Iterator[Chunk]:
    start = 0 if partition is None else partition.start
    if start == stop:
        return
    data_start = csv_header(source.path)[1]
    byte_start, byte_stop = data_start, None
    if partition is not None:
        byte_start, byte_stop = partition.byte_start, partition.byte_stop
        if byte_start is None or byte_stop is None:
            byte_start, byte_stop = csv_row_offsets(source, data_start, [start, stop])
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
            while (frame := next_or_none(reader, source.path, "CSV")) is not None:
                yield Chunk(row_ids(row, row + len(frame)), _frame_X(frame, names, source, row))
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

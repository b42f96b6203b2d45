"""Row-level problems of a batch input and the policy for them: fail, or skip and report.

A row is bad when a cell the model needs cannot be parsed as a number, is missing (NaN or an
empty cell), is infinite, or lies outside the float32 range the models compute in
(|x| > 3.4028235e38 would become inf there), or when a CSV line has more fields than the
header. Under `bad_rows="fail"` the first bad row (in file order) raises `DatasetFormatError`
naming the file, the 0-based data row and the column; under `"skip"` bad rows are dropped from
the chunk and listed in `Chunk.rejected`, one `BadRow` per bad cell (or per bad line), while the
kept rows keep their original row ids. Problems of the whole file (unreadable, truncated,
missing columns, no data rows) always fail.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from anomaly.formats.base import BadRow, Chunk
from anomaly.formats.dataset import DatasetFormatError

BAD_ROW_POLICIES = ("fail", "skip")
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_policy(bad_rows: str) -> str:
    """`bad_rows` itself when it names a policy, else a ValueError listing the policies."""
    if bad_rows not in BAD_ROW_POLICIES:
        raise ValueError(f"bad_rows must be one of {list(BAD_ROW_POLICIES)}, got {bad_rows!r}")
    return bad_rows


def value_problems(
    X: np.ndarray,
    row_ids: np.ndarray,
    columns: list[str],
    known: tuple[BadRow, ...],
    *,
    first_only: bool = False,
) -> list[BadRow]:
    """A `BadRow` for each missing, infinite or out-of-float32-range cell of X, in row-major
    order (pixels of image rows count as columns X[j]), except cells already in `known`; only
    the first one when `first_only`."""
    if X.dtype.kind != "f" or X.size == 0:
        return []  # integer arrays (e.g. uint8 images) are always finite and in range
    flat = X.reshape(len(X), -1)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(flat) <= FLOAT32_MAX)
    for bad_row in known:
        if bad_row.column in columns:
            bad[np.searchsorted(row_ids, bad_row.row_id), columns.index(bad_row.column)] = False
    if not bad.any():
        return []
    if first_only:
        cells = [np.unravel_index(np.argmax(bad), bad.shape)]
    else:
        cells = list(zip(*np.nonzero(bad), strict=True))
    return [
        BadRow(int(row_ids[i]), column_name(j, columns), describe(float(flat[i, j])))
        for i, j in cells
    ]


def column_name(j: int, columns: list[str]) -> str:
    """The name of column j: from `columns`, else X[j] (e.g. a pixel of an image row)."""
    return columns[j] if j < len(columns) else f"X[{j}]"


def describe(value: float) -> str:
    """Why a numeric cell is bad, for messages and the rejected-rows report."""
    if np.isnan(value):
        return "missing value (NaN or an empty cell)"
    if np.isinf(value):
        return f"infinite value {value}"
    return f"value {value:.6g} outside the float32 range the models compute in (|x| <= 3.4e+38)"


def apply_policy(chunk: Chunk, columns: list[str], path: Path, bad_rows: str) -> Chunk:
    """The chunk with its bad rows found: the first one raised under "fail"; under "skip"
    dropped and listed in `rejected` (sorted by row id, then column)."""
    fail = bad_rows == "fail"
    found = value_problems(chunk.X, chunk.row_ids, columns, chunk.rejected, first_only=fail)
    rejected = sorted(
        [*chunk.rejected, *found],
        key=lambda bad_row: (bad_row.row_id, columns_order(bad_row.column, columns)),
    )
    if not rejected:
        return chunk
    if fail:
        raise DatasetFormatError(fail_message(rejected[0], path))
    keep = ~np.isin(chunk.row_ids, [bad_row.row_id for bad_row in rejected])
    keys = chunk.keys
    if keys is not None:
        keys = [key for key, kept in zip(keys, keep, strict=True) if kept]
    return dataclasses.replace(
        chunk, row_ids=chunk.row_ids[keep], X=chunk.X[keep], keys=keys, rejected=tuple(rejected)
    )


def columns_order(column: str | None, columns: list[str]) -> int:
    """Where a bad row's column sorts: by its place in `columns`; whole-row problems first."""
    return columns.index(column) if column in columns else -1


def fail_message(bad_row: BadRow, path: Path) -> str:
    """The error for the first bad row: the file, the row, the column, what is wrong."""
    where = f"data row {bad_row.row_id} (0-based, header not counted)"
    if bad_row.column is not None:
        where = f"column {bad_row.column!r} at {where}"
    hint = "; skip and report such rows with bad_rows='skip' (genad score --bad-rows skip)"
    return f"{path}: {bad_row.reason} in {where}{hint}."

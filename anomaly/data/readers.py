"""Whole-file reads of local inputs: the formats of `anomaly.formats` (CSV, Parquet, npz, image
folders) chosen by suffix, plus IDX files (optionally gzipped), named by 'idx' in their name.

Every reader returns a `Dataset`; problems with the file raise `DatasetFormatError` (a
ValueError) naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from anomaly.errors import UserInputError
from anomaly.formats import FILE_FORMATS, format_for
from anomaly.formats.dataset import (
    Dataset,
    DatasetFormatError,
    DatasetNotFoundError,
    reject_label_column,
    stem,
    to_path,
)
from anomaly.formats.npzfiles import read_npz

__all__ = [
    "Dataset",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "UnknownDatasetError",
    "read_idx",
    "read_idx_dataset",
    "read_npz",
    "read_path",
    "to_path",
]

# IDX type codes (third magic byte) -> big-endian numpy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class UnknownDatasetError(UserInputError):
    """A dataset name is not in the catalog."""


def read_path(path: Path, *, label_column: str | None = None) -> Dataset:
    """Read a file or image folder, choosing the reader from its suffix or name.

    `label_column` names the label column of a CSV or Parquet file, or the label key of an npz
    file (default "y"); IDX files and image folders take none.
    """
    if not path.exists():
        raise DatasetNotFoundError(f"No such file or folder: {path}")
    fmt = format_for(path)
    if fmt is not None:
        return fmt.read(path, label_column)
    if "idx" in path.name.lower():
        return read_idx_dataset(path, label_column)
    raise DatasetFormatError(
        f"{path}: unsupported file type; expected an IDX file (name containing 'idx'), "
        f"{', '.join(FILE_FORMATS)} or a folder of images."
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX array (gzipped when the file starts with the gzip magic bytes)."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise DatasetFormatError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()}).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header ({len(raw)} bytes).")
    shape = tuple(int(size) for size in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetFormatError(
            f"{path}: truncated or oversized IDX data: shape {shape} needs {expected} bytes, "
            f"found {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_dataset(path: Path, label_column: str | None = None) -> Dataset:
    """Read IDX images (n, h, w) as (n, 1, h, w), with labels from a sibling labels file."""
    reject_label_column(label_column, path)
    X = read_idx(path)
    if X.ndim == 1:
        raise DatasetFormatError(f"{path}: holds a 1-D array (labels?); load the images file.")
    if X.ndim == 3:
        X = X[:, np.newaxis]
    labels = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
    y = read_idx(labels).astype(np.int64) if labels != path and labels.exists() else None
    return Dataset(X, y, stem(path), kind="image" if X.ndim == 4 else "tabular")


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise DatasetFormatError(f"{path}: corrupt gzip data ({error}).") from error

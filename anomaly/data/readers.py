"""Readers for local files: IDX (optionally gzipped), npz, CSV, Parquet and image folders.

Every reader returns a `Dataset`; problems with the file raise `DatasetFormatError` (a
ValueError) naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAYSCALE_MODES = ("1", "L", "LA")
# IDX type codes (third magic byte) -> big-endian numpy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file or folder is missing (and cannot be downloaded)."""


class UnknownDatasetError(ValueError):
    """A dataset name is not in the catalog."""


class DatasetFormatError(ValueError):
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


def read_path(path: Path, *, label_column: str | None = None) -> Dataset:
    """Read a file or image folder, choosing the reader from its suffix or name.

    `label_column` names the label column of a CSV or Parquet file, or the label key of an npz
    file (default "y"); IDX files and image folders take none.
    """
    if not path.exists():
        raise DatasetNotFoundError(f"No such file or folder: {path}")
    reader = _reader_for(path)
    return reader(path, label_column)


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
    _reject_label_column(label_column, path)
    X = read_idx(path)
    if X.ndim == 1:
        raise DatasetFormatError(f"{path}: holds a 1-D array (labels?); load the images file.")
    if X.ndim == 3:
        X = X[:, np.newaxis]
    labels = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
    y = read_idx(labels).astype(np.int64) if labels != path and labels.exists() else None
    return Dataset(X, y, _stem(path), kind="image" if X.ndim == 4 else "tabular")


def read_npz(path: Path, label_column: str | None = None) -> Dataset:
    """Read an npz file with array X and optional labels (key `label_column`, default "y")."""
    label_key = label_column or "y"
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise DatasetFormatError(f"{path}: not a valid .npz file ({error}).") from error
    if "X" not in arrays:
        raise DatasetFormatError(f"{path}: no array 'X' in the npz file (keys: {sorted(arrays)}).")
    if label_column is not None and label_key not in arrays:
        raise DatasetFormatError(f"{path}: no label array {label_key!r} (keys: {sorted(arrays)}).")
    X = arrays["X"]
    X = X[:, np.newaxis] if X.ndim == 3 else X
    y = _labels(arrays[label_key]) if label_key in arrays else None
    if X.ndim == 4:
        return Dataset(X, y, _stem(path), kind="image")
    return Dataset(X.astype(np.float64), y, _stem(path))


def read_csv(path: Path, label_column: str | None = None) -> Dataset:
    """Read a CSV file with a header row; all columns but `label_column` must be numeric."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetFormatError(f"{path}: not a readable CSV file ({error}).") from error
    return _frame_dataset(frame, path, label_column)


def read_parquet(path: Path, label_column: str | None = None) -> Dataset:
    """Read a Parquet file; all columns but `label_column` must be numeric."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise DatasetFormatError(f"{path}: not a readable Parquet file ({error}).") from error
    return _frame_dataset(frame, path, label_column)


def read_image_folder(path: Path, label_column: str | None = None) -> Dataset:
    """Read the PNG/JPEG files of a folder, sorted by name, as uint8 (n, c, h, w).

    All images must have the same size; they are read as grayscale (c=1) when all of them are
    grayscale, otherwise as RGB (c=3, alpha dropped).
    """
    _reject_label_column(label_column, path)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetFormatError(f"{path}: no PNG or JPEG images in this folder.")
    images = [_open_image(file) for file in files]
    for file, image in zip(files, images, strict=True):
        if image.size != images[0].size:
            raise DatasetFormatError(
                f"{path}: images differ in size: {files[0].name} is {images[0].size} (w, h) "
                f"but {file.name} is {image.size}."
            )
    mode = "L" if all(image.mode in GRAYSCALE_MODES for image in images) else "RGB"
    X = np.stack([np.asarray(image.convert(mode), dtype=np.uint8) for image in images])
    X = X[:, np.newaxis] if mode == "L" else X.transpose(0, 3, 1, 2)
    return Dataset(np.ascontiguousarray(X), None, path.name, kind="image")


FILE_READERS: dict[str, Callable[[Path, str | None], Dataset]] = {
    ".npz": read_npz,
    ".csv": read_csv,
    ".parquet": read_parquet,
}


def _reader_for(path: Path) -> Callable[[Path, str | None], Dataset]:
    if path.is_dir():
        return read_image_folder
    if path.suffix.lower() in FILE_READERS:
        return FILE_READERS[path.suffix.lower()]
    if "idx" in path.name.lower():
        return read_idx_dataset
    raise DatasetFormatError(
        f"{path}: unsupported file type; expected an IDX file (name containing 'idx'), "
        f"{', '.join(FILE_READERS)} or a folder of images."
    )


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise DatasetFormatError(f"{path}: corrupt gzip data ({error}).") from error


def _frame_dataset(frame: pd.DataFrame, path: Path, label_column: str | None) -> Dataset:
    y = None
    if label_column is not None:
        if label_column not in frame.columns:
            raise DatasetFormatError(
                f"{path}: no label column {label_column!r} (columns: {list(frame.columns)})."
            )
        y = _labels(frame.pop(label_column).to_numpy())
    bad = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DatasetFormatError(f"{path}: non-numeric columns {bad}; encode or drop them.")
    X = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    return Dataset(X, y, _stem(path), feature_names=[str(c) for c in frame.columns])


def _labels(y: np.ndarray) -> np.ndarray:
    """Labels as a 1-D array; integer and boolean labels become int64."""
    y = np.asarray(y).reshape(-1)
    return y.astype(np.int64) if y.dtype.kind in "biu" else y


def _open_image(file: Path) -> Image.Image:
    try:
        with Image.open(file) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetFormatError(f"{file}: not a readable image ({error}).") from error


def _reject_label_column(label_column: str | None, path: Path) -> None:
    if label_column is not None:
        raise ValueError(
            f"{path}: label_column applies to CSV, Parquet and npz files only, "
            f"not to IDX files or image folders."
        )


def _stem(path: Path) -> str:
    return path.name.split(".")[0]

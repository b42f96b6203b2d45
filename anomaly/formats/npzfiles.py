"""npz inputs: the X.npy member streamed through the zip decompressor, chunk by chunk, and
whole-file reads of X and its labels."""

from __future__ import annotations

import contextlib
import math
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from anomaly.formats.base import BatchSource, Chunk, InputFormat, Partition, row_ids
from anomaly.formats.dataset import Dataset, DatasetFormatError, labels, stem


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
    y = labels(arrays[label_key]) if label_key in arrays else None
    if X.ndim == 4:
        return Dataset(X, y, stem(path), kind="image")
    return Dataset(X.astype(np.float64), y, stem(path))


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
    if dtype.hasobject:  # refused from the header alone: pickled data is never loaded
        raise DatasetFormatError(
            f"{path}: X has object dtype {dtype} (pickled Python objects, never loaded); "
            "save a numeric array."
        )
    if dtype.kind not in "biuf":
        raise DatasetFormatError(
            f"{path}: X has non-numeric dtype {dtype}; save a numeric (integer or float) array."
        )
    if len(shape) not in (2, 3, 4):
        raise DatasetFormatError(f"{path}: X has shape {shape}; expected 2-D, 3-D or 4-D.")
    if fortran_order and len(shape) != 2:
        raise DatasetFormatError(
            f"{path}: X ({len(shape)}-D) is stored in Fortran order; "
            "save np.ascontiguousarray(X) instead."
        )
    return tuple(shape), dtype, bool(fortran_order)


def open_npz(path: Path) -> BatchSource:
    """X's row count and row shape (3-D X gains a channel axis) from the .npy header."""
    archive, info = _open_npz_member(path)
    with archive, archive.open(info) as member:
        shape, _, _ = _npy_header(member, path)
    row_shape = (1, *shape[1:]) if len(shape) == 3 else shape[1:]
    return BatchSource(path, "npz", shape[0], None, row_shape)


def npz_chunks(
    source: BatchSource, partition: Partition | None, chunk_rows: int, columns: list[str]
) -> Iterator[Chunk]:
    """Rows of X as read from the member stream: 2-D X as float64, 3-D/4-D X in its own dtype
    (native byte order). `columns` is unused: npz rows have no column names."""
    start, stop = source.span(partition)
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
                data = read_exact(raw, (hi - lo) * row_bytes, source.path)
                X = np.frombuffer(data, dtype).reshape(hi - lo, *source.row_shape)
                yield Chunk(row_ids(lo, hi), X.astype(out_dtype))


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
        skip(member, start * dtype.itemsize, source.path)
        data = read_exact(member, (stop - start) * dtype.itemsize, source.path)
        block[:, column] = np.frombuffer(data, dtype)
        skip(member, (n - stop) * dtype.itemsize, source.path)
    for lo in range(start, stop, chunk_rows):
        hi = min(lo + chunk_rows, stop)
        yield Chunk(row_ids(lo, hi), block[lo - start : hi - start])


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
    skip(member, position - member.tell(), path)
    return contextlib.nullcontext(member)


def read_exact(stream: Any, size: int, path: Path) -> bytes:
    """Exactly `size` bytes of X.npy; corrupt or missing data is a DatasetFormatError."""
    try:
        data = stream.read(size)
    except (zlib.error, zipfile.BadZipFile, EOFError, OSError) as error:
        raise DatasetFormatError(f"{path}: corrupt X.npy data ({error}).") from error
    if len(data) < size:
        raise DatasetFormatError(f"{path}: X.npy is truncated.")
    return data


def skip(stream: Any, size: int, path: Path) -> None:
    """Read and discard `size` bytes of X.npy, 1 MiB at a time."""
    while size > 0:
        size -= len(read_exact(stream, min(size, 1 << 20), path))


NPZ = InputFormat("npz", "npz", open_npz, npz_chunks, read_npz, holds_images=True)

"""Image-folder inputs: one file per row, sorted by name; only a chunk's files are opened when
streaming, all of them in a whole-folder read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from anomaly.formats.base import BadRow, BatchSource, Chunk, InputFormat, Partition, row_ids
from anomaly.formats.dataset import Dataset, DatasetFormatError, reject_label_column

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAYSCALE_MODES = ("1", "L", "LA")
_IMAGE_ERRORS = (UnidentifiedImageError, OSError, Image.DecompressionBombError)


def read_image_folder(path: Path, label_column: str | None = None) -> Dataset:
    """Read the PNG/JPEG files of a folder, sorted by name, as uint8 (n, c, h, w).

    All images must have the same size; they are read as grayscale (c=1) when all of them are
    grayscale, otherwise as RGB (c=3, alpha dropped).
    """
    reject_label_column(label_column, path)
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


def _open_image(file: Path) -> Image.Image:
    try:
        with Image.open(file) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetFormatError(f"{file}: not a readable image ({error}).") from error


def open_images(path: Path) -> BatchSource:
    """The folder's image files and, from the first one, the row shape (c, h, w)."""
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


def image_chunks(
    source: BatchSource, partition: Partition | None, chunk_rows: int, columns: list[str]
) -> Iterator[Chunk]:
    """Images as uint8 (n, c, h, w): grayscale (c=1) or RGB (c=3) as set by the first image.
    `columns` is unused: image rows have no column names."""
    start, stop = source.span(partition)
    channels, height, width = source.row_shape
    files = source.files or []
    for lo in range(start, stop, chunk_rows):
        hi = min(lo + chunk_rows, stop)
        X = np.zeros((hi - lo, channels, height, width), dtype=np.uint8)
        bad = []  # an unreadable or odd-sized image is a bad row: the policy fails or skips it
        for i, name in enumerate(files[lo:hi]):
            try:
                X[i] = _load_image(source.path / name, "L" if channels == 1 else "RGB", source)
            except DatasetFormatError as error:
                bad.append(BadRow(lo + i, None, f"image {name}: {error}"))
        yield Chunk(row_ids(lo, hi), X, keys=files[lo:hi], rejected=tuple(bad))


def _load_image(file: Path, mode: str, source: BatchSource) -> np.ndarray:
    expected = (source.row_shape[2], source.row_shape[1])
    try:
        with Image.open(file) as image:
            size = image.size
            pixels = np.asarray(image.convert(mode), dtype=np.uint8) if size == expected else None
    except _IMAGE_ERRORS as error:
        raise DatasetFormatError(f"not a readable image ({error})") from error
    if pixels is None:
        raise DatasetFormatError(
            f"image size {size} (w, h) differs from {expected}, the size of "
            f"{(source.files or ['?'])[0]}: all images of a folder must have one size"
        )
    return pixels[np.newaxis] if mode == "L" else pixels.transpose(2, 0, 1)


IMAGES = InputFormat(
    "images",
    "image folder",
    open_images,
    image_chunks,
    read_image_folder,
    per_row_files=True,
    holds_images=True,
)

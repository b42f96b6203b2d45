"""Image-folder inputs: one file per row, sorted by name; only a chunk's files are opened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from anomaly.batchio.base import BadRow, BatchSource, Chunk, row_ids
from anomaly.data.readers import GRAYSCALE_MODES, IMAGE_SUFFIXES, DatasetFormatError

_IMAGE_ERRORS = (UnidentifiedImageError, OSError, Image.DecompressionBombError)


def open_images(path: Path) -> BatchSource:
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


def image_chunks(source: BatchSource, start: int, stop: int, chunk_rows: int) -> Iterator[Chunk]:
    """Images as uint8 (n, c, h, w): grayscale (c=1) or RGB (c=3) as set by the first image."""
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

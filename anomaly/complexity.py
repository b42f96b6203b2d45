"""Input complexity: the code length of a lossless compressor, in bits per image.

Serra et al. (2020) correct a likelihood by the length L(x) a generic compressor needs for the
same 8-bit data: S(x) = -log2 p(x) - L(x) is large for inputs the model codes worse than
the compressor does. Both terms must be code lengths of the same symbols, so the model needs
a discrete likelihood (see `generative.vae.likelihoods`).
"""

from __future__ import annotations

import bz2
import io
import zlib
from collections.abc import Callable

import numpy as np


def _png(image: np.ndarray) -> bytes:
    from PIL import Image  # here: only detectors with the complexity correction use it

    channels = image.shape[0]
    if channels not in (1, 3):
        raise ValueError(f"the png compressor takes 1 or 3 channels, got {channels}")
    pixels = image[0] if channels == 1 else np.moveaxis(image, 0, -1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


COMPRESSORS: dict[str, Callable[[np.ndarray], bytes]] = {
    "png": _png,
    "zlib": lambda image: zlib.compress(image.tobytes(), 9),
    "bz2": lambda image: bz2.compress(image.tobytes(), 9),
}


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] (values k/255) back to uint8 (n, c, h, w)."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected images (n, c, h, w), got shape {images.shape}")
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def code_length_bits(images: np.ndarray, compressor: str = "png") -> np.ndarray:
    """Compressed size in bits of each uint8 image (n, c, h, w), as float64 (n,)."""
    if compressor not in COMPRESSORS:
        raise ValueError(f"unknown compressor {compressor!r}; choose one of {sorted(COMPRESSORS)}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"code_length_bits needs uint8 images (n, c, h, w), got {images.dtype} {images.shape}"
        )
    encode = COMPRESSORS[compressor]
    return np.array([8.0 * len(encode(image)) for image in images], dtype=np.float64)

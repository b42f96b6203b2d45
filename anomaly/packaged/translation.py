"""A trained CycleGAN packaged for translation: the images it maps, the pixel columns a frame
of them has, and the batch -> translated batch contract every consumer sees.

The package is a folder: the CycleGAN's own files (state_dict + JSON, `generative.registry`)
plus `translator_info.json` (the pixel column names, the image shape, and where the model came
from: data set, transform, run). Nothing is pickled. The MLflow pyfunc model,
`translate_flow` and the CLI all load it with `load_translator`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from anomaly.errors import UserInputError
from anomaly.packaged.files import read_packaged
from anomaly.packaged.scoring import default_feature_names
from anomaly.validation import missing_columns_message
from generative.cyclegan.model import DIRECTIONS, CycleGAN
from generative.registry import atomic_directory, write_model_files

TRANSLATOR_INFO_FILE = "translator_info.json"
DIRECTION_COLUMN = "direction"
DEFAULT_DIRECTION = "a_to_b"
MAX_ROWS_PER_CALL = 10_000


class TranslationInputError(UserInputError):
    """Images to translate are malformed: wrong shape or columns, values outside [0, 1], NaN,
    or an unknown direction."""


@dataclass
class TranslatorBundle:
    """A CycleGAN with the pixel column names of its images and where it came from."""

    model: CycleGAN
    feature_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images of both domains."""
        return tuple(self.model.config.image_shape)  # type: ignore[return-value]

    def translate(self, images: np.ndarray, direction: str = DEFAULT_DIRECTION) -> np.ndarray:
        """Translate images given as (n, C, H, W) or flattened (n, C*H*W) rows: 8-bit values
        (uint8) or floats in [0, 1]. Returns float32 (n, C, H, W) in [0, 1]."""
        check_direction(direction)
        x = as_unit_images(images, self.image_shape)
        return self.model.translate(torch.from_numpy(x), direction).numpy()

    def translate_frame(self, frame: pd.DataFrame, direction: str | None = None) -> pd.DataFrame:
        """One translated row per input row, in order: the pixel columns (doubles in [0, 1]).

        The frame holds the pixel columns (`pixel0..`, (c, h, w) order, values in [0, 1]) and
        optionally a `direction` column ("a_to_b" or "b_to_a" per row); without it every row
        goes `direction` (default "a_to_b"). At most `MAX_ROWS_PER_CALL` rows per call."""
        if len(frame) == 0:
            raise TranslationInputError("no rows to translate: give at least one image row")
        if len(frame) > MAX_ROWS_PER_CALL:
            raise TranslationInputError(
                f"{len(frame)} rows; at most {MAX_ROWS_PER_CALL} per call (split the input)"
            )
        if not set(self.feature_names) <= {str(c) for c in frame.columns}:
            raise TranslationInputError(
                f"{missing_columns_message(self.feature_names, frame.columns)}; expected "
                f"pixel0..pixel{len(self.feature_names) - 1} in [0, 1]"
            )
        pixels = frame[self.feature_names]
        if not all(pd.api.types.is_numeric_dtype(t) for t in pixels.dtypes):
            raise TranslationInputError("pixel columns must be numeric values in [0, 1]")
        rows = pixels.to_numpy(dtype=np.float64)
        directions = row_directions(frame, direction, len(frame))
        out = np.empty((len(frame), len(self.feature_names)), dtype=np.float64)
        for name in DIRECTIONS:
            chosen = directions == name
            if chosen.any():
                out[chosen] = self.translate(rows[chosen], name).reshape(int(chosen.sum()), -1)
        return pd.DataFrame(out, columns=self.feature_names)


def check_direction(direction: Any) -> str:
    """`direction` when it is "a_to_b" or "b_to_a", else a TranslationInputError."""
    if direction not in DIRECTIONS:
        raise TranslationInputError(
            f"direction must be one of {sorted(DIRECTIONS)}, got {direction!r}"
        )
    return direction


def row_directions(frame: pd.DataFrame, default: str | None, n: int) -> np.ndarray:
    """Each row's direction: the `direction` column when present, else `default`."""
    if DIRECTION_COLUMN not in frame.columns:
        return np.full(n, check_direction(default or DEFAULT_DIRECTION), dtype=object)
    values = frame[DIRECTION_COLUMN].to_numpy(dtype=object)
    bad = sorted({str(v) for v in values if v not in DIRECTIONS})
    if bad:
        raise TranslationInputError(
            f"direction column values must be one of {sorted(DIRECTIONS)}, got {bad[:5]}"
        )
    return values


def as_unit_images(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """float32 (n, C, H, W) in [0, 1] from uint8 or [0, 1] float images or flattened rows;
    a TranslationInputError names what is wrong."""
    array = np.asarray(images)
    size = int(np.prod(shape))
    if array.ndim == 2 and array.shape[1] == size:
        array = array.reshape(len(array), *shape)
    if array.ndim != 4 or tuple(array.shape[1:]) != tuple(shape):
        raise TranslationInputError(
            f"images must be (n, {', '.join(map(str, shape))}) or (n, {size}) rows, "
            f"got shape {array.shape}"
        )
    if len(array) == 0:
        raise TranslationInputError("no images to translate")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise TranslationInputError(f"pixel values must be numbers, got dtype {array.dtype}")
    unit = array.astype(np.float32)
    bad = int((~np.isfinite(unit)).sum())
    if bad:
        raise TranslationInputError(f"{bad} pixel values are NaN or infinite")
    low, high = float(unit.min()), float(unit.max())
    if low < 0.0 or high > 1.0:
        raise TranslationInputError(
            f"pixel values must lie in [0, 1] (divide 8-bit values by 255); got [{low:g}, {high:g}]"
        )
    return unit


def save_translator(
    model: CycleGAN, path: str | os.PathLike, *, info: dict[str, Any] | None = None
) -> Path:
    """Write the translator folder atomically (the CycleGAN's files and translator_info.json);
    return its path."""
    shape = tuple(model.config.image_shape)
    with atomic_directory(path) as staging:
        write_model_files(model.cpu(), staging)
        payload = {
            "feature_names": default_feature_names(shape),
            "image_shape": list(shape),
            "info": info or {},
        }
        (staging / TRANSLATOR_INFO_FILE).write_text(json.dumps(payload, indent=2))
    return Path(path)


def load_translator(path: str | os.PathLike) -> TranslatorBundle:
    """Load a folder written by `save_translator` (on the CPU, in eval mode)."""
    folder = Path(path)
    model, payload = read_packaged(folder, CycleGAN, "a CycleGAN translator", TRANSLATOR_INFO_FILE)
    return TranslatorBundle(model, list(payload["feature_names"]), dict(payload.get("info", {})))

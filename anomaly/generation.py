"""A trained GAN packaged for generation: its sample columns, its classes, the scaler that takes
table rows back to data scale, and the request -> samples contract every consumer sees.

The package is a folder: the GAN's own files (state_dict + JSON, `generative.registry`), plus
`generator_info.json` (feature names, class labels, where the training data came from) and, for
tables, `scaler.json` (the per-feature mean and standard deviation the GAN was trained under).
Nothing is pickled. The MLflow pyfunc model, `synthesize_flow` and the CLI all load it with
`load_generator`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from anomaly.preprocessing import Standardizer
from generative.gan import GAN
from generative.registry import atomic_directory, read_model_files, write_model_files

GENERATOR_INFO_FILE = "generator_info.json"
SCALER_FILE = "scaler.json"
MAX_SAMPLES_PER_CALL = 10_000
CHUNK_ROWS = 1024  # samples decoded per forward pass (the same for every consumer)
REQUIRED_REQUEST_COLUMNS = ("n", "seed")
OPTIONAL_REQUEST_COLUMNS = ("class", "truncation")
SAMPLE_COLUMNS = ("request", "class", "seed", "sample_index")
MAX_SEED = 2**63 - 1


class RequestError(ValueError):
    """A generation request is malformed: a missing column, a bad n, seed, class or
    truncation."""


@dataclass
class GeneratorBundle:
    """A GAN with the names of its sample columns, the class labels its class indices stand
    for (empty when unconditional) and, for tables, the scaler back to data scale."""

    gan: GAN
    feature_names: list[str]
    classes: list[int] = field(default_factory=list)
    scaler: Standardizer | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def conditional(self) -> bool:
        """True when every sample is drawn for a class."""
        return bool(self.classes)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (d,) for tables, (c, h, w) for images."""
        return tuple(self.gan.config.data_shape)

    def class_index(self, label: int | None) -> int | None:
        """The GAN's index for a class label; None for an unconditional model."""
        if not self.conditional:
            if label is not None:
                raise RequestError(
                    f"this generator is unconditional: class must be empty, got {label}"
                )
            return None
        if label is None:
            raise RequestError(
                f"this generator is class-conditional: give a class of {self.classes}"
            )
        if label not in self.classes:
            raise RequestError(f"unknown class {label}; this generator knows {self.classes}")
        return self.classes.index(label)

    def chunks(
        self, n: int, label: int | None, seed: int, truncation: float | None = None
    ) -> Iterator[np.ndarray]:
        """The n samples of one request, `CHUNK_ROWS` at a time, at data scale: images in
        [0, 1] (float32, (k, c, h, w)), table rows in the training units (float64, (k, d)).
        All latents are drawn first from a generator seeded with `seed`, so the samples
        depend only on (seed, class, n, truncation), not on how they are consumed. n has no
        upper bound here (`generate_frame` caps the samples of one call)."""
        check_request(n, seed, truncation)
        index = self.class_index(label)
        generator = torch.Generator().manual_seed(seed)
        z = self.gan.sample_latent(n, generator=generator, truncation=truncation)
        labels = None if index is None else torch.full((n,), index, dtype=torch.long)
        for start in range(0, n, CHUNK_ROWS):
            part = slice(start, start + CHUNK_ROWS)
            batch = self.gan.generate(z[part], None if labels is None else labels[part]).numpy()
            yield batch if self.scaler is None else self.scaler.inverse_transform(batch)

    def generate(
        self, n: int, label: int | None, seed: int, truncation: float | None = None
    ) -> np.ndarray:
        """All n samples of one request (see `chunks`)."""
        return np.concatenate(list(self.chunks(n, label, seed, truncation)))

    def generate_frame(self, requests: pd.DataFrame) -> pd.DataFrame:
        """One row per sample of every request row: request (the row's position), class,
        seed, sample_index, then the feature columns (flattened pixels for images)."""
        frames = [
            self._request_frame(position, *request)
            for position, request in enumerate(parse_requests(requests))
        ]
        return pd.concat(frames, ignore_index=True)

    def _request_frame(
        self, position: int, n: int, label: int | None, seed: int, truncation: float | None
    ) -> pd.DataFrame:
        samples = self.generate(n, label, seed, truncation).reshape(n, -1).astype(np.float64)
        meta = pd.DataFrame(
            {
                "request": np.full(n, position, dtype=np.int64),
                "class": pd.array([label] * n, dtype="Int64"),
                "seed": np.full(n, seed, dtype=np.int64),
                "sample_index": np.arange(n, dtype=np.int64),
            }
        )
        return pd.concat([meta, pd.DataFrame(samples, columns=self.feature_names)], axis=1)


def check_request(n: int, seed: int, truncation: float | None) -> None:
    """Refuse an n < 1, a seed outside [0, 2^63) or a truncation <= 0."""
    if n < 1:
        raise RequestError(f"n must be >= 1, got {n}")
    if not 0 <= seed <= MAX_SEED:
        raise RequestError(f"seed must be an integer in [0, 2^63), got {seed}")
    if truncation is not None and not truncation > 0:
        raise RequestError(f"truncation must be > 0 (or empty for none), got {truncation}")


def parse_requests(requests: pd.DataFrame) -> list[tuple[int, int | None, int, float | None]]:
    """(n, class, seed, truncation) per request row, checked (empty class or truncation cells
    are None); at most `MAX_SAMPLES_PER_CALL` samples over all rows."""
    missing = [c for c in REQUIRED_REQUEST_COLUMNS if c not in requests.columns]
    if missing:
        raise RequestError(
            f"requests are missing columns {missing}; expected n and seed, optionally class "
            "and truncation"
        )
    if len(requests) == 0:
        raise RequestError("no requests: give at least one row (n, seed[, class, truncation])")
    columns = [
        list(requests[c]) if c in requests.columns else [None] * len(requests)
        for c in (*REQUIRED_REQUEST_COLUMNS, *OPTIONAL_REQUEST_COLUMNS)
    ]
    rows = [
        (
            _integer("n", n),
            None if _empty(label) else _integer("class", label),
            _integer("seed", seed),
            None if _empty(truncation) else float(truncation),
        )
        for n, seed, label, truncation in zip(*columns, strict=True)
    ]
    for n, _, seed, truncation in rows:
        check_request(n, seed, truncation)
    total = sum(row[0] for row in rows)
    if total > MAX_SAMPLES_PER_CALL:
        raise RequestError(
            f"the requests ask for {total} samples; at most {MAX_SAMPLES_PER_CALL} per call "
            "(split them over several calls)"
        )
    return rows


def _empty(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _integer(name: str, value: Any) -> int:
    """An integer cell (2 and 2.0 are both 2); anything else is a RequestError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise RequestError(f"{name} must be an integer, got {value!r}")
    return int(value) if isinstance(value, int | np.integer) else int(number)


def save_generator(
    gan: GAN,
    path: str | os.PathLike,
    *,
    feature_names: list[str],
    classes: list[int] | None = None,
    scaler: Standardizer | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write the generator folder atomically (the GAN's files, generator_info.json and, for
    tables, scaler.json); return its path."""
    if len(feature_names) != gan.config.data_dim:
        raise ValueError(f"{len(feature_names)} feature names for {gan.config.data_dim} values")
    with atomic_directory(path) as staging:
        write_model_files(gan.cpu(), staging)
        payload = {"feature_names": list(feature_names), "classes": list(classes or [])}
        payload["info"] = info or {}
        (staging / GENERATOR_INFO_FILE).write_text(json.dumps(payload, indent=2))
        if scaler is not None:
            (staging / SCALER_FILE).write_text(json.dumps(scaler.to_dict()))
    return Path(path)


def load_generator(path: str | os.PathLike) -> GeneratorBundle:
    """Load a folder written by `save_generator` (on the CPU, in eval mode)."""
    folder = Path(path)
    gan = read_model_files(folder, map_location="cpu").eval()
    if not isinstance(gan, GAN):
        raise ValueError(f"{folder} holds a {type(gan).__name__}, not a GAN")
    payload = json.loads((folder / GENERATOR_INFO_FILE).read_text())
    scaler_path = folder / SCALER_FILE
    scaler = (
        Standardizer.from_dict(json.loads(scaler_path.read_text()))
        if scaler_path.is_file()
        else None
    )
    return GeneratorBundle(
        gan, list(payload["feature_names"]), [int(c) for c in payload["classes"]], scaler,
        dict(payload.get("info", {})),
    )  # fmt: skip

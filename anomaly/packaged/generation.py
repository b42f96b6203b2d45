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

from anomaly.errors import UserInputError
from anomaly.packaged.files import read_packaged
from anomaly.preprocessing import Standardizer
from generative.gan.model import AdversarialModel
from generative.registry import atomic_directory, write_model_files

GENERATOR_INFO_FILE = "generator_info.json"
SCALER_FILE = "scaler.json"
MAX_SAMPLES_PER_CALL = 10_000
CHUNK_ROWS = 1024  # samples decoded per forward pass (the same for every consumer)
REQUIRED_REQUEST_COLUMNS = ("n", "seed")
OPTIONAL_REQUEST_COLUMNS = ("class", "truncation", "mix_seed", "mix_layer")
SAMPLE_COLUMNS = ("request", "class", "seed", "sample_index")
MAX_SEED = 2**63 - 1


class RequestError(UserInputError):
    """A generation request is malformed: a missing column, a bad n, seed, class, truncation
    or style-mixing option."""


@dataclass(frozen=True)
class Request:
    """One request row: n samples of a class from `seed`, optionally truncated (z-space bound
    t > 0 for GANs, psi in [0, 1] for StyleGAN) and, for StyleGAN, mixed with the latents of
    `mix_seed` from layer `mix_layer` on."""

    n: int
    label: int | None
    seed: int
    truncation: float | None = None
    mix_seed: int | None = None
    mix_layer: int | None = None


@dataclass
class GeneratorBundle:
    """A generator (GAN, Progressive GAN or StyleGAN) with the names of its sample columns,
    the class labels its class indices stand for (empty when unconditional) and, for tables,
    the scaler back to data scale."""

    gan: AdversarialModel
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

    @property
    def styled(self) -> bool:
        """True for a StyleGAN: truncation is psi (in w) and style mixing is available."""
        return self.gan.truncation_space == "w"

    def check(self, request: Request) -> None:
        """Refuse a request this model cannot answer (see `check_request` for the rest)."""
        check_request(request.n, request.seed)
        self.class_index(request.label)
        t = request.truncation
        if t is not None and self.styled and not 0.0 <= t <= 1.0:
            raise RequestError(f"truncation (psi) must be in [0, 1] for a StyleGAN, got {t}")
        if t is not None and not self.styled and not t > 0:
            raise RequestError(f"truncation must be > 0 (or empty for none), got {t}")
        mixing = (request.mix_seed is not None, request.mix_layer is not None)
        if any(mixing) and not self.styled:
            raise RequestError("mix_seed / mix_layer need a StyleGAN; this model has no styles")
        if any(mixing) and not all(mixing):
            raise RequestError("style mixing needs both mix_seed and mix_layer")
        layers = getattr(self.gan.config, "num_layers", 0)
        if request.mix_layer is not None and not 0 <= request.mix_layer <= layers:
            raise RequestError(f"mix_layer must be in [0, {layers}], got {request.mix_layer}")
        if request.mix_seed is not None:
            check_request(1, request.mix_seed)

    def chunks(self, request: Request) -> Iterator[np.ndarray]:
        """The n samples of one request, `CHUNK_ROWS` at a time, at data scale: images in
        [0, 1] (float32, (k, c, h, w)), table rows in the training units (float64, (k, d)).
        All latents are drawn first from a generator seeded with `seed` (StyleGAN's noise
        maps per chunk from (seed, chunk)), so the samples depend only on the request, not
        on how they are consumed. n has no upper bound here (`generate_frame` caps the
        samples of one call)."""
        self.check(request)
        n, index = request.n, self.class_index(request.label)
        generator = torch.Generator().manual_seed(request.seed)
        latent_truncation = None if self.styled else request.truncation
        z = self.gan.sample_latent(n, generator=generator, truncation=latent_truncation)
        mix_z = None
        if request.mix_seed is not None:
            mix_z = self.gan.sample_latent(
                n, generator=torch.Generator().manual_seed(request.mix_seed)
            )
        labels = None if index is None else torch.full((n,), index, dtype=torch.long)
        for number, start in enumerate(range(0, n, CHUNK_ROWS)):
            part = slice(start, start + CHUNK_ROWS)
            options = {}
            if self.styled:
                noise = torch.Generator().manual_seed(chunk_seed(request.seed, number))
                options = {"psi": request.truncation, "rng": noise}
                if mix_z is not None:
                    options.update(mix_z=mix_z[part], mix_layer=request.mix_layer)
            chunk_labels = None if labels is None else labels[part]
            batch = self.gan.generate(z[part], chunk_labels, **options).numpy()
            yield batch if self.scaler is None else self.scaler.inverse_transform(batch)

    def generate(self, request: Request) -> np.ndarray:
        """All n samples of one request (see `chunks`)."""
        return np.concatenate(list(self.chunks(request)))

    def generate_frame(self, requests: pd.DataFrame) -> pd.DataFrame:
        """One row per sample of every request row: request (the row's position), class,
        seed, sample_index, then the feature columns (flattened pixels for images)."""
        parsed = parse_requests(requests)
        for request in parsed:
            self.check(request)
        frames = [self._request_frame(position, r) for position, r in enumerate(parsed)]
        return pd.concat(frames, ignore_index=True)

    def _request_frame(self, position: int, request: Request) -> pd.DataFrame:
        n = request.n
        samples = self.generate(request).reshape(n, -1).astype(np.float64)
        meta = pd.DataFrame(
            {
                "request": np.full(n, position, dtype=np.int64),
                "class": pd.array([request.label] * n, dtype="Int64"),
                "seed": np.full(n, request.seed, dtype=np.int64),
                "sample_index": np.arange(n, dtype=np.int64),
            }
        )
        return pd.concat([meta, pd.DataFrame(samples, columns=self.feature_names)], axis=1)


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of one chunk's noise maps, derived from the request seed and chunk number."""
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1, np.uint64)[0] >> 1)


def check_request(n: int, seed: int) -> None:
    """Refuse an n < 1 or a seed outside [0, 2^63)."""
    if n < 1:
        raise RequestError(f"n must be >= 1, got {n}")
    if not 0 <= seed <= MAX_SEED:
        raise RequestError(f"seed must be an integer in [0, 2^63), got {seed}")


def parse_requests(requests: pd.DataFrame) -> list[Request]:
    """One `Request` per row (empty class, truncation or mixing cells are None), n and seed
    checked; at most `MAX_SAMPLES_PER_CALL` samples over all rows. The model checks the
    rest (`GeneratorBundle.check`)."""
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
        Request(
            _integer("n", n),
            _optional_integer("class", label),
            _integer("seed", seed),
            None if _empty(truncation) else _number("truncation", truncation),
            _optional_integer("mix_seed", mix_seed),
            _optional_integer("mix_layer", mix_layer),
        )
        for n, seed, label, truncation, mix_seed, mix_layer in zip(*columns, strict=True)
    ]
    for row in rows:
        check_request(row.n, row.seed)
    total = sum(row.n for row in rows)
    if total > MAX_SAMPLES_PER_CALL:
        raise RequestError(
            f"the requests ask for {total} samples; at most {MAX_SAMPLES_PER_CALL} per call "
            "(split them over several calls)"
        )
    return rows


def _empty(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _optional_integer(name: str, value: Any) -> int | None:
    return None if _empty(value) else _integer(name, value)


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be a number, got {value!r}") from None


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
    gan: AdversarialModel,
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
    gan, payload = read_packaged(folder, AdversarialModel, "a generator", GENERATOR_INFO_FILE)
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

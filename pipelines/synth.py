"""`synthesize_flow`: draw samples from a registered generator into an npz file, a folder of
PNGs (one subfolder per class) or a Parquet table, with a provenance JSON beside it.

Both files are staged beside their targets and renamed into place only when both are complete:
a failed run (an unknown class, a format that does not fit the model, a write error) leaves any
previous output untouched and no temp files.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from tqdm.auto import tqdm

from anomaly.atomic import atomic_file, check_output_folder
from anomaly.errors import UserInputError
from anomaly.packaged.generation import GeneratorBundle, Request, check_request, load_generator
from anomaly.packaged.generator_pyfunc import GENERATOR_ARTIFACT
from generative.registry import atomic_directory
from pipelines import tracking
from pipelines.retries import io_task_options

PNG_CHANNELS = (1, 3)  # grayscale, RGB


@dataclass(frozen=True)
class Samples:
    """Generated samples at data scale, their class labels (None when unconditional) and the
    model's feature names."""

    X: np.ndarray
    y: np.ndarray | None
    feature_names: list[str]


def write_npz(path: Path, samples: Samples) -> None:
    """X (images as 8-bit (n, c, h, w), table rows as float64), y (conditional models) and
    the feature names."""
    arrays = {"X": to_uint8(samples.X) if samples.X.ndim == 4 else samples.X}
    if samples.y is not None:
        arrays["y"] = samples.y
    with path.open("wb") as handle:
        np.savez(handle, **arrays, feature_names=np.array(samples.feature_names))


def write_parquet(path: Path, samples: Samples) -> None:
    """The feature columns, then `class` (conditional models)."""
    frame = pd.DataFrame(samples.X, columns=samples.feature_names)
    if samples.y is not None:
        frame["class"] = samples.y
    frame.to_parquet(path, index=False)


def write_pngs(folder: Path, samples: Samples) -> None:
    """One 8-bit PNG per sample, `<class>/<index>.png` (just `<index>.png` when
    unconditional)."""
    images = to_uint8(samples.X).transpose(0, 2, 3, 1)
    labels = samples.y if samples.y is not None else [None] * len(images)
    counters: dict[Any, int] = {}
    for image, label in zip(images, labels, strict=True):
        subfolder = folder if label is None else folder / str(label)
        subfolder.mkdir(exist_ok=True)
        index = counters[label] = counters.get(label, -1) + 1
        pixels = image[:, :, 0] if image.shape[2] == 1 else image
        Image.fromarray(pixels).save(subfolder / f"{index:06d}.png")


@dataclass(frozen=True)
class OutputFormat:
    """How to write one format: the writer, whether it fills a folder, which data it takes."""

    write: Callable[[Path, Samples], None]
    folder: bool
    images: bool
    tables: bool


FORMATS: dict[str, OutputFormat] = {
    "npz": OutputFormat(write_npz, folder=False, images=True, tables=True),
    "parquet": OutputFormat(write_parquet, folder=False, images=False, tables=True),
    "png": OutputFormat(write_pngs, folder=True, images=True, tables=False),
}
SUFFIXES = {".npz": "npz", ".parquet": "parquet", "": "png"}  # no suffix: a folder of PNGs


def to_uint8(X: np.ndarray) -> np.ndarray:
    """Images in [0, 1] -> 8-bit values."""
    return np.clip(np.rint(X * 255.0), 0, 255).astype(np.uint8)


def output_format(output: Path, fmt: str | None) -> str:
    """`fmt` when given, else the one the output's suffix names."""
    name = fmt or SUFFIXES.get(output.suffix.lower())
    if name not in FORMATS:
        known = ", ".join(f"{s or 'no suffix'} -> {f}" for s, f in SUFFIXES.items())
        raise UserInputError(
            f"cannot tell the format of {output.name!r}: give fmt (one of {sorted(FORMATS)}) "
            f"or an output named by suffix ({known})"
        )
    return name


def check_format_fits(fmt: str, bundle: GeneratorBundle, output: Path) -> None:
    """Refuse a format the model's data do not take, and a PNG folder over a folder that is
    not a previous output (it would be replaced)."""
    spec, shape = FORMATS[fmt], bundle.sample_shape
    is_image = len(shape) == 3
    if (is_image and not spec.images) or (not is_image and not spec.tables):
        kind = "images" if is_image else "table rows"
        fits = sorted(k for k, v in FORMATS.items() if (v.images if is_image else v.tables))
        raise UserInputError(f"this model generates {kind}; {fmt} does not take them (use {fits})")
    if fmt == "png" and shape[0] not in PNG_CHANNELS:
        raise UserInputError(f"PNG takes 1 or 3 channels; this model generates {shape[0]}")
    if spec.folder and output.exists() and not provenance_path(output).is_file():
        raise UserInputError(f"{output} exists and is not a previous synth output; choose another")


def provenance_path(output: Path) -> Path:
    """`<output>.provenance.json` beside the output."""
    return output.with_name(output.name + ".provenance.json")


def class_seed(seed: int, index: int | None) -> int:
    """The seed of one class's request: `seed` itself when unconditional, else one derived
    from `seed` and the class's position in the model's class list, so that classes get
    independent latents."""
    if index is None:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)


def plan_requests(
    bundle: GeneratorBundle,
    n: int,
    classes: list[int] | None,
    seed: int,
    truncation: float | None,
    mixing: tuple[int, int] | None = None,
) -> list[Request]:
    """One request per class (every class of a conditional model when `classes` is None; a
    single unlabelled request when unconditional), each checked against the model. `mixing`
    = (mix_seed, mix_layer) mixes a StyleGAN's styles from that layer on."""
    check_request(n, seed)
    if bundle.conditional:
        labels: list[int | None] = list(classes) if classes else list(bundle.classes)
    elif classes:
        raise UserInputError(f"this generator is unconditional; do not give classes ({classes})")
    else:
        labels = [None]
    mix_seed, mix_layer = mixing or (None, None)
    requests = [
        Request(
            n, label, class_seed(seed, bundle.class_index(label)), truncation, mix_seed, mix_layer
        )
        for label in labels
    ]
    for request in requests:
        bundle.check(request)
    return requests


def request_record(request: Request) -> dict[str, Any]:
    """A request as the provenance JSON lists it (mixing only when used)."""
    record = {"class": request.label, "n": request.n, "seed": request.seed}
    if request.mix_seed is not None:
        record.update(mix_seed=request.mix_seed, mix_layer=request.mix_layer)
    return record


@task(**io_task_options(2, 2), cache_policy=NONE)
def resolve(model_uri: str, scratch: str) -> tracking.ResolvedModel:
    """Download the generator the URI names (retried: the tracking server may blink)."""
    return tracking.resolve_model(model_uri, dst=scratch, artifact=GENERATOR_ARTIFACT)


@task(cache_policy=NONE)
def generate(bundle: GeneratorBundle, requests: list[Request], progress: bool) -> Samples:
    """Every request's samples, chunk by chunk (with a progress bar over all samples)."""
    parts = []
    with tqdm(total=sum(r.n for r in requests), disable=not progress, desc="sampling") as bar:
        for request in requests:
            for chunk in bundle.chunks(request):
                parts.append(chunk)
                bar.update(len(chunk))
    y = None
    if bundle.conditional:
        y = np.concatenate([np.full(r.n, r.label, dtype=np.int64) for r in requests])
    return Samples(np.concatenate(parts), y, bundle.feature_names)


@task(cache_policy=NONE)
def write_outputs(output: Path, fmt: str, samples: Samples, provenance: dict[str, Any]) -> None:
    """Stage the samples (or translated images) and the provenance JSON beside their targets;
    rename both into place once both are written (on any error both staged copies are
    removed)."""
    spec = FORMATS[fmt]
    with contextlib.ExitStack() as stack:
        staged_json = stack.enter_context(atomic_file(provenance_path(output)))
        stage = atomic_directory if spec.folder else atomic_file
        staged = stack.enter_context(stage(output))
        spec.write(staged, samples)
        staged_json.write_text(json.dumps(provenance, indent=2))


def provenance(model: tracking.ResolvedModel, model_uri: str, **fields: Any) -> dict[str, Any]:
    """A provenance record: the model (name, version, run, URI), then `fields`, then when and
    with which genad and torch versions."""
    return {
        "model_name": model.name,
        "model_version": model.version,
        "run_id": model.run_id,
        "model_uri": model_uri,
        **fields,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "genad_version": importlib.metadata.version("genad"),
        "torch_version": torch.__version__,
    }


def provenance_record(
    model: tracking.ResolvedModel, model_uri: str, requests: list[Request], **extra: Any
) -> dict[str, Any]:
    """Who made the samples and how: model name, version, run, URI, the requests (class, n,
    seed), counts per class, time and package versions, plus `extra` (seed, truncation...)."""
    counts = {"all" if r.label is None else str(r.label): r.n for r in requests}
    return provenance(
        model, model_uri, **extra, requests=[request_record(r) for r in requests],
        counts=counts, samples=sum(counts.values()),
    )  # fmt: skip


@flow(name="synthesize", log_prints=True)
def synthesize_flow(
    model_uri: str,
    n: int,
    classes: list[int] | None,
    output: str,
    seed: int = 0,
    truncation: float | None = None,
    fmt: str | None = None,
    progress: bool = False,
    mix_seed: int | None = None,
    mix_layer: int | None = None,
    create_dirs: bool = False,
) -> dict[str, Any]:
    """Draw `n` samples per class of `classes` (every class when None) from a conditional
    generator, or `n` in all from an unconditional one, from `model_uri`
    (models:/<name>@<alias> or models:/<name>/<version>), and write them to `output`: an
    npz (X, y, feature_names), a folder of PNGs (images) or Parquet (tables), by `fmt` or the
    output's suffix; plus `<output>.provenance.json`. Returns the provenance record.
    For a StyleGAN, `truncation` is psi in [0, 1] and `mix_seed` with `mix_layer` takes the
    styles of layers >= mix_layer from the latents of `mix_seed`.

    A class's samples are the generator pyfunc's answer to the request (n, class, seed) with
    the seed in the provenance's `requests` (derived from `seed` and the class).

    A missing folder for `output` is refused (`OutputFolderError`) before any work, unless
    `create_dirs`.
    """
    logger = get_run_logger()
    target = Path(output).expanduser().resolve()
    name = output_format(target, fmt)
    check_output_folder(target, create=create_dirs)
    with tempfile.TemporaryDirectory(prefix="genad-synth-") as scratch:
        model = resolve(model_uri, scratch)
        bundle = load_generator(model.bundle_dir)
        check_format_fits(name, bundle, target)
        mixing = None if mix_seed is None and mix_layer is None else (mix_seed, mix_layer)
        requests = plan_requests(bundle, n, classes, seed, truncation, mixing)
        samples = generate(bundle, requests, progress)
    provenance = provenance_record(
        model, model_uri, requests, seed=seed, truncation=truncation, format=name,
        output=str(target), sample_shape=list(bundle.sample_shape),
    )  # fmt: skip
    write_outputs(target, name, samples, provenance)
    logger.info(
        "wrote %d samples of %s v%s to %s", len(samples.X), model.name, model.version, target
    )
    return provenance

"""`translate_flow`: translate a batch of images with a registered CycleGAN into an npz file
or a folder of PNGs, with a provenance JSON beside it.

Input: an npz file (array `X`: (n, C, H, W) or (n, H, W) images, or (n, C*H*W) rows; 8-bit or
[0, 1]; an optional `y` is carried over) or a folder of PNG/JPEG images. Both output files are
staged beside their targets and renamed into place only when both are complete: a failed run
(bad input, a format that does not fit, a write error) leaves any previous output untouched
and no temp files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from tqdm.auto import tqdm

from anomaly.atomic import check_output_folder
from anomaly.data import load_dataset
from anomaly.errors import InputNotFoundError, UserInputError
from anomaly.evaluation import digest
from anomaly.formats import format_for
from anomaly.packaged.translation import (
    TranslationInputError,
    TranslatorBundle,
    as_unit_images,
    check_direction,
    load_translator,
)
from anomaly.packaged.translator_pyfunc import TRANSLATOR_ARTIFACT
from pipelines import tracking
from pipelines.retries import io_task_options
from pipelines.synth import (
    FORMATS,
    PNG_CHANNELS,
    Samples,
    provenance,
    provenance_path,
    write_outputs,
)

OUTPUT_FORMATS = ("npz", "png")  # keys of pipelines.synth.FORMATS that take images
SUFFIXES = {".npz": "npz", "": "png"}  # no suffix: a folder of PNGs
CHUNK = 512  # images per translation call (the progress bar's step)


def output_format(output: Path, fmt: str | None) -> str:
    """`fmt` when given, else the one the output's suffix names (.npz, or none: PNGs)."""
    name = fmt or SUFFIXES.get(output.suffix.lower())
    if name not in OUTPUT_FORMATS:
        raise UserInputError(
            f"cannot tell the format of {output.name!r}: give fmt (one of {list(OUTPUT_FORMATS)}) "
            "or an output named out.npz (npz) or without a suffix (a folder of PNGs)"
        )
    return name


def read_images(source: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(images as read, labels or None) from an npz file or an image folder."""
    if not source.exists():
        raise InputNotFoundError(f"input not found: {source}")
    fmt = format_for(source)
    if fmt is None or not fmt.holds_images:
        raise UserInputError(f"input must be an .npz file or a folder of PNG/JPEG images: {source}")
    data = load_dataset(str(source))
    return data.X, data.y


def check_output(fmt: str, bundle: TranslatorBundle, output: Path) -> None:
    """Refuse PNGs of a channel count PNG cannot hold, and a PNG folder over a folder that is
    not a previous output (it would be replaced)."""
    if fmt == "png" and bundle.image_shape[0] not in PNG_CHANNELS:
        raise UserInputError(
            f"PNG takes 1 or 3 channels; this model's images have {bundle.image_shape[0]}"
        )
    if FORMATS[fmt].folder and output.exists() and not provenance_path(output).is_file():
        raise UserInputError(
            f"{output} exists and is not a previous translate output; choose another"
        )


@task(**io_task_options(2, 2), cache_policy=NONE)
def resolve(model_uri: str, scratch: str) -> tracking.ResolvedModel:
    """Download the translator the URI names (retried: the tracking server may blink)."""
    return tracking.resolve_model(model_uri, dst=scratch, artifact=TRANSLATOR_ARTIFACT)


@task(cache_policy=NONE)
def translate_images(
    bundle: TranslatorBundle, images: np.ndarray, direction: str, progress: bool
) -> np.ndarray:
    """All [0, 1] images translated, `CHUNK` at a time (with a progress bar)."""
    unit = torch.from_numpy(images)
    parts = []
    with tqdm(total=len(unit), disable=not progress, desc="translating") as bar:
        for chunk in unit.split(CHUNK):
            parts.append(bundle.model.translate(chunk, direction).numpy())
            bar.update(len(chunk))
    return np.concatenate(parts)


def provenance_record(
    model: tracking.ResolvedModel, model_uri: str, source: Path, inputs: np.ndarray, **extra: Any
) -> dict[str, Any]:
    """Which model translated what (the input and its digest), which way, when, with which
    versions, plus `extra`."""
    return provenance(model, model_uri, input=str(source), input_digest=digest(inputs), **extra)


@flow(name="translate", log_prints=True)
def translate_flow(
    model_uri: str,
    input: str,
    output: str,
    direction: str = "a_to_b",
    fmt: str | None = None,
    progress: bool = False,
    create_dirs: bool = False,
) -> dict[str, Any]:
    """Translate the images of `input` (npz or image folder) with the CycleGAN at `model_uri`
    (models:/<name>@<alias> or models:/<name>/<version>) in `direction` ("a_to_b" = G_AB,
    "b_to_a" = G_BA), and write them to `output`: an npz (X as 8-bit (n, C, H, W), y when
    the input had labels, feature_names) or a folder of PNGs, by `fmt` or the output's suffix;
    plus `<output>.provenance.json`. Returns the provenance record. A missing folder for
    `output` is refused (`OutputFolderError`) before any work, unless `create_dirs`."""
    logger = get_run_logger()
    check_direction(direction)
    source = Path(input).expanduser().resolve()
    target = Path(output).expanduser().resolve()
    name = output_format(target, fmt)
    check_output_folder(target, create=create_dirs)
    images, labels = read_images(source)
    with tempfile.TemporaryDirectory(prefix="genad-translate-") as scratch:
        model = resolve(model_uri, scratch)
        bundle = load_translator(model.bundle_dir)
    check_output(name, bundle, target)
    try:
        unit = as_unit_images(images, bundle.image_shape)
    except TranslationInputError as error:
        raise TranslationInputError(f"{source}: {error}") from None
    translated = translate_images(bundle, unit, direction, progress)
    provenance = provenance_record(
        model, model_uri, source, images, direction=direction, format=name,
        output=str(target), images=len(translated), image_shape=list(bundle.image_shape),
    )  # fmt: skip
    samples = Samples(translated, labels, bundle.feature_names)
    write_outputs(target, name, samples, provenance)
    logger.info("translated %d images with %s v%s (%s) to %s", len(translated), model.name,
                model.version, direction, target)  # fmt: skip
    return provenance

"""The on-disk form of a fitted detector: a folder with `detector.json` (the family's name,
parameters, calibration scores, the family's state) and the family's files. A VAEDetector's
are the VAE's (config.json + model.pt) and the background model's in `background/` when it
has one. Nothing is pickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from anomaly.corrections import CORRECTIONS
from generative.registry import read_model_files, write_model_files
from generative.training import resolve_device

DETECTOR_FILE = "detector.json"
BACKGROUND_FOLDER = "background"


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Write the JSON state into an existing (staging) folder."""
    (folder / DETECTOR_FILE).write_text(json.dumps(state, indent=2))


def read_state(folder: Path) -> dict[str, Any]:
    """The JSON state written by `write_state`."""
    state_file = folder / DETECTOR_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"no saved detector at {folder} (missing {DETECTOR_FILE})")
    return json.loads(state_file.read_text())


def write_networks(folder: Path, model: nn.Module, background: nn.Module | None) -> None:
    """Write the VAE's files, and the background model's in `background/`, into `folder`."""
    write_model_files(model, folder)
    if background is not None:
        (folder / BACKGROUND_FOLDER).mkdir()
        write_model_files(background, folder / BACKGROUND_FOLDER)


def read_networks(folder: Path, correction: str, device: str) -> tuple[nn.Module, nn.Module | None]:
    """(the VAE, the background model or None), checking the folder matches `correction`."""
    background = folder / BACKGROUND_FOLDER
    if CORRECTIONS[correction].needs_background != background.is_dir():
        raise FileNotFoundError(
            f"saved VAEDetector at {folder} has correction={correction!r} but "
            f"{'no' if not background.is_dir() else 'an unexpected'} {BACKGROUND_FOLDER}/ "
            "folder: the model files are incomplete or mixed up"
        )
    target = resolve_device(device)
    model = read_model_files(folder).to(target).eval()
    if not background.is_dir():
        return model, None
    return model, read_model_files(background).to(target).eval()

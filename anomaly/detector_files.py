"""The on-disk form of a fitted VAEDetector: a folder with the VAE's files (config.json +
model.pt), the background model's in `background/` when the detector has one, and
`detector.json` (parameters, preprocessor, calibration scores, history). Nothing is pickled."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from anomaly.corrections import CORRECTIONS
from anomaly.preprocessing import preprocessor_from_dict
from generative.registry import read_model_files, write_model_files
from generative.training import resolve_device

DETECTOR_FILE = "detector.json"
BACKGROUND_FOLDER = "background"


def write_detector_files(
    folder: Path, model: nn.Module, background: nn.Module | None, state: dict[str, Any]
) -> None:
    """Write the networks and the JSON state into an existing (staging) folder."""
    write_model_files(model, folder)
    if background is not None:
        (folder / BACKGROUND_FOLDER).mkdir()
        write_model_files(background, folder / BACKGROUND_FOLDER)
    (folder / DETECTOR_FILE).write_text(json.dumps(state, indent=2))


def read_state(folder: Path) -> dict[str, Any]:
    """The JSON state, with the parameters ready for the constructor."""
    state_file = folder / DETECTOR_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"no saved VAEDetector at {folder} (missing {DETECTOR_FILE})")
    state = json.loads(state_file.read_text())
    if state["params"].get("hidden_dims") is not None:
        state["params"]["hidden_dims"] = tuple(state["params"]["hidden_dims"])
    return state


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


def fitted_attributes(state: dict[str, Any]) -> dict[str, Any]:
    """The fitted attributes stored in the JSON state, by attribute name."""
    input_shape = tuple(state["input_shape"])
    return {
        "preprocessor_": preprocessor_from_dict(state["preprocessor"]),
        "offset_": float(state["offset"]),
        "calibration_scores_": np.asarray(state["calibration_scores"], dtype=np.float64),
        "input_shape_": input_shape,
        "n_features_in_": math.prod(input_shape),
        "active_units_": int(state["active_units"]),
        "history_": state["history"],
    }

"""Reading a packaged model's folder: the model's own files (`generative.registry`, checksummed)
and the info JSON beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from generative.registry import read_model_files


def read_packaged(
    folder: Path, expected: type[nn.Module], what: str, info_file: str
) -> tuple[Any, dict[str, Any]]:
    """The model in `folder` (on the CPU, in eval mode), refused with a ValueError naming `what`
    it should be unless it is an `expected`, and the folder's `info_file` JSON."""
    model = read_model_files(folder, map_location="cpu").eval()
    if not isinstance(model, expected):
        raise ValueError(f"{folder} holds a {type(model).__name__}, not {what}")
    return model, json.loads((folder / info_file).read_text())

"""The MLflow pyfunc translator: a trained CycleGAN that any MLflow user can load and use to
translate images between its two domains.

Logged as "models from code" (`anomaly/packaged/translator_pyfunc_entry.py`) with genad's `anomaly`
and `generative` packages shipped as `code_paths` and the translator folder (state_dict + JSON;
see `anomaly.packaged.translation.save_translator`) as the artifact "translator": nothing is
pickled. A consumer needs the model's pinned `requirements.txt`, not genad.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from anomaly.packaged.pyfunc_base import GenadPythonModel
from anomaly.packaged.translation import TranslatorBundle, load_translator

TRANSLATOR_ARTIFACT = "translator"


class GenadTranslatorModel(GenadPythonModel):
    """predict(images) -> translated images.

    Each input row is one image: the columns `pixel0..pixel{C*H*W-1}` in [0, 1] ((c, h, w)
    order), and optionally `direction` ("a_to_b" = G_AB or "b_to_a" = G_BA) per row. Without
    that column every row goes the way the `direction` param says (default "a_to_b"). The
    output has one row per input row, in order: the translated image's pixel columns in
    [0, 1]. Bad input (missing columns, values outside [0, 1], NaN, an unknown direction)
    raises a `TranslationInputError` that says what is wrong. Translation is deterministic
    and per image (a row's output does not depend on the other rows).
    """

    artifact = TRANSLATOR_ARTIFACT

    def load(self, folder: Path, config: dict[str, Any]) -> None:
        """Load the translator folder (on the CPU)."""
        self.bundle: TranslatorBundle = load_translator(folder)

    def answer(self, frame: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        """The translation of every row of `frame`."""
        return self.bundle.translate_frame(frame, direction=params.get("direction"))

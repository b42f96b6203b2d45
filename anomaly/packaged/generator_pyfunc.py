"""The MLflow pyfunc generator: a trained GAN that any MLflow user can load and sample from.

Logged as "models from code" (`anomaly/packaged/generator_pyfunc_entry.py`) with genad's `anomaly`
and `generative` packages shipped as `code_paths` and the generator folder (state_dict + JSON, plus
the scaler JSON for tables; see `anomaly.packaged.generation.save_generator`) as the artifact
"generator": nothing is pickled. A consumer needs the model's pinned `requirements.txt`, not
genad.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from anomaly.packaged.generation import GeneratorBundle, load_generator
from anomaly.packaged.pyfunc_base import GenadPythonModel

GENERATOR_ARTIFACT = "generator"


class GenadGeneratorModel(GenadPythonModel):
    """predict(requests) -> samples.

    Each request row holds `n` (>= 1; at most 10000 over all rows of one call), `seed` (an
    integer >= 0) and optionally `class` (a training label: required by a class-conditional
    model, absent otherwise) and `truncation` (> 0, empty for none; for a StyleGAN it is psi in
    [0, 1], and `mix_seed` with `mix_layer` take the styles of layers >= mix_layer from the
    latents of another seed: style mixing). The output has one row per
    sample: `request` (the request row's position), `class`, `seed`, `sample_index`
    (0..n-1), then the feature columns: a table's training column names in its units, or
    `pixel0..` in [0, 1] for images ((c, h, w) order). The same request always gives the same
    samples.
    """

    artifact = GENERATOR_ARTIFACT

    def load(self, folder: Path, config: dict[str, Any]) -> None:
        """Load the generator folder (on the CPU)."""
        self.bundle: GeneratorBundle = load_generator(folder)

    def answer(self, frame: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        """The samples of every request row of `frame`."""
        return self.bundle.generate_frame(frame)

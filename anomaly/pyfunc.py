"""The MLflow pyfunc model: a genad detector that any MLflow user can load and score.

It is logged as "models from code" (`anomaly/pyfunc_entry.py`) with genad's `anomaly` and
`generative` packages shipped as `code_paths`, and the detector folder (state_dict + JSON,
see `anomaly.scoring.save_bundle`) as the artifact "detector": nothing is pickled. A consumer
needs mlflow (which brings pandas, scikit-learn and scipy) and torch, not genad.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from anomaly.scoring import UNREGISTERED, ScoringModel, load_bundle

DETECTOR_ARTIFACT = "detector"
# Written by MLflow next to MLmodel when a model is loaded through a models:/ registry URI.
REGISTERED_META_FILE = "registered_model_meta"


class GenadVAEModel(mlflow.pyfunc.PythonModel):
    """predict(frame) -> one row per input: log_px, normality, score, p_value, is_anomaly,
    model_name, model_version (see `anomaly.scoring.ScoringModel`).

    The input frame must hold the model's feature columns (see the model signature); extra
    columns are ignored. Through `mlflow.pyfunc.load_model` or `mlflow models serve`, MLflow's
    signature check rejects missing or non-numeric columns first; called directly, the model
    raises `InputColumnsError` naming them.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the detector; learn the registered name and version when loaded from the
        registry."""
        folder = Path(context.artifacts[DETECTOR_ARTIFACT])
        self.model: ScoringModel = load_bundle(folder)
        config = context.model_config or {}
        self.model.name = str(config.get("model_name", UNREGISTERED))
        name, version = registered_identity(folder.parents[1])
        if name is not None:
            self.model.name, self.model.version = name, version

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Score the rows of `model_input`."""
        scored = self.model.score_frame(model_input)
        scored["model_name"] = self.model.name
        scored["model_version"] = str(self.model.version)
        return scored


def registered_identity(model_root: Path) -> tuple[str | None, str]:
    """(name, version) from the `registered_model_meta` file MLflow writes into a model
    downloaded from the registry; (None, "unregistered") when the file is absent."""
    meta = model_root / REGISTERED_META_FILE
    if not meta.is_file():
        return None, UNREGISTERED
    fields = {}
    for line in meta.read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip().strip("'\"")
    return fields.get("model_name"), fields.get("model_version", UNREGISTERED)

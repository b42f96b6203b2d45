"""What genad's MLflow pyfunc models share: the `PythonModel` base and the MLflow calls they make.

The detector (`anomaly.packaged.detector_pyfunc`), the generator
(`anomaly.packaged.generator_pyfunc`) and the translator (`anomaly.packaged.translator_pyfunc`) are
logged as "models from code": MLflow runs an entry file (`anomaly/packaged/*_entry.py`) that calls
`serve(ModelClass())`. Each model is a folder of state_dict + JSON logged as one artifact;
`GenadPythonModel.load_context` finds that folder and hands it to the subclass's `load`. This module
alone of the shipped code imports mlflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import mlflow.pyfunc
import pandas as pd
from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE


class InvalidInputError(MlflowException, ValueError):
    """Input a model cannot answer. An `MlflowException` with error code
    INVALID_PARAMETER_VALUE: `mlflow models serve` answers it with HTTP 400 and its message (any
    other exception in `predict` becomes a 400 with a generic message that hides the cause)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


class GenadPythonModel(mlflow.pyfunc.PythonModel):
    """A genad model folder served through MLflow's pyfunc interface.

    Subclasses name their artifact (`artifact`), load its folder (`load`) and answer a frame
    (`answer`)."""

    artifact: ClassVar[str]

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the model folder logged as `artifact`, with the model config logged beside it."""
        self.load(Path(context.artifacts[self.artifact]), dict(context.model_config or {}))

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """The model's answer to `model_input` (see the subclass's `answer`)."""
        return self.answer(model_input, params or {})

    def load(self, folder: Path, config: dict[str, Any]) -> None:
        """Load the model folder; `config` is the model config logged with it."""
        raise NotImplementedError

    def answer(self, frame: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        """The output frame for the input `frame` and the request's `params`."""
        raise NotImplementedError


def serving() -> bool:
    """Whether this process is MLflow's scoring server (`mlflow models serve`)."""
    return bool(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.get())


def serve(model: GenadPythonModel) -> None:
    """Make `model` the model an entry file builds (MLflow's models from code)."""
    mlflow.models.set_model(model)

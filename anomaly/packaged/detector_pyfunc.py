"""The MLflow pyfunc model: a genad detector that any MLflow user can load and score.

It is logged as "models from code" (`anomaly/packaged/detector_pyfunc_entry.py`) with genad's
`anomaly` and `generative` packages shipped as `code_paths`, and the detector folder (state_dict +
JSON, see `anomaly.packaged.scoring.save_bundle`) as the artifact "detector": nothing is pickled. A
consumer needs the model's `requirements.txt` (pinned; `pipelines.servables.MODEL_PACKAGES`), not
genad.

Input the model cannot score raises `InvalidInputError` (`anomaly.packaged.pyfunc_base`): `mlflow
models serve` answers it with HTTP 400 and its message. Served (MLflow's serving environment flag is
set), a request must hold 1 to `GENAD_SERVING_MAX_ROWS` rows (default: a million values, 100,000
rows of 10 columns or 1,275 Fashion-MNIST images); in process, any number of rows is scored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomaly.packaged.pyfunc_base import GenadPythonModel, InvalidInputError, serving
from anomaly.packaged.scoring import (
    UNREGISTERED,
    InputColumnsError,
    ScoringModel,
    load_bundle,
    select_features,
)

DETECTOR_ARTIFACT = "detector"
# Written by MLflow next to MLmodel when a model is loaded through a models:/ registry URI.
REGISTERED_META_FILE = "registered_model_meta"
MAX_ROWS_ENV = "GENAD_SERVING_MAX_ROWS"
DEFAULT_MAX_SERVED_VALUES = 1_000_000  # rows x feature columns per served request


class GenadVAEModel(GenadPythonModel):
    """predict(frame) -> one row per input: log_px, normality, score, p_value, is_anomaly,
    model_name, model_version (see `anomaly.packaged.scoring.ScoringModel`).

    The input frame must hold the model's feature columns (see the model signature) with
    finite numbers; extra columns are ignored. Through `mlflow.pyfunc.load_model` or
    `mlflow models serve`, MLflow's signature check rejects missing or non-numeric columns
    first; the model itself raises `InvalidInputError` naming the column (and row) at fault.
    """

    artifact = DETECTOR_ARTIFACT

    def load(self, folder: Path, config: dict[str, Any]) -> None:
        """Load the detector; learn the registered name and version when loaded from the
        registry."""
        self.model: ScoringModel = load_bundle(folder)
        # No progress bars when scoring (genad's flows save detectors so): a bar would need tqdm,
        # which the model's requirements do not list (pipelines.servables.MODEL_PACKAGES)
        self.model.detector.set_params(verbose=False)
        self.max_served_rows = served_row_limit(len(self.model.feature_names))
        self.model.name = str(config.get("model_name", UNREGISTERED))
        name, version = registered_identity(folder.parents[1])
        if name is not None:
            self.model.name, self.model.version = name, version

    def answer(self, frame: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        """Score the rows of `frame`."""
        try:
            features = select_features(frame, self.model.feature_names)
        except InputColumnsError as error:
            raise InvalidInputError(str(error)) from error
        if serving():
            check_request_rows(len(features), self.max_served_rows)
        check_finite(features, self.model.feature_names)
        scored = self.model.score_array(features)
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


def served_row_limit(n_features: int) -> int:
    """The most rows one served request may hold: env GENAD_SERVING_MAX_ROWS, else as many rows
    of `n_features` columns as fit in DEFAULT_MAX_SERVED_VALUES (at least one)."""
    text = os.environ.get(MAX_ROWS_ENV, str(max(1, DEFAULT_MAX_SERVED_VALUES // n_features)))
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"{MAX_ROWS_ENV} must be a positive whole number, got {text!r}")
    return limit


def check_request_rows(rows: int, limit: int) -> None:
    """A served request holds at least one row and at most `limit`."""
    if rows == 0:
        raise InvalidInputError("the request holds no rows to score")
    if rows > limit:
        raise InvalidInputError(
            f"the request holds {rows:,} rows; this server scores at most {limit:,} per "
            f"request ({MAX_ROWS_ENV}): split it into smaller requests"
        )


def check_finite(features: np.ndarray, feature_names: list[str]) -> None:
    """Every value is a finite number; the error names the first bad column and row."""
    finite = np.isfinite(features)
    if finite.all():
        return
    row, column = (int(i) for i in np.argwhere(~finite)[0])
    bad = int(finite.size - finite.sum())
    raise InvalidInputError(
        f"{bad} value(s) are NaN, null or infinite; the first is {features[row, column]} in "
        f"column {feature_names[column]!r} of row {row}: impute or drop them before scoring"
    )

"""The champion served over HTTP by `mlflow models serve --env-manager local`: the same scores
as in-process scoring, and clear 4xx answers to malformed payloads."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from servers import VENV_BIN, child_env, free_port, running

FEATURES = ["f0", "f1", "f2", "f3"]
OUTPUT = ["log_px", "normality", "score", "p_value", "is_anomaly", "model_name", "model_version"]


@contextlib.contextmanager
def serving(
    model_uri: str, store: str, folder: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`mlflow models serve` of `model_uri` on a free port (`env` added to the child's
    environment); its base URL while it runs."""
    port = free_port()
    args = [
        VENV_BIN / "mlflow", "models", "serve", "-m", model_uri,
        "--env-manager", "local", "-h", "127.0.0.1", "-p", port,
    ]  # fmt: skip
    child = child_env({"MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": store, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    with running(args, env=child, log=folder / "serve.log", cwd=folder, health_url=f"{base}/ping"):
        yield base


@pytest.fixture(scope="module")
def served(champion, mlflow_store: str, tmp_path_factory: pytest.TempPathFactory):
    """`mlflow models serve` of models:/tabular-test@champion on a free port; its base URL."""
    with serving(champion["uri"], mlflow_store, tmp_path_factory.mktemp("serving")) as base:
        yield base


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, str]:
    """POST `body`; (status, response text), also for error statuses."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def split_payload(frame: pd.DataFrame) -> bytes:
    """The `dataframe_split` JSON of `frame`."""
    data = frame.astype(object).to_numpy().tolist()
    return json.dumps({"dataframe_split": {"columns": list(frame.columns), "data": data}}).encode()


@pytest.fixture(scope="module")
def rows(champion) -> pd.DataFrame:
    """50 rows of the CSV's feature columns: 25 normal rows and 25 anomalies."""
    frame = pd.read_csv(champion["csv"])
    return pd.concat([frame.head(25), frame.tail(25)])[FEATURES].reset_index(drop=True)


def test_served_champion_scores_like_in_process(served, champion, rows, tmp_path: Path):
    from anomaly.packaged.scoring import load_bundle
    from pipelines.tracking import resolve_model

    for health in ("/ping", "/health"):
        with urllib.request.urlopen(served + health, timeout=10) as response:
            assert response.status == 200

    status, text = post(served + "/invocations", split_payload(rows))
    assert status == 200, text
    predictions = pd.DataFrame(json.loads(text)["predictions"])
    assert len(predictions) == len(rows)
    assert set(OUTPUT) <= set(predictions.columns), predictions.columns
    assert (predictions["model_name"] == "tabular-test").all()
    assert (predictions["model_version"].astype(str) == str(champion["version"])).all()

    resolved = resolve_model(champion["uri"], dst=tmp_path / "model")
    assert resolved.version == str(champion["version"])
    bundle = load_bundle(resolved.bundle_dir)
    expected = bundle.score_frame(rows)
    np.testing.assert_allclose(predictions["log_px"], expected["log_px"], rtol=1e-6)

    threshold = bundle.detector.offset_
    np.testing.assert_allclose(
        predictions["score"], threshold - predictions["log_px"], rtol=1e-9, atol=1e-9
    )
    flagged = predictions["is_anomaly"].astype(bool)
    assert (flagged == (predictions["score"] > 0)).all()
    assert flagged.tail(25).sum() > flagged.head(25).sum()  # the shifted rows stand out


def error_message(text: str) -> str:
    """The `message` of MLflow's JSON error body."""
    return json.loads(text)["message"]


def test_missing_feature_column_is_a_4xx_naming_it(served, rows):
    status, text = post(served + "/invocations", split_payload(rows.drop(columns=["f3"])))
    assert 400 <= status < 500, (status, text)
    message = error_message(text)
    assert "missing inputs" in message and "'f3'" in message, message


def test_non_json_body_is_a_4xx(served):
    status, text = post(served + "/invocations", b"f0,f1\n{not json")
    assert 400 <= status < 500, (status, text)
    assert "valid JSON" in error_message(text), text


def test_string_in_a_numeric_column_is_a_4xx_naming_the_column(served, rows):
    frame = rows.astype(object)
    frame.loc[3, "f1"] = "not-a-number"
    status, text = post(served + "/invocations", split_payload(frame))
    assert 400 <= status < 500, (status, text)
    message = error_message(text)
    assert "not compatible with model signature" in message, message
    assert "column f1" in message and "not-a-number" in message, message

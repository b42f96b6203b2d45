"""The flows against a real `mlflow server` (sqlite backend, proxied artifacts): the run, its
metrics and artifacts, the registry aliases, and the model loaded back through the server."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import TINY_CONFIG
from mlflow import MlflowClient
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils
from servers import VENV_BIN, child_env, free_port, running

from pipelines import tracking

# A real `mlflow server` costs ~45 s to start and drive: in CI's `make test-slow`, not the
# default suite (which uses the same flows against a sqlite store).
pytestmark = pytest.mark.slow

MODEL_NAME = "server-test"
FEATURES = ["f0", "f1", "f2", "f3"]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`mlflow server` on a free port with its own sqlite store and artifact folder; its URL."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    args = [
        VENV_BIN / "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'srv.db'}",
        "--artifacts-destination", folder / "artifacts",
        "--host", "127.0.0.1", "--port", port, "--workers", "1",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    env = child_env(remove=["MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"])
    log = folder / "server.log"
    with running(args, env=env, log=log, cwd=folder, health_url=f"{url}/health"):
        yield url


@pytest.fixture
def use_server(mlflow_store: str, mlflow_server: str):
    """Point this process (environment and mlflow's globals) at the server; afterwards restore
    the environment and mlflow's tracking and registry URIs exactly as they were (the session
    store, which the other tests keep using)."""
    saved_tracking = tracking_utils._tracking_uri
    saved_registry = registry_utils._registry_uri
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        patch.setenv("MLFLOW_REGISTRY_URI", mlflow_server)
        try:
            mlflow.set_tracking_uri(mlflow_server)
            mlflow.set_registry_uri(mlflow_server)
            yield mlflow_server
        finally:
            # set_*_uri also write the environment; the patch context then restores it.
            tracking_utils.set_tracking_uri(saved_tracking)
            registry_utils.set_registry_uri(saved_registry)


def test_flows_log_register_and_promote_through_the_server(
    prefect_harness, use_server: str, tabular_csv: Path, tmp_path: Path
):
    from pipelines.promote import evaluate_and_promote_flow
    from pipelines.train import train_vae_flow

    trained = train_vae_flow(
        str(tabular_csv), TINY_CONFIG, model_name=MODEL_NAME, label_column="label"
    )
    gate = evaluate_and_promote_flow(MODEL_NAME, str(tabular_csv), label_column="label")
    assert trained["version"] == 1 and gate["promoted"], (trained, gate)

    client = MlflowClient(tracking_uri=use_server, registry_uri=use_server)
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.run_id == trained["run_id"]
    for alias in ("challenger", "champion"):
        assert client.get_model_version_by_alias(MODEL_NAME, alias).version == "1"

    check_training_run(client, trained["run_id"], tabular_csv, tmp_path)
    check_served_champion(tabular_csv)


def check_training_run(client: MlflowClient, run_id: str, csv: Path, tmp_path: Path) -> None:
    """The run's artifacts live on the server; its config, epochs, plots and data digest."""
    from anomaly.evaluation import DataSpec

    run = client.get_run(run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    resolved = mlflow.artifacts.load_dict(f"runs:/{run_id}/config/resolved.json")
    epochs_run = resolved["epochs_run"]
    assert 1 <= epochs_run <= TINY_CONFIG["epochs"]
    history = client.get_metric_history(run_id, "epoch_loss")
    assert sorted(m.step for m in history) == list(range(len(history)))
    assert len(history) == epochs_run

    logged = {
        a.path for folder in ("plots", "config") for a in client.list_artifacts(run_id, folder)
    }
    assert {"plots/roc.png", "plots/loss_curves.png", "config/resolved.json"} <= logged, logged
    roc = Path(client.download_artifacts(run_id, "plots/roc.png", str(tmp_path)))
    assert roc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    expected_digest = DataSpec(str(csv), label_column="label").load().digest
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.digest for i in inputs] == [expected_digest]
    assert run.data.params["data.digest"] == expected_digest


def check_served_champion(csv: Path) -> None:
    """The champion, loaded through the server by its alias, scores 20 rows."""
    frame = pd.read_csv(csv).head(20)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    predicted = model.predict(frame[FEATURES])
    expected_columns = {
        "log_px", "normality", "score", "p_value", "is_anomaly", "model_name", "model_version",
    }  # fmt: skip
    assert expected_columns <= set(predicted.columns), predicted.columns
    assert len(predicted) == len(frame)
    assert (predicted["model_version"] == "1").all()
    assert (predicted["model_name"] == MODEL_NAME).all()


def test_the_session_store_is_in_effect_again(mlflow_store: str):
    """Runs after the server test: nothing of the server is left in this process."""
    assert os.environ["MLFLOW_TRACKING_URI"] == mlflow_store
    assert mlflow.get_tracking_uri() == mlflow_store
    assert os.environ.get("MLFLOW_REGISTRY_URI", mlflow_store) == mlflow_store
    assert mlflow.get_registry_uri() == mlflow_store
    assert not any(m["name"] == MODEL_NAME for m in tracking.list_models())

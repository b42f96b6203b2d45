"""Shared fixtures: the read-only folder of real datasets the tests read in place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The datasets folder: env GENAD_DATA_DIR (the Makefile sets it) or ../shared/data."""
    folder = Path(os.environ.get("GENAD_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    if not (folder / "adbench").is_dir():
        pytest.skip(f"datasets folder not found at {folder}; set GENAD_DATA_DIR")
    return folder


@pytest.fixture
def data_env(shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the loaders at the shared datasets, with a dead mirror so nothing is downloaded."""
    monkeypatch.setenv("GENAD_DATA_DIR", str(shared_data_dir))
    monkeypatch.setenv("GENAD_DATA_MIRROR", "http://127.0.0.1:9/")
    return shared_data_dir


@pytest.fixture(autouse=True)
def one_thread():
    """Test nets are tiny: one torch thread is as fast, and does not stall on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- platform fixtures: one real Prefect test server and one sqlite MLflow store per session ---
@pytest.fixture(scope="session")
def prefect_harness():
    """A real (temporary) Prefect server for the flows of this test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness) -> str:
    """The test server's API URL, for child processes (CLI runs, Dask workers)."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """MLFLOW_TRACKING_URI pointed at a fresh sqlite store (artifacts beside it)."""
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    yield uri
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="module")
def no_heartbeats(prefect_harness):
    """Flow-run heartbeats off, as `genad` runs flows without a server (see
    `pipelines.cli.local_run_settings`): Prefect 3.8.8 adds up to 1 s to every flow run. Flow
    modules use it with `pytestmark = pytest.mark.usefixtures("no_heartbeats")`."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@pytest.fixture(scope="module")
def catalog_env(shared_data_dir):
    """`data_env` for module-scoped fixtures: the shared datasets, a dead mirror."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENAD_DATA_DIR", str(shared_data_dir))
        patch.setenv("GENAD_DATA_MIRROR", "http://127.0.0.1:9/")
        yield shared_data_dir


@pytest.fixture(scope="module")
def feature_net(mlflow_store, catalog_env):
    """A tiny registered Fashion-MNIST feature net (flows reuse the current version)."""
    from pipelines.feature_net import ensure_feature_net

    options = {"channels": [8], "feature_dim": 16}
    return ensure_feature_net("fashion-mnist", train_rows=512, eval_rows=256, net_config=options)


def make_tabular(n: int = 800, d: int = 4, anomalies: int = 80, seed: int = 0):
    """Gaussian normal rows and shifted anomalies, with named columns and a label column."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.zeros(n, dtype=int)
    X[n - anomalies :] += 3.0
    y[n - anomalies :] = 1
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(d)])
    frame["label"] = y
    return frame


@pytest.fixture(scope="session")
def tabular_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled tabular CSV: 720 normal rows, 80 anomalies (label 1)."""
    path = tmp_path_factory.mktemp("data") / "tabular.csv"
    make_tabular().to_csv(path, index=False, float_format="%.17g")
    return path


TINY_CONFIG = {
    "epochs": 4,
    "min_steps": 0,  # exactly `epochs` epochs: the flow tests count them
    "hidden_dims": [16],
    "latent_dim": 2,
    "n_samples": 8,
    "batch_size": 64,
    "target_fpr": 0.1,
}


@pytest.fixture(scope="session")
def champion(prefect_harness, mlflow_store: str, tabular_csv: Path) -> dict:
    """A tiny tabular model trained by the flow, registered and promoted to champion."""
    from pipelines.promote import evaluate_and_promote_flow
    from pipelines.train import train_vae_flow

    trained = train_vae_flow(
        str(tabular_csv), TINY_CONFIG, model_name="tabular-test", label_column="label"
    )
    gate = evaluate_and_promote_flow("tabular-test", str(tabular_csv), label_column="label")
    assert gate["promoted"], gate
    return {**trained, "uri": "models:/tabular-test@champion", "csv": tabular_csv}

"""A registered generator served by `mlflow models serve --env-manager local`: a request frame
over HTTP gets the same samples as in-process, and a bad request gets an error naming it."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from servers import VENV_BIN, child_env, free_port, running
from test_serving import post, split_payload

from pipelines.train_gan import train_gan_flow

MODEL = "gan-served"
FEATURES = ["f0", "f1", "f2", "f3"]


@pytest.fixture(scope="module")
def served_generator(prefect_harness, mlflow_store: str, tabular_csv, tmp_path_factory):
    """A tiny conditional table GAN, registered and served on a free port; its base URL."""
    train_gan_flow(
        str(tabular_csv), {"conditional": True, "hidden_dims": [16], "latent_dim": 4},
        {"epochs": 1, "batch_size": 128}, model_name=MODEL, label_column="label",
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("gan-serving")
    port = free_port()
    args = [
        VENV_BIN / "mlflow", "models", "serve", "-m", f"models:/{MODEL}@challenger",
        "--env-manager", "local", "-h", "127.0.0.1", "-p", port,
    ]  # fmt: skip
    env = child_env({"MLFLOW_TRACKING_URI": mlflow_store, "MLFLOW_REGISTRY_URI": mlflow_store})
    base = f"http://127.0.0.1:{port}"
    with running(args, env=env, log=folder / "serve.log", cwd=folder, health_url=f"{base}/ping"):
        yield base


def test_served_generator_samples_like_in_process(served_generator):
    requests = pd.DataFrame(
        {"n": [4, 2], "class": [1, 0], "seed": [7, 8], "truncation": [1.0, 2.0]}
    )
    status, text = post(served_generator + "/invocations", split_payload(requests))
    assert status == 200, text
    served = pd.DataFrame(json.loads(text)["predictions"])
    expected = mlflow.pyfunc.load_model(f"models:/{MODEL}@challenger").predict(requests)
    assert served["class"].tolist() == [1] * 4 + [0] * 2
    pd.testing.assert_frame_equal(
        served[FEATURES], expected[FEATURES].reset_index(drop=True), check_exact=False, rtol=1e-12
    )


def test_unknown_class_is_refused_by_name(served_generator):
    requests = pd.DataFrame({"n": [3], "class": [7], "seed": [1], "truncation": [None]})
    status, text = post(served_generator + "/invocations", split_payload(requests))
    assert status == 400 and "unknown class 7" in text

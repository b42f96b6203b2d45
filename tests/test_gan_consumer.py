"""A consumer with mlflow, torch and pandas but not genad loads the registered generator and
draws the same samples as genad does in-process.

As in `test_pyfunc_consumer.py`, the child runs `python -I` from a folder outside the repo
without the editable-install finder, so `anomaly` and `generative` can only come from the code
shipped in the model (and nothing may import prefect or pipelines).
"""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from servers import run_consumer_script

from pipelines import tracking
from pipelines.feature_net import ensure_feature_net
from pipelines.train_gan import train_gan_flow

MODEL = "gan-consumer"
IMAGE_MODEL = "gan-consumer-images"
CONSUMER = """
import importlib.util, json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
for package in ("anomaly", "generative", "pipelines"):
    assert importlib.util.find_spec(package) is None, f"{package} must not be importable here"
import mlflow, pandas as pd
uri, requests = sys.argv[1], pd.DataFrame(json.loads(sys.argv[2]))
output = mlflow.pyfunc.load_model(uri).predict(requests)
import anomaly
assert "prefect" not in sys.modules and "pipelines" not in sys.modules
print("RESULT" + json.dumps({"anomaly_file": anomaly.__file__, "output": output.to_dict("list")}))
"""
REQUESTS = {"n": [5, 3], "seed": [11, 12], "class": [0, 1], "truncation": [None, 1.5]}


@pytest.fixture(scope="module")
def generator(prefect_harness, mlflow_store, tabular_csv) -> dict:
    """A tiny conditional table GAN (classes 0 and 1 of the label column)."""
    return train_gan_flow(
        str(tabular_csv), {"conditional": True, "hidden_dims": [16], "latent_dim": 4},
        {"epochs": 1, "batch_size": 128}, model_name=MODEL, label_column="label",
    )  # fmt: skip


@pytest.fixture(scope="module")
def image_generator(prefect_harness, mlflow_store, shared_data_dir) -> dict:
    """A tiny unconditional DCGAN on 128 Fashion-MNIST images (and, if the store has none yet,
    a tiny feature net for its metrics)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENAD_DATA_DIR", str(shared_data_dir))
        patch.setenv("GENAD_DATA_MIRROR", "http://127.0.0.1:9/")
        options = {"channels": [8], "feature_dim": 16}
        ensure_feature_net("fashion-mnist", train_rows=512, eval_rows=256, net_config=options)
        return train_gan_flow(
            "fashion-mnist", {"base_channels": 4, "latent_dim": 8}, {"epochs": 1},
            model_name=IMAGE_MODEL, max_rows=128, reference_rows=100,
        )  # fmt: skip


def run_consumer(uri: str, requests: dict, tmp_path) -> dict:
    """The CONSUMER script in an isolated child; returns its parsed result."""
    # One torch thread like the test process (conftest): a conv's float sums then run in the
    # same order, so samples are bit-identical (other thread counts differ in the last bit).
    return run_consumer_script(
        CONSUMER, [uri, json.dumps(requests)], tmp_path,
        MLFLOW_TRACKING_URI=tracking.tracking_uri(), OMP_NUM_THREADS="1",
    )  # fmt: skip


def test_consumer_without_genad_draws_the_same_samples(generator, tmp_path):
    uri = f"models:/{MODEL}@challenger"
    result = run_consumer(uri, REQUESTS, tmp_path)
    assert str(tracking.PROJECT_ROOT) not in result["anomaly_file"]  # shipped code, not the repo
    assert "/code/anomaly/" in result["anomaly_file"]
    served = pd.DataFrame(result["output"])
    expected = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame(REQUESTS))
    assert len(served) == 8 and list(served.columns) == list(expected.columns)
    assert served["class"].tolist() == [0] * 5 + [1] * 3
    features = ["f0", "f1", "f2", "f3"]
    pd.testing.assert_frame_equal(served[features], expected[features], check_exact=True)


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite (its 8-minute bar)
def test_consumer_without_genad_draws_the_same_images(image_generator, tmp_path):
    uri = f"models:/{IMAGE_MODEL}@challenger"
    requests = {"n": [3, 2], "seed": [1, 2]}
    result = run_consumer(uri, requests, tmp_path)
    served = pd.DataFrame(result["output"])
    expected = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame(requests))
    pixels = [f"pixel{i}" for i in range(28 * 28)]
    assert len(served) == 5 and list(served.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(served[pixels], expected[pixels], check_exact=True)
    assert served[pixels].min().min() >= 0.0 and served[pixels].max().max() <= 1.0

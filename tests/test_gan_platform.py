"""GANs through the platform on a real (temporary) Prefect server and a real sqlite MLflow store:
`train_gan_flow` (what a run logs, the registered generator, divergence), the generator pyfunc
(the request/response contract) and `synthesize_flow` (formats, provenance, atomic failure)."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from anomaly.data.gan_data import GanDataSpec, load_gan_data
from anomaly.packaged.generation import MAX_SAMPLES_PER_CALL, Request, RequestError, load_generator
from generative.gan import TrainingDivergedError
from generative.registry import load_model
from pipelines import tracking
from pipelines.synth import synthesize_flow, to_uint8
from pipelines.train_gan import train_gan_flow

IMAGE_MODEL, TABLE_MODEL = "gan-images", "gan-table"
# feature -> (mean, sd): far from standardised units
TABLE_UNITS = {"height": (170, 10), "weight": (70, 15), "ratio": (0.5, 0.01), "temp": (-40, 3)}
TINY_TABLE_GAN = {"conditional": True, "hidden_dims": [16], "latent_dim": 4}


pytestmark = pytest.mark.usefixtures("no_heartbeats")


@pytest.fixture(scope="module")
def image_gan(prefect_harness, mlflow_store, feature_net) -> dict:
    """A conditional DCGAN trained for 2 epochs on 320 Fashion-MNIST images."""
    gan = {"conditional": True, "base_channels": 8, "latent_dim": 16}
    return train_gan_flow(
        "fashion-mnist", gan, {"epochs": 2, "batch_size": 64}, model_name=IMAGE_MODEL,
        max_rows=320, reference_rows=200,
    )  # fmt: skip


def unit_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Rows in units far from standard (e.g. mean 170, sd 10), with a 0/1 label column."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({k: rng.normal(m, s, n) for k, (m, s) in TABLE_UNITS.items()})
    frame["label"] = (rng.random(n) < 0.3).astype(int)
    return frame


@pytest.fixture(scope="module")
def table_gan(prefect_harness, mlflow_store, tmp_path_factory) -> dict:
    """A conditional MLP GAN trained for 2 epochs on a table in its own units."""
    path = tmp_path_factory.mktemp("table") / "units.csv"
    unit_table().to_csv(path, index=False)
    trained = train_gan_flow(
        str(path), TINY_TABLE_GAN, {"epochs": 2, "batch_size": 64}, model_name=TABLE_MODEL,
        label_column="label",
    )  # fmt: skip
    return {**trained, "csv": path}


def challenger(name: str):
    return mlflow.pyfunc.load_model(f"models:/{name}@challenger")


# --- what a training run logs -------------------------------------------------------------------
def test_image_run_logs_losses_grids_interpolations_and_metrics(image_gan, feature_net):
    client = MlflowClient()
    run = client.get_run(image_gan["run_id"])
    assert image_gan["epochs_run"] == 2 == int(run.data.metrics["epochs_run"])
    for key in ("epoch_d_loss", "epoch_g_loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == [0, 1]
    samples = sorted(a.path for a in client.list_artifacts(run.info.run_id, "samples"))
    assert samples == ["samples/epoch_001.png", "samples/epoch_002.png"]
    local = mlflow.artifacts.download_artifacts(f"{run.info.artifact_uri}/samples/epoch_002.png")
    assert Image.open(local).size == (8 * 30 + 2, 10 * 30 + 2)  # 8 columns, one row per class
    latent = {a.path for a in client.list_artifacts(run.info.run_id, "latent")}
    assert latent == {"latent/interpolation_linear.png", "latent/interpolation_spherical.png"}
    config = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/config/resolved.json")
    assert config["gan"]["architecture"] == "dcgan" and config["gan"]["num_classes"] == 10
    assert config["trainer"]["epochs"] == 2 and config["data"]["rows"] == 320
    for key in ("fid", "kid", "kid_std", "precision", "recall"):
        assert np.isfinite(run.data.metrics[key]), key
    assert 0.0 <= run.data.metrics["precision"] <= 1.0
    _, identity = feature_net
    assert run.data.params["feature_net.name"] == identity.name == "genad-features-fashion-mnist"
    assert run.data.params["feature_net.version"] == identity.version
    assert run.data.params["data.reference"] == "fashion-mnist test split (200 rows)"
    assert run.data.params["gan.loss"] == "non_saturating"


def test_generator_is_registered_as_challenger_with_a_signature(image_gan):
    version = MlflowClient().get_model_version(IMAGE_MODEL, str(image_gan["version"]))
    assert "challenger" in version.aliases
    assert version.tags["genad.run_id"] == image_gan["run_id"]
    assert tracking.alias_history(IMAGE_MODEL, version.version)[-1]["what"] == "register"
    info = mlflow.models.get_model_info(f"models:/{IMAGE_MODEL}@challenger")
    assert info.signature.inputs.input_names() == ["n", "seed", "class", "truncation"]
    assert info.signature.inputs.required_input_names() == ["n", "seed", "class"]
    outputs = info.signature.outputs.input_names()
    assert outputs[:4] == ["request", "class", "seed", "sample_index"]
    assert outputs[4:] == [f"pixel{i}" for i in range(784)]


def test_table_run_logs_distances_and_c2st(table_gan):
    client = MlflowClient()
    run = client.get_run(table_gan["run_id"])
    assert len(client.get_metric_history(run.info.run_id, "epoch_d_loss")) == 2
    assert 0.0 <= run.data.metrics["c2st_auc"] <= 1.0
    for feature in TABLE_UNITS:
        assert 0.0 <= run.data.metrics[f"ks.{feature}"] <= 1.0
        assert run.data.metrics[f"wasserstein_1.{feature}"] >= 0.0
    table = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/quality/feature_distances.csv")
    assert table.splitlines()[0] == "feature,ks,ks_pvalue,wasserstein_1"
    assert run.data.params["data.reference"] == "held-out 0.2 of the rows (120 rows)"
    assert not client.list_artifacts(run.info.run_id, "samples")  # grids are for images


# --- the generator pyfunc ---------------------------------------------------------------------
def test_image_pyfunc_returns_samples_by_request(image_gan):
    model = challenger(IMAGE_MODEL)
    requests = pd.DataFrame({"n": [3, 2], "seed": [0, 0], "class": [0, 7]})
    out = model.predict(requests)
    assert list(out.columns[:4]) == ["request", "class", "seed", "sample_index"]
    assert out.shape == (5, 4 + 784)
    assert out["request"].tolist() == [0, 0, 0, 1, 1]
    assert out["class"].tolist() == [0, 0, 0, 7, 7]
    assert out["sample_index"].tolist() == [0, 1, 2, 0, 1]
    pixels = out.filter(like="pixel").to_numpy()
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0 and pixels.std() > 0
    pd.testing.assert_frame_equal(model.predict(requests), out)  # deterministic
    other_seed = model.predict(requests.assign(seed=1)).filter(like="pixel").to_numpy()
    assert np.abs(other_seed - pixels).max() > 1e-3  # 2 epochs: samples are still near grey
    resolved = tracking.resolve_model(f"models:/{IMAGE_MODEL}@challenger", artifact="generator")
    bundle = load_generator(resolved.bundle_dir)
    np.testing.assert_array_equal(pixels[:3], bundle.generate(Request(3, 0, 0)).reshape(3, -1))
    truncated = model.predict(requests.assign(truncation=0.5)).filter(like="pixel").to_numpy()
    assert not np.array_equal(truncated, pixels)


@pytest.mark.parametrize(
    ("requests", "error", "message"),
    [
        ({"n": [2], "seed": [0], "class": [11]}, RequestError, "unknown class 11"),
        ({"n": [0], "seed": [0], "class": [1]}, RequestError, "n must be >= 1"),
        ({"n": [MAX_SAMPLES_PER_CALL + 1], "seed": [0], "class": [1]}, RequestError, "at most"),
        ({"n": [2], "seed": [-1], "class": [1]}, RequestError, "seed must be"),
        ({"n": [2], "seed": [0], "class": [1], "truncation": [-1.0]}, RequestError, "truncation"),
        ({"n": [2], "class": [1]}, mlflow.exceptions.MlflowException, "missing inputs"),
    ],
)
def test_image_pyfunc_refuses_bad_requests(image_gan, requests, error, message):
    with pytest.raises(error, match=message):
        challenger(IMAGE_MODEL).predict(pd.DataFrame(requests))


def test_table_samples_are_in_the_training_units(table_gan):
    resolved = tracking.resolve_model(f"models:/{TABLE_MODEL}@challenger", artifact="generator")
    scaler = json.loads((resolved.bundle_dir / "scaler.json").read_text())
    # The scaler holds the training rows' mean: with the 120 held-out rows it makes the CSV's.
    data = load_gan_data(GanDataSpec(str(table_gan["csv"]), label_column="label"), seed=0)
    full = pd.read_csv(table_gan["csv"])[list(TABLE_UNITS)].to_numpy()
    pooled = (480 * np.array(scaler["mean"]) + 120 * data.reference.mean(axis=0)) / 600
    np.testing.assert_allclose(pooled, full.mean(axis=0), rtol=1e-12)
    out = challenger(TABLE_MODEL).predict(pd.DataFrame({"n": [400], "seed": [3], "class": [1]}))
    assert list(out.columns) == ["request", "class", "seed", "sample_index", *TABLE_UNITS]
    # Exactly the inverse transform of the GAN's standardised output:
    gan = load_model(resolved.bundle_dir)
    raw = gan.sample(400, 1, seed=3).numpy()  # class 1 is index 1 of the classes [0, 1]
    expected = raw * np.array(scaler["scale"]) + np.array(scaler["mean"])
    np.testing.assert_allclose(out[list(TABLE_UNITS)].to_numpy(), expected, rtol=1e-6)
    # A 2-epoch GAN's standardised output is O(1), so its means lie within 3 sd of the data's
    # (in standardised units "height" would sit 17 sd below its mean of 170).
    for feature, (mean, sd) in TABLE_UNITS.items():
        assert abs(out[feature].mean() - mean) < 3 * sd, feature


def test_an_unconditional_generator_takes_no_class(prefect_harness, mlflow_store, tmp_path):
    path = tmp_path / "unlabelled.csv"
    unit_table(n=200).drop(columns="label").to_csv(path, index=False)
    gan = {"hidden_dims": [16], "latent_dim": 4}
    train_gan_flow(str(path), gan, {"epochs": 1}, model_name="gan-unconditional")
    uri = "models:/gan-unconditional@challenger"
    out = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"n": [3], "seed": [0]}))
    assert out["class"].isna().all() and len(out) == 3
    record = synthesize_flow(uri, 5, None, str(tmp_path / "rows.parquet"))
    assert record["counts"] == {"all": 5} and record["requests"][0]["seed"] == 0
    assert list(pd.read_parquet(tmp_path / "rows.parquet").columns) == list(TABLE_UNITS)
    with pytest.raises(ValueError, match="unconditional; do not give classes"):
        synthesize_flow(uri, 5, [1], str(tmp_path / "other.parquet"))
    assert not (tmp_path / "other.parquet").exists()


# --- divergence -------------------------------------------------------------------------------
def test_a_diverged_run_fails_the_flow_and_keeps_what_it_logged(prefect_harness, table_gan):
    """SGD at lr 1e6 with the minimax loss overflows D's logits in the first epoch."""
    trainer = {"optimizer": "sgd", "lr_generator": 1e6, "lr_discriminator": 1e6, "epochs": 2}
    with pytest.raises(TrainingDivergedError, match="NaN or infinite in epoch 1"):
        train_gan_flow(
            str(table_gan["csv"]), {"loss": "minimax", "hidden_dims": [16]}, trainer,
            model_name="gan-diverged", label_column="label",
        )  # fmt: skip
    (run,) = MlflowClient().search_runs(
        [tracking.ensure_experiment("genad-train")],
        "tags.`genad.model_name` = 'gan-diverged'",
    )
    assert run.info.status == "FAILED" and run.data.tags["genad.diverged"] == "true"
    assert run.data.params["trainer.lr_generator"] == "1000000.0"
    assert run.data.metrics["epochs_run"] == 0
    text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/divergence.txt")
    assert "Lower the learning rates" in text
    assert mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/config/resolved.json")["gan"]
    assert not MlflowClient().search_registered_models("name = 'gan-diverged'")


# --- synthesize_flow --------------------------------------------------------------------------
def test_synth_writes_npz_and_png_folder_with_provenance(image_gan, tmp_path):
    uri = f"models:/{IMAGE_MODEL}@challenger"
    record = synthesize_flow(uri, 4, [0, 3], str(tmp_path / "s.npz"), seed=5)
    with np.load(tmp_path / "s.npz") as archive:
        X, y = archive["X"], archive["y"]
    assert X.shape == (8, 1, 28, 28) and X.dtype == np.uint8
    assert y.tolist() == [0] * 4 + [3] * 4
    provenance = json.loads((tmp_path / "s.npz.provenance.json").read_text())
    assert provenance == record
    assert provenance["counts"] == {"0": 4, "3": 4} and provenance["samples"] == 8
    assert provenance["model_name"] == IMAGE_MODEL
    assert provenance["model_version"] == str(image_gan["version"])
    assert provenance["run_id"] == image_gan["run_id"] and provenance["seed"] == 5
    assert provenance["truncation"] is None and provenance["created_at"].endswith("Z")
    assert provenance["genad_version"] and provenance["torch_version"]
    # Each class's samples are the pyfunc's answer to that class's recorded request.
    requests = pd.DataFrame(provenance["requests"])
    served = challenger(IMAGE_MODEL).predict(requests).filter(like="pixel").to_numpy()
    np.testing.assert_array_equal(X.reshape(8, -1), to_uint8(served))
    synthesize_flow(uri, 4, [0, 3], str(tmp_path / "pngs"), seed=5)
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == ["0", "3"]
    files = sorted((tmp_path / "pngs" / "3").iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(4)]
    np.testing.assert_array_equal(np.asarray(Image.open(files[2])), X[6, 0])
    assert (tmp_path / "pngs.provenance.json").is_file()


def test_synth_writes_parquet_rows_in_the_training_units(table_gan, tmp_path):
    uri = f"models:/{TABLE_MODEL}@challenger"
    record = synthesize_flow(uri, 6, None, str(tmp_path / "rows.parquet"), seed=1, truncation=2.0)
    rows = pd.read_parquet(tmp_path / "rows.parquet")
    assert list(rows.columns) == [*TABLE_UNITS, "class"]
    assert rows["class"].tolist() == [0] * 6 + [1] * 6  # every class by default
    assert record["counts"] == {"0": 6, "1": 6} and record["truncation"] == 2.0
    served = challenger(TABLE_MODEL).predict(
        pd.DataFrame(record["requests"]).assign(truncation=2.0)
    )
    np.testing.assert_array_equal(rows[list(TABLE_UNITS)], served[list(TABLE_UNITS)])
    again = synthesize_flow(uri, 6, None, str(tmp_path / "again.npz"), seed=1, truncation=2.0)
    with np.load(tmp_path / "again.npz") as archive:
        np.testing.assert_array_equal(archive["X"], rows[list(TABLE_UNITS)].to_numpy())
        assert archive["feature_names"].tolist() == list(TABLE_UNITS)
    assert again["requests"] == record["requests"]


@pytest.mark.parametrize(
    ("name", "classes", "message"),
    [
        ("s.npz", [0, 12], "unknown class 12"),
        ("s.parquet", [0], "does not take them"),  # Parquet is for tables
        ("s.csv", [0], "cannot tell the format"),
    ],
)
def test_a_failed_synth_leaves_no_output_and_no_temp_files(
    image_gan, tmp_path, name, classes, message
):
    previous = tmp_path / "s.npz"
    previous.write_bytes(b"previous run")
    with pytest.raises(ValueError, match=message):
        synthesize_flow(f"models:/{IMAGE_MODEL}@challenger", 3, classes, str(tmp_path / name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]
    assert previous.read_bytes() == b"previous run"


def test_synth_refuses_to_replace_a_folder_it_did_not_write(image_gan, tmp_path):
    keep = tmp_path / "photos"
    keep.mkdir()
    (keep / "holiday.png").write_bytes(b"not ours")
    with pytest.raises(ValueError, match="not a previous synth output"):
        synthesize_flow(f"models:/{IMAGE_MODEL}@challenger", 2, [1], str(keep))
    assert [p.name for p in keep.iterdir()] == ["holiday.png"]


class BrightnessClassifier:
    """Calls an image class 1 when its mean pixel is above `cut`, else class 0."""

    def __init__(self, cut: float) -> None:
        self.cut = cut

    def predict(self, x):
        return (x.flatten(1).mean(1) > self.cut).long()


def test_brightness_analogy_relates_two_classes_and_renders_the_grid():
    """The arithmetic report on an unconditional image GAN with a classifier that knows two
    classes: the grid (3 group means, the result, 7 variations), shares in [0, 1], the same
    numbers again for the same seed, and a clear refusal when only one class is seen. Whether
    the analogy works on a trained GAN is measured in benchmarks/gan_quality.py."""
    from generative.gan import GAN, GANConfig
    from generative.gan.latent import brightness_analogy

    torch.manual_seed(0)
    gan = GAN(GANConfig((1, 28, 28), architecture="dcgan", base_channels=8, latent_dim=16))
    brightness = gan.sample(400, seed=0).flatten(1).mean(1)
    net = BrightnessClassifier(float(brightness.median()))
    metrics, grid = brightness_analogy(gan, net, seed=0, n=400)
    assert grid.shape == (28 + 4, 11 * 30 + 2, 1)
    assert {metrics["arithmetic.class_a"], metrics["arithmetic.class_b"]} == {0.0, 1.0}
    assert 0.0 <= metrics["arithmetic.class_b_share"] <= 1.0
    assert brightness_analogy(gan, net, seed=0, n=400)[0] == metrics
    with pytest.raises(ValueError, match="no analogy"):
        brightness_analogy(gan, BrightnessClassifier(2.0), seed=0, n=400)


def test_grids_are_logged_at_powers_of_two_and_the_last_epoch():
    from types import SimpleNamespace

    from pipelines.train_gan import SampleGridLogger

    class Recorder(SampleGridLogger):
        def __init__(self) -> None:  # no MLflow run: only the schedule is under test
            self.logged: list[int] = []

        def log_grid(self, trainer, epoch: int) -> None:
            self.logged.append(epoch + 1)

    for epochs, expected in [(10, [1, 2, 4, 8, 10]), (8, [1, 2, 4, 8]), (1, [1]), (3, [1, 2, 3])]:
        recorder = Recorder()
        trainer = SimpleNamespace(history=[{}] * epochs)
        for epoch in range(epochs):
            recorder.on_epoch_end(trainer, epoch, {})
        recorder.on_train_end(trainer)
        assert recorder.logged == expected

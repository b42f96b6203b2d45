"""CycleGAN through the platform on a real (temporary) Prefect server and a real sqlite MLflow
store: `train_cyclegan_flow` (what a run logs, the registered translator), the translator
pyfunc (the images in / images out contract, bad input), `translate_flow` (npz and PNG
output, provenance, atomic failure) and the `genad train cyclegan` / `genad translate`
commands (exit 0, and 2 with one line on stderr for bad input)."""

from __future__ import annotations

import json
import math
import re

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from anomaly.data import load_dataset
from anomaly.data.cyclegan_data import CycleDataSpec, load_cycle_data
from anomaly.packaged.translation import TranslationInputError, load_translator
from pipelines import tracking
from pipelines.cli import main
from pipelines.synth import to_uint8
from pipelines.train_cyclegan import train_cyclegan_flow
from pipelines.translate import translate_flow

MODEL = "cyclegan-test"
TINY = {"base_channels": 4, "residual_blocks": 1}
PIXELS = [f"pixel{i}" for i in range(784)]


pytestmark = pytest.mark.usefixtures("no_heartbeats")


@pytest.fixture(scope="module")
def trained(prefect_harness, mlflow_store, catalog_env) -> dict:
    """A tiny CycleGAN, 2 epochs on 64 + 64 MNIST digits (B inverted), 32 test digits."""
    return train_cyclegan_flow(
        "mnist", "invert", TINY, {"epochs": 2, "batch_size": 16}, model_name=MODEL,
        max_rows=64, test_rows=32, classifier_epochs=1, classifier_rows=64,
    )  # fmt: skip


@pytest.fixture(scope="module")
def bundle(trained):
    """The registered translator, loaded in process."""
    resolved = tracking.resolve_model(f"models:/{MODEL}@challenger", artifact="translator")
    return load_translator(resolved.bundle_dir)


def test_data_halves_are_disjoint_and_test_b_is_t_of_test_a(catalog_env):
    """The 60 000 MNIST training digits are all distinct, so a digit in both domains would
    show as an A image equal to an un-inverted B image."""
    data = load_cycle_data(CycleDataSpec("mnist", "invert", test_rows=20), seed=0)
    assert len(data.train_a) == len(data.train_b) == 30_000
    a_rows = {row.tobytes() for row in to_uint8(data.train_a).reshape(30_000, -1)}
    b_rows = {row.tobytes() for row in to_uint8(1 - data.train_b).reshape(30_000, -1)}
    assert len(a_rows) == len(b_rows) == 30_000 and not a_rows & b_rows
    np.testing.assert_array_equal(data.test_b, 1 - data.test_a)
    with pytest.raises(ValueError, match="needs a transform"):
        CycleDataSpec("mnist")
    with pytest.raises(ValueError, match="either dataset"):
        CycleDataSpec("mnist", "invert", domain_a="x.npz", domain_b="y.npz")


def test_two_domains_are_split_into_training_and_held_out_test_images(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (50, 1, 8, 8), dtype=np.uint8)
    b = rng.integers(0, 256, (30, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", X=a, y=np.arange(50) % 3)
    np.savez(tmp_path / "b.npz", X=b, y=np.arange(30) % 3)
    spec = CycleDataSpec(domain_a=str(tmp_path / "a.npz"), domain_b=str(tmp_path / "b.npz"))
    data = load_cycle_data(spec, seed=0)
    assert (len(data.train_a), len(data.test_a)) == (40, 10)  # holdout 0.2
    assert (len(data.train_b), len(data.test_b)) == (24, 6)
    seen = {r.tobytes() for r in to_uint8(np.concatenate([data.train_a, data.test_a]))}
    assert seen == {r.tobytes() for r in a}  # every image once, in train or test
    assert data.transform is None and data.train_b_labels is not None
    np.savez(tmp_path / "c.npz", X=np.zeros((5, 3, 8, 8), dtype=np.uint8))
    spec = CycleDataSpec(domain_a=str(tmp_path / "a.npz"), domain_b=str(tmp_path / "c.npz"))
    with pytest.raises(ValueError, match="must share the image shape"):
        load_cycle_data(spec, seed=0)


def test_run_logs_losses_grids_config_and_metrics(trained, catalog_env):
    client = MlflowClient()
    run = client.get_run(trained["run_id"])
    assert trained["epochs_run"] == 2 == int(run.data.metrics["epochs_run"])
    for key in ("d_a", "d_b", "g_adv", "cycle", "identity", "g_total"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, f"epoch_{key}")]
        assert steps == [0, 1], key
    grids = sorted(a.path for a in client.list_artifacts(run.info.run_id, "translations"))
    assert grids == ["translations/epoch_001.png", "translations/epoch_002.png"]
    local = mlflow.artifacts.download_artifacts(f"{run.info.artifact_uri}/{grids[-1]}")
    assert Image.open(local).size == (8 * 30 + 2, 6 * 30 + 2)  # 8 images, 6 rows
    config = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/config/resolved.json")
    assert (
        config["cyclegan"]["image_shape"] == [1, 28, 28] and config["cyclegan"]["loss"] == "lsgan"
    )
    assert config["data"]["rows_a"] == 64 == config["data"]["rows_b"]
    assert run.data.params["data.transform"] == "invert"
    metrics = run.data.metrics
    finite = ("translation_error_ab", "translation_error_ba", "cycle_error_a",
              "translation_error_ab_untrained", "accuracy_ab", "accuracy_ab_untrained")  # fmt: skip
    for key in finite:
        assert math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["accuracy_ab"] <= 1.0 and 0.0 <= metrics["accuracy_target"] <= 1.0
    # The identity map's error is |x - (1 - x)| = |2x - 1| averaged over the 32 test digits.
    data = load_cycle_data(CycleDataSpec("mnist", "invert", max_rows=64, test_rows=32), seed=0)
    expected = np.abs(2 * data.test_a.astype(np.float64) - 1).mean()
    assert metrics["identity_map_error_ab"] == pytest.approx(expected, rel=1e-5)


def test_translator_is_registered_as_challenger_with_a_signature(trained):
    version = MlflowClient().get_model_version(MODEL, str(trained["version"]))
    assert "challenger" in version.aliases
    assert version.tags["genad.run_id"] == trained["run_id"]
    info = mlflow.models.get_model_info(f"models:/{MODEL}@challenger")
    assert info.signature.inputs.input_names() == [*PIXELS, "direction"]
    assert info.signature.inputs.required_input_names() == PIXELS
    assert info.signature.outputs.input_names() == PIXELS
    assert info.signature.params.to_dict()[0]["default"] == "a_to_b"


def digits(n: int, seed: int = 0) -> np.ndarray:
    X = load_dataset("mnist", split="test").X
    rows = np.random.default_rng(seed).choice(len(X), n, replace=False)
    return X[np.sort(rows)]


def test_pyfunc_translates_like_the_model_in_process(trained, bundle, catalog_env):
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@challenger")
    images = digits(5).astype(np.float64) / 255.0
    frame = pd.DataFrame(images.reshape(5, -1), columns=PIXELS)
    x = torch.from_numpy(images).float()
    for direction in ("a_to_b", "b_to_a"):
        out = model.predict(frame, params={"direction": direction})
        assert list(out.columns) == PIXELS and out.shape == (5, 784)
        expected = bundle.model.translate(x, direction).numpy().reshape(5, -1)
        np.testing.assert_allclose(out.to_numpy(), expected, rtol=0, atol=1e-6)
    default = model.predict(frame).to_numpy()
    mixed = model.predict(
        frame.assign(direction=["b_to_a", "a_to_b", "b_to_a", "a_to_b", "a_to_b"])
    )
    backward = model.predict(frame, params={"direction": "b_to_a"}).to_numpy()
    np.testing.assert_allclose(mixed.to_numpy()[[1, 3, 4]], default[[1, 3, 4]], atol=1e-6)
    np.testing.assert_allclose(mixed.to_numpy()[[0, 2]], backward[[0, 2]], atol=1e-6)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda f: f.assign(pixel5=2.0), TranslationInputError, r"must lie in \[0, 1\]"),
        (lambda f: f.assign(pixel5=np.nan), TranslationInputError, "NaN"),
        (lambda f: f.assign(direction="sideways"), TranslationInputError, "sideways"),
        (lambda f: f.drop(columns=["pixel7"]), mlflow.exceptions.MlflowException, "missing"),
        (lambda f: f.iloc[:0], TranslationInputError, "no rows"),
    ],
)
def test_pyfunc_refuses_bad_frames_by_name(trained, change, error, message):
    frame = pd.DataFrame(np.full((2, 784), 0.5), columns=PIXELS)
    with pytest.raises(error, match=message):
        mlflow.pyfunc.load_model(f"models:/{MODEL}@challenger").predict(change(frame))


def test_translate_flow_writes_npz_and_provenance(trained, bundle, catalog_env, tmp_path):
    source = tmp_path / "in.npz"
    X, y = digits(7), np.arange(7)
    np.savez(source, X=X, y=y)
    output = tmp_path / "out.npz"
    record = translate_flow(f"models:/{MODEL}@challenger", str(source), str(output), "b_to_a")
    with np.load(output) as archive:
        assert archive["X"].dtype == np.uint8 and archive["X"].shape == (7, 1, 28, 28)
        expected = bundle.translate(X, "b_to_a")
        np.testing.assert_array_equal(archive["X"], to_uint8(expected))
        np.testing.assert_array_equal(archive["y"], y)
    provenance = json.loads((tmp_path / "out.npz.provenance.json").read_text())
    assert provenance == record
    assert provenance["direction"] == "b_to_a" and provenance["images"] == 7
    assert provenance["model_name"] == MODEL and provenance["run_id"] == trained["run_id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "out.npz",
                                                          "out.npz.provenance.json"]  # fmt: skip


def test_translate_flow_failure_leaves_the_previous_output(trained, catalog_env, tmp_path):
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, X=digits(3))
    np.savez(bad, X=np.zeros((3, 1, 20, 20), dtype=np.uint8))
    output = tmp_path / "out.npz"
    translate_flow(f"models:/{MODEL}@challenger", str(good), str(output))
    before = output.read_bytes(), (tmp_path / "out.npz.provenance.json").read_bytes()
    with pytest.raises(TranslationInputError, match=r"images must be \(n, 1, 28, 28\)"):
        translate_flow(f"models:/{MODEL}@challenger", str(bad), str(output))
    after = output.read_bytes(), (tmp_path / "out.npz.provenance.json").read_bytes()
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staged files


# --- the command line ----------------------------------------------------------------------------
def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_translates_a_png_folder(trained, catalog_env, capsys, tmp_path):
    source = tmp_path / "pngs"
    source.mkdir()
    for index, image in enumerate(digits(4, seed=1)):
        Image.fromarray(image[0]).save(source / f"{index}.png")
    output = tmp_path / "translated"
    code, out, _ = run(
        capsys, "translate", "--model", f"models:/{MODEL}@challenger", "--input", str(source),
        "--output", str(output),
    )  # fmt: skip
    assert code == 0
    assert f"translated 4 images (a_to_b) with {MODEL} v1 to {output}" in out
    assert sorted(p.name for p in output.iterdir()) == [f"{i:06d}.png" for i in range(4)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "missing.npz", "--output", "o.npz"], "input not found"),
        (["--input", "{bad}", "--output", "o.npz"], r"images must be \(n, 1, 28, 28\)"),
        (["--input", "{good}", "--output", "o.csv"], "cannot tell the format"),
    ],
)
def test_cli_translate_exits_2_on_bad_input(trained, catalog_env, capsys, tmp_path, argv, message):
    np.savez(tmp_path / "bad.npz", X=np.zeros((2, 3, 28, 28), dtype=np.uint8))
    np.savez(tmp_path / "good.npz", X=digits(2))
    paths = {"{bad}": str(tmp_path / "bad.npz"), "{good}": str(tmp_path / "good.npz")}
    argv = [paths.get(a, a if not a.startswith("o.") else str(tmp_path / a)) for a in argv]
    code, _, err = run(capsys, "translate", "--model", f"models:/{MODEL}@challenger", *argv)
    assert code == 2
    assert err.startswith("genad translate: error:") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_cli_trains_a_cyclegan_with_the_flags_applied(mlflow_store, catalog_env, capsys):
    code, out, _ = run(
        capsys, "train", "cyclegan", "--dataset", "mnist", "--transform", "hflip",
        "--max-rows", "32", "--test-rows", "16", "--epochs", "1", "--batch-size", "16",
        "--base-channels", "4", "--residual-blocks", "1", "--lambda-identity", "0",
        "--classifier-epochs", "0", "--model-name", "cyclegan-cli",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["epochs_run"] == 1
    version = MlflowClient().get_model_version_by_alias("cyclegan-cli", "challenger")
    params = mlflow.get_run(version.run_id).data.params
    assert params["cyclegan.residual_blocks"] == "1" and params["cyclegan.lambda_identity"] == "0.0"
    assert params["trainer.batch_size"] == "16" and params["data.transform"] == "hflip"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "mnist"], "needs a transform"),
        (
            [
                "--dataset",
                "mnist",
                "--transform",
                "invert",
                "--cyclegan-config",
                '{"image_shape": [1, 8, 8]}',
            ],
            "set from the data",
        ),  # fmt: skip
        (
            ["--dataset", "mnist", "--transform", "invert", "--trainer-config", '{"lr": 1}'],
            "unknown CycleGANTrainerConfig fields",
        ),  # fmt: skip
    ],
)
def test_cli_train_cyclegan_exits_2_on_bad_input(mlflow_store, catalog_env, capsys, argv, message):
    code, _, err = run(capsys, "train", "cyclegan", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1

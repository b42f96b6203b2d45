"""Progressive GAN and StyleGAN through the platform: `train_progressive_flow` on a real Prefect
server and sqlite MLflow store (stage grids, metrics, resume from a stage checkpoint, the
registered generator), the StyleGAN pyfunc's truncation and mixing, and `synthesize_flow`."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from anomaly.packaged.generation import Request, RequestError, load_generator
from pipelines import tracking
from pipelines.synth import synthesize_flow
from pipelines.train_progressive import train_progressive_flow

STYLE_MODEL, PROGAN_MODEL = "stylegan-images", "progan-images"
TINY = {"latent_dim": 16, "channel_base": 64, "max_channels": 16}
SCHEDULE = {"batch_size": 16, "fade_images": 64, "stable_images": 64, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("no_heartbeats")


@pytest.fixture(scope="module")
def stylegan(prefect_harness, mlflow_store, feature_net) -> dict:
    """A tiny StyleGAN grown 4x4 -> 32x32 on 256 Fashion-MNIST images (padded from 28x28)."""
    model = {**TINY, "w_dim": 16, "mapping_layers": 2}
    return train_progressive_flow(
        "stylegan", "fashion-mnist", model, SCHEDULE, model_name=STYLE_MODEL, max_rows=256,
        reference_rows=200,
    )  # fmt: skip


def artifact_paths(run_id: str, folder: str) -> list[str]:
    return sorted(a.path for a in MlflowClient().list_artifacts(run_id, folder))


def test_stylegan_flow_logs_every_stage_and_registers(stylegan: dict) -> None:
    run = MlflowClient().get_run(stylegan["run_id"])
    assert stylegan["stage_reached"] == 3 and stylegan["phases_run"] == 7
    assert artifact_paths(stylegan["run_id"], "samples") == [
        f"samples/stage_{k}_{4 * 2**k}x{4 * 2**k}.png" for k in range(4)
    ]
    assert "latent/interpolation_z_vs_w.png" in artifact_paths(stylegan["run_id"], "latent")
    metrics = run.data.metrics
    assert metrics["stage_reached"] == 3 and metrics["alpha_reached"] == 1.0
    for key in ("fid", "kid", "precision", "recall", "epoch_d_loss", "epoch_alpha"):
        assert np.isfinite(metrics[key]), key
    assert run.data.params["model.mapping_layers"] == "2"
    assert tracking.alias_version(STYLE_MODEL, "challenger") == str(stylegan["version"])


def test_stylegan_pyfunc_applies_psi_and_style_mixing(stylegan: dict) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{STYLE_MODEL}@challenger")
    bundle = load_generator(
        tracking.resolve_model(f"models:/{STYLE_MODEL}@challenger", artifact="generator").bundle_dir
    )
    assert bundle.styled and bundle.sample_shape == (1, 32, 32)
    request = pd.DataFrame({"n": [3], "seed": [4], "truncation": [0.0]})
    pixels = model.predict(request).filter(like="pixel").to_numpy()
    assert pixels.shape == (3, 1024)
    np.testing.assert_array_equal(model.predict(request).filter(like="pixel").to_numpy(), pixels)
    np.testing.assert_allclose(pixels, bundle.generate(Request(3, None, 4, 0.0)).reshape(3, -1))
    # psi = 0: every z maps to the mean w, so the three samples differ only by their noise
    gan = bundle.gan
    with torch.no_grad():
        z = gan.sample_latent(3, generator=torch.Generator().manual_seed(4))
        quiet = gan.generate(z, psi=0.0, noise_mode="none").flatten(1).numpy()
    np.testing.assert_allclose(quiet, np.repeat(quiet[:1], 3, axis=0), atol=1e-5)
    layers = gan.config.num_layers
    plain = pd.DataFrame({"n": [2], "seed": [1]})
    unmixed = model.predict(plain).filter(like="pixel").to_numpy()
    no_op = model.predict(plain.assign(mix_seed=9, mix_layer=layers)).filter(like="pixel")
    np.testing.assert_array_equal(no_op.to_numpy(), unmixed)
    mixed = model.predict(plain.assign(mix_seed=9, mix_layer=2)).filter(like="pixel").to_numpy()
    assert np.abs(mixed - unmixed).max() > 1e-3


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"truncation": [1.5]}, "psi"),
        ({"mix_seed": [3]}, "both mix_seed and mix_layer"),
        ({"mix_seed": [3], "mix_layer": [99]}, "mix_layer must be in"),
    ],
)
def test_stylegan_requests_are_checked(stylegan: dict, columns: dict, message: str) -> None:
    bundle = load_generator(
        tracking.resolve_model(f"models:/{STYLE_MODEL}@challenger", artifact="generator").bundle_dir
    )
    with pytest.raises(RequestError, match=message):
        bundle.generate_frame(pd.DataFrame({"n": [1], "seed": [0], **columns}))


def test_progan_flow_resumes_from_a_stage_checkpoint(
    prefect_harness, mlflow_store, feature_net, tmp_path
) -> None:
    first = train_progressive_flow(
        "progan", "fashion-mnist", TINY, {**SCHEDULE, "stop_after_stage": 1},
        model_name=PROGAN_MODEL, max_rows=128, reference_rows=200, checkpoint_dir=str(tmp_path),
        log_checkpoints=True,
    )  # fmt: skip
    assert first["stage_reached"] == 1 and first["phases_run"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage_0_4x4", "stage_1_8x8"]
    logged = artifact_paths(first["run_id"], "checkpoints/stage_1_8x8")
    assert "checkpoints/stage_1_8x8/trainer_state.pt" in logged
    resumed = train_progressive_flow(
        "progan", "fashion-mnist", TINY, SCHEDULE, model_name=PROGAN_MODEL, max_rows=128,
        reference_rows=200, resume_from=str(tmp_path / "stage_1_8x8"),
    )  # fmt: skip
    assert resumed["stage_reached"] == 3 and resumed["phases_run"] == 7  # history carried on
    assert artifact_paths(resumed["run_id"], "samples") == [
        "samples/stage_2_16x16.png", "samples/stage_3_32x32.png"
    ]  # fmt: skip
    bundle = load_generator(
        tracking.resolve_model(
            f"models:/{PROGAN_MODEL}@challenger", artifact="generator"
        ).bundle_dir
    )
    with pytest.raises(RequestError, match="need a StyleGAN"):
        bundle.generate_frame(
            pd.DataFrame({"n": [1], "seed": [0], "mix_seed": [1], "mix_layer": [1]})
        )


def test_progressive_flow_with_one_seed_trains_the_same_weights(
    prefect_harness, mlflow_store, feature_net, tmp_path
) -> None:
    """The seed covers the initial weights too (they were drawn unseeded before): two runs of
    the flow end in the same stage-0 weights, bit for bit on one thread."""
    folders = [tmp_path / "first", tmp_path / "second"]
    for folder in folders:
        train_progressive_flow(
            "progan", "fashion-mnist", TINY, {**SCHEDULE, "stop_after_stage": 0},
            model_name=PROGAN_MODEL, max_rows=64, reference_rows=200, checkpoint_dir=str(folder),
        )  # fmt: skip
    first, second = (
        torch.load(folder / "stage_0_4x4" / "model.pt", weights_only=True) for folder in folders
    )
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


def test_progressive_flow_refuses_bad_settings(prefect_harness, mlflow_store, catalog_env) -> None:
    with pytest.raises(ValueError, match="family must be one of"):
        train_progressive_flow("dcgan", "fashion-mnist")
    with pytest.raises(ValueError, match="set from the data"):
        train_progressive_flow("progan", "fashion-mnist", {"data_shape": [1, 8, 8]}, max_rows=32)
    with pytest.raises(ValueError, match="unknown ProgressiveTrainerConfig fields"):
        train_progressive_flow("progan", "fashion-mnist", trainer={"epochs": 3})


def test_synthesize_from_a_stylegan_with_psi_and_mixing(stylegan: dict, tmp_path) -> None:
    output = tmp_path / "styled.npz"
    record = synthesize_flow(
        f"models:/{STYLE_MODEL}@challenger", 5, None, str(output), seed=2, truncation=0.5,
        mix_seed=7, mix_layer=4,
    )  # fmt: skip
    with np.load(output) as saved:
        assert saved["X"].shape == (5, 1, 32, 32) and saved["X"].dtype == np.uint8
    provenance = json.loads(output.with_name("styled.npz.provenance.json").read_text())
    assert provenance == record
    assert record["requests"] == [{"class": None, "n": 5, "seed": 2, "mix_seed": 7, "mix_layer": 4}]
    with pytest.raises(RequestError, match="psi"):
        synthesize_flow(
            f"models:/{STYLE_MODEL}@challenger", 5, None, str(tmp_path / "b.npz"), truncation=2.0
        )
    assert not (tmp_path / "b.npz").exists()


def test_cli_trains_a_progan_and_synthesises_with_style_options(
    stylegan: dict, tmp_path, capsys
) -> None:
    from pipelines.cli import main

    code = main([
        "train", "progan", "--dataset", "fashion-mnist", "--max-rows", "64",
        "--reference-rows", "50", "--model-name", "cli-progan", "--batch-size", "16",
        "--fade-images", "16", "--stable-images", "16", "--model-config", json.dumps(TINY),
        "--trainer-config", '{"device": "cpu"}', "--loss", "wgan_gp", "--r1-gamma", "0",
    ])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stage_reached"] == 3
    params = mlflow.get_run(result["run_id"]).data.params
    assert (params["model.loss"], float(params["model.r1_gamma"])) == ("wgan_gp", 0.0)
    out = tmp_path / "mixed.npz"
    args = ["synth", "--model", f"models:/{STYLE_MODEL}@challenger", "--n", "3"]
    assert main([*args, "--output", str(out), "--mix-seed", "4", "--mix-layer", "2"]) == 0
    assert np.load(out)["X"].shape == (3, 1, 32, 32)
    assert main([*args, "--output", str(tmp_path / "bad.npz"), "--mix-seed", "4"]) == 2
    assert "both mix_seed and mix_layer" in capsys.readouterr().err
    assert main(["train", "stylegan", "--dataset", "fashion-mnist", "--budget-s", "-1"]) == 2


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite (its 8-minute bar)
def test_a_consumer_without_genad_draws_the_same_styled_images(stylegan: dict, tmp_path) -> None:
    """The registered StyleGAN, loaded by a `python -I` child without genad (the GAN consumer
    test's harness), answers a psi + mixing request with the in-process pixels."""
    from test_gan_consumer import run_consumer  # tests/ is on sys.path (rootdir conftest)

    uri = f"models:/{STYLE_MODEL}@challenger"
    # a frame mixes every row or none (MLflow refuses NaN in a long column): mix_layer =
    # num_layers (8 here) leaves the second row unmixed
    requests = {"n": [2, 2], "seed": [1, 2], "truncation": [0.7, None], "mix_seed": [5, 5],
                "mix_layer": [3, 8]}  # fmt: skip
    result = run_consumer(uri, requests, tmp_path)
    assert str(tracking.PROJECT_ROOT) not in result["anomaly_file"]  # shipped code
    served = pd.DataFrame(result["output"])
    expected = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame(requests))
    pixels = [f"pixel{i}" for i in range(32 * 32)]
    pd.testing.assert_frame_equal(served[pixels], expected[pixels], check_exact=True)

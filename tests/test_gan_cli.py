"""`genad train gan` and `genad synth`: they run the flows and say what they did; bad input
exits 2 with one line on stderr (before any run or output), a diverged run exits 1."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipelines import cli
from pipelines.cli import main
from pipelines.cli_parser import build_parser
from pipelines.synth import FORMATS

MODEL = "gan-cli"


pytestmark = pytest.mark.usefixtures("no_heartbeats")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(prefect_harness, mlflow_store, tabular_csv) -> dict:
    """`genad train gan` on the labelled tabular CSV: a conditional MLP GAN, one epoch."""
    code = main(
        ["train", "gan", "--dataset", str(tabular_csv), "--label-column", "label",
         "--conditional", "--epochs", "1", "--batch-size", "128", "--latent-dim", "4",
         "--gan-config", '{"hidden_dims": [16]}', "--loss", "lsgan", "--model-name", MODEL]
    )  # fmt: skip
    assert code == 0
    return {"csv": tabular_csv}


def test_train_gan_registers_a_challenger_with_the_flags_applied(trained):
    version = mlflow.MlflowClient().get_model_version_by_alias(MODEL, "challenger")
    params = mlflow.get_run(version.run_id).data.params
    assert params["gan.loss"] == "lsgan" and params["gan.latent_dim"] == "4"
    assert params["gan.num_classes"] == "2" and params["gan.hidden_dims"] == "(16,)"
    assert params["trainer.epochs"] == "1" and params["trainer.batch_size"] == "128"


def test_synth_writes_the_samples_and_says_so(trained, capsys, tmp_path):
    output = tmp_path / "rows.parquet"
    code, out, _ = run(
        capsys, "synth", "--model", f"models:/{MODEL}@challenger", "--n", "7", "--classes", "1",
        "--output", str(output), "--seed", "3", "--truncation", "1.5",
    )  # fmt: skip
    assert code == 0
    assert f"wrote 7 samples (1: 7) of {MODEL} v1 to {output}" in out
    rows = pd.read_parquet(output)
    assert rows.shape == (7, 5) and set(rows["class"]) == {1}
    provenance = json.loads((tmp_path / "rows.parquet.provenance.json").read_text())
    assert provenance["seed"] == 3 and provenance["truncation"] == 1.5


def test_synth_npz_by_format_flag(trained, capsys, tmp_path):
    output = tmp_path / "rows.bin"
    code, _, _ = run(
        capsys, "synth", "--model", f"models:/{MODEL}@challenger", "--n", "2",
        "--output", str(output), "--format", "npz",
    )  # fmt: skip
    assert code == 0
    with np.load(output) as archive:
        assert archive["X"].shape == (4, 4) and archive["y"].tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        (f"models:/{MODEL}@challenger", ["--classes", "5"], "unknown class 5"),
        (f"models:/{MODEL}@champion", [], "has no alias 'champion'"),
        ("models:/no-such-gan@challenger", [], "no registered model 'no-such-gan'"),
        (MODEL, [], "is not of the form models:/<name>@<alias>"),
        (f"models:/{MODEL}@challenger", ["--format", "png"], "does not take them"),
        (f"models:/{MODEL}@challenger", ["--n", "0"], "n must be >= 1"),
    ],
)
def test_synth_bad_input_exits_2_and_writes_nothing(
    trained, capsys, tmp_path, model, extra, message
):
    argv = ["synth", "--model", model, "--n", "3", "--output", str(tmp_path / "o.parquet")]
    code, _, err = run(capsys, *argv, *extra)
    assert code == 2
    assert err.startswith("genad synth: error:") and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--gan-config", "{hidden: 3}"], "--gan-config is not valid JSON"),
        (["--gan-config", '{"width": 3}'], "unknown GANConfig fields: ['width']"),
        (["--trainer-config", '{"momentum": 0.9}'], "unknown GANTrainerConfig fields"),
        (["--gan-config", '{"num_classes": 3}'], "are set from the data"),
        (["--architecture", "dcgan"], "dcgan architecture needs square (C, H, W) images"),
    ],
)
def test_train_gan_bad_input_exits_2_before_any_run(
    mlflow_store, prefect_harness, tabular_csv, capsys, extra, message
):
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    code, _, err = run(capsys, "train", "gan", "--dataset", str(tabular_csv), *extra)
    assert code == 2 and err.startswith("genad train: error:") and message in err
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before


def test_train_gan_conditional_needs_labels(mlflow_store, prefect_harness, tmp_path, capsys):
    path = tmp_path / "unlabelled.csv"
    pd.DataFrame(np.random.default_rng(0).normal(size=(60, 3)), columns=list("abc")).to_csv(
        path, index=False
    )
    code, _, err = run(capsys, "train", "gan", "--dataset", str(path), "--conditional")
    assert code == 2 and "a conditional GAN needs class labels" in err


def test_a_diverged_run_exits_1_with_one_line(trained, capsys):
    code, _, err = run(
        capsys, "train", "gan", "--dataset", str(trained["csv"]), "--label-column", "label",
        "--loss", "minimax", "--optimizer", "sgd", "--lr", "1e6", "--epochs", "2",
        "--model-name", "gan-cli-diverged",
    )  # fmt: skip
    assert code == 1
    assert err.startswith("genad train: error: a GAN loss became NaN or infinite")
    assert err.count("\n") == 1


def test_the_parser_takes_every_synth_format_and_no_other():
    parser = build_parser(cli)
    synth = ["synth", "--model", "m", "--n", "1", "--output", "o", "--format"]
    assert [parser.parse_args([*synth, fmt]).format for fmt in FORMATS] == list(FORMATS)
    with pytest.raises(SystemExit):
        parser.parse_args([*synth, "gif"])


def test_the_small_data_recipe_flags_reach_the_trainer_config():
    from pipelines.cli_train import TRAINER_FLAGS, flag_settings

    args = build_parser(cli).parse_args(
        ["train", "gan", "--dataset", "fashion-mnist", "--augment", "translation,cutout",
         "--ada-target", "0.6", "--r1-gamma", "10", "--lr-decay-start", "0.5",
         "--trainer-config", '{"r1_interval": 8}']
    )  # fmt: skip
    settings = flag_settings(args, "trainer_config", TRAINER_FLAGS)
    assert settings == {
        "r1_interval": 8, "augment": "translation,cutout", "ada_target": 0.6, "r1_gamma": 10.0,
        "lr_decay_start": 0.5,
    }  # fmt: skip


def test_spectral_norm_reaches_the_gan_config_only_when_asked():
    from pipelines.cli_train import GAN_FLAGS, flag_settings

    base = ["train", "gan", "--dataset", "fashion-mnist"]
    asked = build_parser(cli).parse_args([*base, "--spectral-norm"])
    assert flag_settings(asked, "gan_config", GAN_FLAGS) == {"spectral_norm": True}
    assert flag_settings(build_parser(cli).parse_args(base), "gan_config", GAN_FLAGS) == {}


def test_train_gan_refuses_an_unknown_augmentation(mlflow_store, prefect_harness, capsys):
    code, _, err = run(capsys, "train", "gan", "--dataset", "fashion-mnist", "--augment", "blur")
    assert code == 2 and "unknown augmentation(s) ['blur']" in err


def test_fixed_resolution_reaches_stylegan_only():
    from generative.progressive.schedule import build_schedule
    from generative.progressive.trainer import ProgressiveTrainerConfig
    from generative.stylegan import StyleGANConfig
    from pipelines.cli_train import progressive_settings

    base = ["train", "stylegan", "--dataset", "fashion-mnist", "--budget-s", "60"]
    model, trainer = progressive_settings(
        build_parser(cli).parse_args([*base, "--fixed-resolution"])
    )
    assert model == {"progressive": False} and trainer == {"max_seconds": 60.0}
    assert progressive_settings(build_parser(cli).parse_args(base))[0] == {}
    config = StyleGANConfig(data_shape=(1, 32, 32), **model)
    schedule = build_schedule(4, ProgressiveTrainerConfig(), config.progressive)
    assert [(phase.stage, phase.kind) for phase in schedule] == [(3, "stable")]
    with pytest.raises(SystemExit):
        build_parser(cli).parse_args(["train", "progan", "--dataset", "x", "--fixed-resolution"])

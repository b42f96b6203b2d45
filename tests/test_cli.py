"""The `genad` command line: the subcommands work, and bad input exits 2 with a clear line."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from pipelines import cli
from pipelines.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_score_writes_the_output_and_says_so(champion, capsys, tmp_path):
    output = tmp_path / "scores.parquet"
    code, out, _ = run(
        capsys, "score", "--model-uri", champion["uri"], "--input", str(champion["csv"]),
        "--output", str(output), "--typicality-group-size", "100",
    )  # fmt: skip
    assert code == 0
    assert f"scored 800 rows with tabular-test v{champion['version']}" in out
    assert len(pd.read_parquet(output)) == 800
    assert "of 8 groups of 100 rows atypical at level 0.05" in out
    assert len(pd.read_parquet(str(output) + ".typicality.parquet")) == 8


@pytest.mark.parametrize(
    ("input_name", "uri", "message"),
    [
        ("missing.csv", "models:/tabular-test@champion", "input not found"),
        ("data.csv", "models:/no-such-model@champion", "no registered model 'no-such-model'"),
        ("data.csv", "models:/tabular-test@nightly", "has no alias 'nightly'"),
        ("data.csv", "champion", "is not of the form models:/<name>@<alias>"),
        ("wrong.csv", "models:/tabular-test@champion", "missing columns ['f3']"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(champion, capsys, tmp_path, input_name, uri, message):
    frame = pd.read_csv(champion["csv"])
    frame.to_csv(tmp_path / "data.csv", index=False)
    frame.drop(columns=["f3"]).to_csv(tmp_path / "wrong.csv", index=False)
    output = tmp_path / "out.parquet"
    code, _, err = run(
        capsys, "score", "--model-uri", uri, "--input", str(tmp_path / input_name),
        "--output", str(output),
    )  # fmt: skip
    assert code == 2
    assert message in err and err.startswith("genad score: error:")
    assert not output.exists()


def test_respelled_columns_exit_2_with_the_likely_cause(champion, capsys, tmp_path):
    frame = pd.read_csv(champion["csv"])
    frame.rename(columns={f"f{i}": f"F_{i}" for i in range(4)}).to_csv(
        tmp_path / "respelled.csv", index=False
    )
    output = tmp_path / "out.parquet"
    code, _, err = run(
        capsys, "score", "--model-uri", champion["uri"], "--input",
        str(tmp_path / "respelled.csv"), "--output", str(output),
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and err.startswith("genad score: error:")
    assert "missing columns ['f0', 'f1', 'f2', 'f3'] (4 of the 4 the model needs)" in err
    assert "first unexpected columns: ['F_0', 'F_1', 'F_2', 'F_3', 'label']" in err
    assert "look like the model's with different spelling: 'F_0' vs 'f0'" in err
    assert not output.exists()


def test_score_refuses_a_missing_output_folder_before_any_run(champion, capsys, tmp_path):
    runs = len(mlflow.search_runs(search_all_experiments=True))
    output = tmp_path / "no" / "such" / "scores.parquet"
    code, _, err = run(
        capsys, "score", "--model-uri", champion["uri"], "--input", str(champion["csv"]),
        "--output", str(output),
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"genad score: error: output folder {output.parent} does not exist")
    assert "--create-dirs" in err
    assert list(tmp_path.iterdir()) == []
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs


def test_score_creates_the_output_folder_with_create_dirs(champion, capsys, tmp_path):
    output = tmp_path / "no" / "such" / "scores.parquet"
    code, out, _ = run(
        capsys, "score", "--model-uri", champion["uri"], "--input", str(champion["csv"]),
        "--output", str(output), "--create-dirs",
    )  # fmt: skip
    assert code == 0 and f"output {output}" in out
    assert len(pd.read_parquet(output)) == 800


@pytest.mark.parametrize(
    "argv",
    [
        ["synth", "--model", "models:/g@champion", "--n", "2"],
        ["translate", "--model", "models:/c@champion", "--input", "{input}"],
    ],
)
def test_synth_and_translate_refuse_a_missing_output_folder(capsys, tmp_path, argv):
    source = tmp_path / "in.npz"
    source.write_bytes(b"")  # never read: the output folder is refused first
    output = tmp_path / "no" / "such" / "out.npz"
    argv = [arg.format(input=source) for arg in argv]
    code, _, err = run(capsys, *argv, "--output", str(output))
    assert code == 2 and err.count("\n") == 1
    assert f"error: output folder {output.parent} does not exist" in err
    assert "--create-dirs" in err and not (tmp_path / "no").exists()


def test_schedule_refuses_a_missing_output_folder_and_passes_create_dirs(
    capsys, monkeypatch, tmp_path
):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import pipelines.schedule

    served = []
    monkeypatch.setattr(pipelines.schedule, "serve_scoring", lambda *a, **k: served.append(a))
    output = tmp_path / "nightly" / "scores.parquet"
    argv = ["schedule", "score", "--cron", "0 2 * * *", "--model-uri", "models:/m@champion",
            "--input", "in.csv", "--output", str(output)]  # fmt: skip
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        code, _, err = run(capsys, *argv)
        assert code == 2 and f"output folder {output.parent} does not exist" in err
        assert not served
        assert run(capsys, *argv, "--create-dirs")[0] == 0
    ((_, _, parameters),) = served
    assert parameters["output"] == str(output) and parameters["deployment"] == "nightly"
    assert not output.parent.exists()  # created by the scheduled runs, not at schedule time


def test_schedule_refuses_bad_templates_and_alarm_settings(capsys, monkeypatch, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    argv = ["schedule", "score", "--cron", "0 2 * * *", "--model-uri", "models:/m@champion",
            "--input", "in/{date}.csv", "--output", str(tmp_path / "{date}.parquet")]  # fmt: skip
    bad = {
        ("--input", "in/{day}.csv"): "unknown placeholder {day}",
        ("--timezone", "Mars/Olympus"): "unknown time zone",
        ("--alarm-level", "1.5"): "alarm level must be in (0, 1)",
        ("--alarm-rate", "0"): "--alarm-rate must be in (0, 1)",
        ("--concurrency", "0"): "--concurrency must be at least 1",
    }
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        for extra, message in bad.items():
            code, _, err = run(capsys, *argv, *extra)
            assert code == 2 and message in err and err.count("\n") == 1, (extra, err)


def test_backfill_names_a_missing_deployment(capsys, prefect_api_url):
    code, _, err = run(
        capsys, "backfill", "score", "--deployment", "no-such", "--from", "2026-12-01",
        "--to", "2026-12-02",
    )  # fmt: skip
    assert code == 2 and "no deployment 'interval-score/no-such'" in err


def test_runs_list_of_a_deployment_without_history(capsys, mlflow_store):
    code, out, _ = run(capsys, "runs", "list", "--deployment", "never-ran")
    assert code == 0 and "no intervals logged for deployment 'never-ran'" in out


def test_score_rejects_a_bad_typicality_group_size(champion, capsys, tmp_path):
    output = tmp_path / "out.parquet"
    code, _, err = run(
        capsys, "score", "--model-uri", champion["uri"], "--input", str(champion["csv"]),
        "--output", str(output), "--typicality-group-size", "0",
    )  # fmt: skip
    assert code == 2 and "typicality_group_size must be >= 1" in err
    assert not output.exists()


def test_train_refuses_a_correction_for_tables_before_any_run(capsys, mlflow_store, tabular_csv):
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    code, _, err = run(
        capsys, "train", "vae", "--dataset", str(tabular_csv), "--label-column", "label",
        "--correction", "likelihood_ratio",
    )  # fmt: skip
    assert code == 2 and "needs images" in err
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before


def test_a_bad_latent_layers_flag_exits_2_before_any_run(capsys, mlflow_store, tabular_csv):
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    code, _, err = run(
        capsys, "train", "vae", "--dataset", str(tabular_csv), "--label-column", "label",
        "--latent-layers", "2", "--score-method", "prior_mc",
    )  # fmt: skip
    assert code == 2 and "latent_layers=2" in err and "prior_mc" in err
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before


def test_train_rejects_bad_config_json(capsys, mlflow_store):
    code, _, err = run(capsys, "train", "vae", "--dataset", "x.csv", "--config", "{epochs: 2}")
    assert code == 2 and "--config is not valid JSON" in err


def test_schedule_rejects_a_bad_cron(capsys):
    code, _, err = run(
        capsys, "schedule", "score", "--cron", "every night", "--model-uri", "models:/m@champion",
        "--input", "in.csv", "--output", "out.parquet",
    )  # fmt: skip
    assert code == 2 and "not a valid cron expression" in err


def test_schedule_needs_a_real_prefect_server(capsys, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        code, _, err = run(
            capsys, "schedule", "score", "--cron", "0 2 * * *", "--model-uri",
            "models:/m@champion", "--input", "in.csv", "--output", "out.parquet",
        )  # fmt: skip
    assert code == 2 and "prefect server start" in err and "PREFECT_API_URL" in err


def test_models_list_shows_the_champion(champion, capsys):
    code, out, _ = run(capsys, "models", "list", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["tabular-test"]["aliases"]["champion"] == str(champion["version"])
    assert "val_auroc" in rows["tabular-test"]["champion_metrics"]


@pytest.mark.slow  # a second whole demo (~12 s): in CI's `make test-slow`
def test_tabular_demo_runs_through_the_same_cli(
    data_env, mlflow_store, prefect_harness, capsys, tmp_path
):
    code, out, _ = run(
        capsys, "demo", "--dataset", "adbench/satimage-2", "--normal-class", "0",
        "--epochs", "3", "--model-name", "demo-satimage", "--workdir", str(tmp_path),
    )  # fmt: skip
    assert code == 0
    assert "genad demo: adbench/satimage-2, trained on label 0 rows; the labelled anomalies" in out
    assert "the score the flags use" in out  # tabular: no correction, raw log p(x) flags
    auroc = float(out.split("AUROC ")[1].split()[0])
    assert 0.8 < auroc <= 1.0  # satimage-2's anomalies are easy: 0.998 after 100 epochs
    assert "output: " in out and "-m mlflow ui --backend-store-uri" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--score", "iwae"], "--score was renamed to --score-method (same choices)"),
        (
            ["--config", '{"score": "elbo"}'],
            "--config: the parameter 'score' was renamed to 'score_method'; "
            "pass score_method='elbo' instead",
        ),
    ],
)
def test_the_old_score_option_is_refused_naming_the_new_one(capsys, flags, message):
    code, out, err = run(capsys, "train", "vae", "--dataset", "adbench/wine", *flags)
    assert code == 2 and out == ""
    assert err.strip() == f"genad train: error: {message}"


def test_the_contamination_flag_chooses_its_rule_over_a_default_target_fpr():
    from pipelines import cli
    from pipelines.cli import detector_config
    from pipelines.cli_parser import build_parser

    def config(*flags: str) -> dict:
        args = build_parser(cli).parse_args(["demo", *flags])
        return detector_config(args, {"target_fpr": 0.05, "epochs": 8})

    assert config("--contamination", "0.2") == {"epochs": 8, "contamination": 0.2}
    both = config("--contamination", "0.2", "--target-fpr", "0.01")
    assert both == {"epochs": 8, "contamination": 0.2, "target_fpr": 0.01}
    assert config() == {"epochs": 8, "target_fpr": 0.05}


def test_the_robust_training_flags_reach_the_detector_config():
    from pipelines import cli
    from pipelines.cli import detector_config
    from pipelines.cli_parser import build_parser

    def config(*flags: str) -> dict:
        args = build_parser(cli).parse_args(["train", "vae", "--dataset", "x.csv", *flags])
        return detector_config(args, {})

    assert config() == {}
    flags = ("--trim-fraction", "0.05", "--no-refit", "--scaling", "robust")
    assert config(*flags) == {"trim_fraction": 0.05, "refit": False, "scaling": "robust"}
    assert config("--trim-fraction", "contamination", "--refit", "--refit-folds", "4") == {
        "trim_fraction": "contamination",
        "refit": True,
        "refit_folds": 4,
    }
    assert config("--likelihood", "gaussian_bernoulli") == {"likelihood": "gaussian_bernoulli"}
    assert config("--trim-fraction", "estimate") == {"trim_fraction": "estimate"}
    heavy_tails = ("--likelihood", "student_t", "--scaling", "quantile")
    assert config(*heavy_tails) == {"likelihood": "student_t", "scaling": "quantile"}
    steps = ("--min-steps", "1000", "--patience", "10")
    assert config(*steps) == {"min_steps": 1000, "patience": 10}
    averages = ("--teacher-decay", "0.9", "--input-mask", "0.1")
    assert config(*averages) == {"teacher_decay": 0.9, "input_mask": 0.1}
    with pytest.raises(SystemExit):
        config("--likelihood", "poisson")


def test_a_bad_trim_fraction_flag_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "vae", "--dataset", "x.csv", "--trim-fraction", "lots"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "--trim-fraction" in err and "'contamination'" in err


def test_an_internal_error_exits_1_saying_so_and_where_the_traceback_is(capsys, monkeypatch):
    def broken(args):
        raise ValueError("an index went out of range in genad's own code")

    monkeypatch.setattr(cli, "cmd_models_list", broken)
    code, out, err = run(capsys, "models", "list")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("genad models: internal error (a bug in genad, not bad input): ")
    assert "ValueError: an index went out of range" in err
    trace = Path(err.rsplit("traceback in ", 1)[1].strip())
    assert "in broken" in trace.read_text()
    trace.unlink()


def test_a_slow_prefect_server_start_is_reported_as_the_environments_not_a_bug(tmp_path):
    """A fresh process with no PREFECT_API_URL starts Prefect's temporary server for the flow;
    with a 0-s startup allowance that start times out, for real (no mock of Prefect)."""
    import subprocess

    from servers import REPO_ROOT, VENV_BIN, child_env

    (tmp_path / "rows.csv").write_text("a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(60)))
    env = child_env(
        {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0",
         "PREFECT_HOME": str(tmp_path / "prefect"),
         "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        remove=["PREFECT_API_URL"],
    )  # fmt: skip
    command = [str(VENV_BIN / "genad"), "train", "vae", "--dataset", str(tmp_path / "rows.csv")]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.startswith("genad train:")]
    assert done.returncode == 1, done.stderr[-3000:]
    assert lines == ["genad train: error: " + cli.PREFECT_STARTUP_ADVICE]
    assert "internal error" not in done.stderr


def test_user_errors_are_marked_as_such():
    from anomaly.atomic import OutputFolderError
    from anomaly.data import DatasetFormatError, DatasetNotFoundError, UnknownDatasetError
    from anomaly.detector_params import RenamedParameterError
    from anomaly.errors import UserInputError
    from anomaly.packaged.generation import RequestError
    from anomaly.packaged.scoring import InputColumnsError
    from anomaly.packaged.translation import TranslationInputError
    from pipelines.tracking import ModelNotFoundError

    marked = (OutputFolderError, DatasetFormatError, DatasetNotFoundError, UnknownDatasetError,
              RenamedParameterError, RequestError, InputColumnsError, TranslationInputError,
              ModelNotFoundError)  # fmt: skip
    assert all(issubclass(error, UserInputError) for error in marked)

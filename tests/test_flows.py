"""The Prefect flows on a real (temporary) Prefect server and a real sqlite MLflow store."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_CONFIG, make_tabular
from mlflow import MlflowClient
from servers import REPO_ROOT, VENV_BIN, child_env

from anomaly.atomic import OutputFolderError
from anomaly.batch import cached_bundle
from anomaly.data import DatasetFormatError
from anomaly.manifest import PartManifest
from anomaly.packaged.scoring import load_bundle
from pipelines import score as score_module
from pipelines import tracking
from pipelines.promote import evaluate_and_promote_flow
from pipelines.score import (
    batch_score_flow,
    dask_batch_score,
    merge,
    plan,
    score_part,
)
from pipelines.train import detector_params, train_vae_flow

FEATURES = ["f0", "f1", "f2", "f3"]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def in_process_scores(champion: dict, frame: pd.DataFrame) -> pd.DataFrame:
    resolved = tracking.resolve_model(champion["uri"])
    return load_bundle(resolved.bundle_dir).score_frame(frame)


# --- training and the registry -----------------------------------------------------------------
def test_training_run_logs_config_metrics_dataset_plots_and_model(champion):
    client = MlflowClient()
    run = client.get_run(champion["run_id"])
    epochs = int(run.data.metrics["epochs_run"])
    assert epochs == TINY_CONFIG["epochs"]
    assert len(client.get_metric_history(run.info.run_id, "epoch_loss")) == epochs
    assert len(client.get_metric_history(run.info.run_id, "epoch_val_score")) == epochs
    assert run.data.params["detector.epochs"] == str(TINY_CONFIG["epochs"])
    # the defaults are logged too: the robust training a run used is on record
    assert run.data.params["detector.trim_fraction"] == "contamination"
    assert run.data.params["detector.refit"] == "True"
    assert len(run.data.params["data.digest"]) == 16
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == run.data.params["data.digest"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    expected = {"loss_curves.png", "roc.png", "score_histogram.png"}
    assert {f"plots/{name}" for name in expected} <= artifacts
    config = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/config/resolved.json")
    assert config["vae"]["latent_dim"] == TINY_CONFIG["latent_dim"]
    assert config["detector"]["score_method"] == "iwae" and "score" not in config["detector"]
    assert 0.9 <= run.data.metrics["val_auroc"] <= 1.0  # 3-sigma shifted anomalies


def test_epoch_metrics_are_the_registered_models_and_the_first_pass_has_its_own(champion):
    """With `refit` (the default) two VAEs train: `epoch_*` must be the curve of the one that
    was registered (the refit), and the first pass's curve goes under `first_pass_epoch_*`."""
    client = MlflowClient()

    def curve(key: str) -> list[float]:
        history = client.get_metric_history(champion["run_id"], key)
        return [m.value for m in sorted(history, key=lambda m: m.step)]

    resolved = tracking.resolve_model(champion["uri"])
    model_losses = [epoch["loss"] for epoch in load_bundle(resolved.bundle_dir).detector.history_]
    assert len(model_losses) == TINY_CONFIG["epochs"]
    np.testing.assert_allclose(curve("epoch_loss"), model_losses, rtol=1e-9)
    first_pass = curve("first_pass_epoch_loss")
    assert len(first_pass) == TINY_CONFIG["epochs"]
    assert not np.allclose(first_pass, model_losses)  # another training: other rows, other loss


def test_platform_models_flag_by_the_calibrated_rule_unless_the_config_chooses():
    assert detector_params({}, 3) == {"random_state": 3, "target_fpr": 0.1}
    assert detector_params({"contamination": 0.2}, 0) == {"random_state": 0, "contamination": 0.2}
    assert detector_params({"target_fpr": 0.01}, 0)["target_fpr"] == 0.01


def test_training_registers_a_challenger_with_signature(champion):
    version = MlflowClient().get_model_version("tabular-test", str(champion["version"]))
    assert version.aliases and "challenger" in version.aliases
    assert version.tags["genad.run_id"] == champion["run_id"]
    info = mlflow.models.get_model_info(champion["uri"])
    assert info.signature.inputs.input_names() == FEATURES
    outputs = set(info.signature.outputs.input_names())
    assert outputs == {
        "log_px",
        "normality",
        "score",
        "p_value",
        "is_anomaly",
        "model_name",
        "model_version",
    }


def test_gate_keeps_the_champion_unless_beaten_and_says_why(champion, tabular_csv):
    name = "gate-test"
    train_vae_flow(str(tabular_csv), TINY_CONFIG, model_name=name, label_column="label")
    first = evaluate_and_promote_flow(name, str(tabular_csv), label_column="label")
    assert first["promoted"] and first["reason"] == "no champion yet"
    train_vae_flow(str(tabular_csv), TINY_CONFIG, model_name=name, label_column="label")
    # Same data and config: the challenger cannot beat the champion by more than 0.
    kept = evaluate_and_promote_flow(name, str(tabular_csv), label_column="label", margin=0.0)
    assert not kept["promoted"] and "does not beat" in kept["reason"]
    assert tracking.alias_version(name, "champion") == "1"
    assert tracking.alias_version(name, "challenger") == "2"
    gate_tags = MlflowClient().get_model_version(name, "2").tags
    records = [json.loads(v) for k, v in gate_tags.items() if k.startswith("genad.gate.")]
    assert records and records[0]["promoted"] is False
    # A negative margin accepts a tie: the champion moves, and both versions record it.
    moved = evaluate_and_promote_flow(name, str(tabular_csv), label_column="label", margin=-1.0)
    assert moved["promoted"]
    assert tracking.alias_version(name, "champion") == "2"
    history = tracking.alias_history(name, "2")
    assert history[-1]["alias"] == "champion" and history[-1]["previous_version"] == "1"
    assert history[-1]["metric"]["challenger_value"] == pytest.approx(moved["challenger_value"])
    assert tracking.alias_history(name, "1")[-1]["event"] == "removed"


# --- batch scoring -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scoring_inputs(tmp_path_factory, champion) -> dict[str, Path]:
    """The same 1000 rows as CSV (with an extra id column), Parquet and npz."""
    folder = tmp_path_factory.mktemp("inputs")
    frame = make_tabular(n=1000, anomalies=100, seed=1)
    frame.insert(0, "id", np.arange(len(frame)))
    paths = {
        "csv": folder / "batch.csv",
        "parquet": folder / "batch.parquet",
        "npz": folder / "batch.npz",
    }
    frame.to_csv(paths["csv"], index=False, float_format="%.17g")
    frame.to_parquet(paths["parquet"], row_group_size=300)
    np.savez_compressed(paths["npz"], X=frame[FEATURES].to_numpy(), y=frame["label"].to_numpy())
    return {**paths, "frame": frame}


@pytest.mark.parametrize("fmt", ["csv", "parquet", "npz"])
def test_batch_scores_equal_in_process_scores(champion, scoring_inputs, tmp_path, fmt):
    output = tmp_path / "scores.parquet"
    summary = batch_score_flow(
        champion["uri"], str(scoring_inputs[fmt]), str(output), rows_per_partition=300
    )
    scored = pd.read_parquet(output)
    expected = in_process_scores(champion, scoring_inputs["frame"])
    assert list(scored.columns) == [
        "row_id", "log_px", "normality", "score", "p_value", "is_anomaly", "model_name",
        "model_version",
    ]  # fmt: skip
    np.testing.assert_array_equal(scored["row_id"], np.arange(1000))
    np.testing.assert_allclose(scored["log_px"], expected["log_px"], rtol=1e-6)
    np.testing.assert_array_equal(scored["is_anomaly"], expected["is_anomaly"])
    assert (scored["model_version"] == str(champion["version"])).all()
    assert summary["rows"] == 1000 and summary["partitions"] == 4
    assert summary["anomalies"] == int(expected["is_anomaly"].sum())
    on_disk = json.loads((tmp_path / "scores.parquet.summary.json").read_text())
    assert on_disk["anomaly_rate"] == pytest.approx(expected["is_anomaly"].mean())
    assert on_disk["score_quantiles"]["q0.5"] == pytest.approx(
        np.median(expected["score"]), rel=1e-5, abs=1e-5
    )
    top = on_disk["top_anomalies"][0]
    assert top["row_id"] == int(expected["score"].idxmax())


def test_rerun_gives_identical_files_and_logs_a_scoring_run(champion, scoring_inputs, tmp_path):
    first, second = tmp_path / "a.parquet", tmp_path / "b" / "a.parquet"
    summary = batch_score_flow(champion["uri"], str(scoring_inputs["csv"]), str(first))
    batch_score_flow(champion["uri"], str(scoring_inputs["csv"]), str(second), create_dirs=True)
    assert sha256(first) == sha256(second)
    run = MlflowClient().get_run(summary["mlflow_run_id"])
    assert run.data.metrics["rows"] == 1000
    assert run.data.metrics["anomaly_rate"] == pytest.approx(summary["anomaly_rate"])
    assert run.data.params["model_version"] == str(champion["version"])
    assert "score_q0.5" in run.data.metrics
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.parquet",
        "a.parquet.summary.json",
        "b",
    ]


def test_markdown_artifact_lists_the_top_anomalies(champion, scoring_inputs, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    batch_score_flow(champion["uri"], str(scoring_inputs["npz"]), str(tmp_path / "o.parquet"))
    with get_client(sync_client=True) as client:
        key = ArtifactFilterKey(any_=["top-anomalies"])
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=key))
    assert artifacts
    latest = max(artifacts, key=lambda a: a.created)
    assert "| rank | row_id |" in latest.data and "tabular-test" in latest.data


def test_a_failing_run_leaves_no_output(champion, scoring_inputs, tmp_path):
    frame = scoring_inputs["frame"].astype({"f2": object})
    frame.loc[700, "f2"] = "oops"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    output = tmp_path / "out" / "scores.parquet"
    output.parent.mkdir()
    output.write_bytes(b"previous run")
    with pytest.raises(DatasetFormatError, match="f2"):
        batch_score_flow(champion["uri"], str(bad), str(output), rows_per_partition=300)
    assert output.read_bytes() == b"previous run"
    assert sorted(p.name for p in output.parent.iterdir()) == ["scores.parquet"]


def test_wrong_columns_fail_before_scoring(champion, scoring_inputs, tmp_path):
    frame = scoring_inputs["frame"].drop(columns=["f3"])
    path = tmp_path / "missing.parquet"
    frame.to_parquet(path)
    with pytest.raises(DatasetFormatError, match="f3"):
        batch_score_flow(champion["uri"], str(path), str(tmp_path / "o.parquet"))
    assert not (tmp_path / "o.parquet").exists()


def test_a_missing_output_folder_is_refused_before_any_work(champion, scoring_inputs, tmp_path):
    runs = len(mlflow.search_runs(search_all_experiments=True))
    for output, summary in [
        (tmp_path / "typo" / "deeper" / "o.parquet", None),
        (tmp_path / "o.parquet", tmp_path / "nope" / "o.summary.json"),
    ]:
        folder = (summary or output).parent
        with pytest.raises(OutputFolderError) as refused:
            batch_score_flow(
                champion["uri"], str(scoring_inputs["csv"]), str(output),
                summary=summary and str(summary),
            )  # fmt: skip
        assert f"output folder {folder} does not exist" in str(refused.value)
        assert "--create-dirs" in str(refused.value) and not folder.exists()
    assert list(tmp_path.iterdir()) == []
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs  # no scoring run


def test_create_dirs_creates_the_output_folder(champion, scoring_inputs, tmp_path):
    output = tmp_path / "new" / "deeper" / "scores.parquet"
    summary = batch_score_flow(
        champion["uri"], str(scoring_inputs["csv"]), str(output), create_dirs=True
    )
    assert summary["rows"] == 1000 and len(pd.read_parquet(output)) == 1000
    assert sorted(p.name for p in output.parent.iterdir()) == [
        "scores.parquet",
        "scores.parquet.summary.json",
    ]


def test_task_bodies_run_without_a_flow(champion, scoring_inputs, tmp_path):
    resolved = tracking.resolve_model(champion["uri"], dst=tmp_path / "model")
    batch = plan.fn(resolved, str(scoring_inputs["parquet"]), 400)
    assert [(p.start, p.stop) for p in batch.partitions] == [(0, 400), (400, 800), (800, 1000)]
    manifest, reused = PartManifest.open(tmp_path / "work", {"job": "test"})
    assert not reused
    records = [score_part.fn(resolved, batch, p, manifest, 128, None) for p in batch.partitions]
    assert [r["rows"] for r in records] == [400, 400, 200]
    assert [manifest.finished(p) for p in batch.partitions] == records
    parts = [str(manifest.part_path(p)) for p in batch.partitions]
    summary = merge.fn(parts, str(tmp_path / "all.parquet"), False, 5)
    assert summary["rows"] == 1000 and len(summary["top_anomalies"]) == 5
    scored = pd.read_parquet(tmp_path / "all.parquet")
    expected = in_process_scores(champion, scoring_inputs["frame"])
    np.testing.assert_array_equal(scored["row_id"], np.arange(1000))
    # every block the networks see is padded to one row count: chunking cannot change rounding
    np.testing.assert_array_equal(scored["score"], expected["score"])


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite
def test_dask_workers_give_the_sequential_output(champion, scoring_inputs, tmp_path):
    sequential, parallel = tmp_path / "seq.parquet", tmp_path / "dask.parquet"
    batch_score_flow(
        champion["uri"], str(scoring_inputs["csv"]), str(sequential), rows_per_partition=250
    )
    summary = dask_batch_score(
        n_workers=2,
        model_uri=champion["uri"],
        input=str(scoring_inputs["csv"]),
        output=str(parallel),
        rows_per_partition=250,
    )
    assert summary["partitions"] == 4
    pd.testing.assert_frame_equal(pd.read_parquet(sequential), pd.read_parquet(parallel))


@pytest.mark.parametrize("rule", ["alpha", "fdr"])
def test_flag_rules_are_applied_over_the_whole_input_and_recorded(
    champion, scoring_inputs, tmp_path, rule
):
    from anomaly.thresholds import benjamini_hochberg

    output = tmp_path / "flags.parquet"
    summary = batch_score_flow(
        champion["uri"], str(scoring_inputs["csv"]), str(output), rows_per_partition=300,
        chunk_rows=128, flag_rule=rule, flag_level=0.1,
    )  # fmt: skip
    scored = pd.read_parquet(output)
    expected = in_process_scores(champion, scoring_inputs["frame"])
    np.testing.assert_allclose(scored["p_value"], expected["p_value"], rtol=1e-12)
    p = scored["p_value"].to_numpy()
    # BH over all 1000 rows at once, not per 128-row chunk or 300-row partition.
    flags = p <= 0.1 if rule == "alpha" else benjamini_hochberg(p, 0.1)
    np.testing.assert_array_equal(scored["is_anomaly"], flags)
    assert summary["rule"] == rule and summary["level"] == 0.1
    assert summary["anomalies"] == int(flags.sum())
    on_disk = json.loads((tmp_path / "flags.parquet.summary.json").read_text())
    assert on_disk["rule"] == rule and on_disk["anomalies"] == int(flags.sum())


RULE_RUNS = {"alpha": ["--flag-rule", "alpha", "--flag-level", "0.1"], "own": []}


def fresh_process_score(uri: str, input: Path, output: Path, flags: list[str], env: dict) -> None:
    """`genad score` in a new process: nothing cached from earlier runs."""
    command = [VENV_BIN / "genad", "score", "--model-uri", uri, "--input", input,
               "--output", output, "--rows-per-partition", "300", *flags]  # fmt: skip
    done = subprocess.run([str(a) for a in command], cwd=REPO_ROOT, env=env, timeout=300,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


@pytest.mark.slow  # about 20 s: three fresh CLI processes, then five flow runs
def test_runs_in_one_process_each_flag_by_their_own_rule(
    champion, scoring_inputs, tmp_path, mlflow_store, prefect_api_url, monkeypatch
):
    """The model is cached per process and folder: a run's --flag-rule must not leak into the
    next run (the cached bundle is never changed; each run scores with its own view of it).
    Every run here finds the model in one folder, as a long-lived worker's model cache would."""
    resolved = tracking.resolve_model(champion["uri"], dst=tmp_path / "model")
    monkeypatch.setattr(score_module, "resolve", lambda model_uri, scratch: resolved)
    source = scoring_inputs["csv"]
    env = child_env({"MLFLOW_TRACKING_URI": mlflow_store, "PREFECT_API_URL": prefect_api_url,
                     "OMP_NUM_THREADS": "1"})  # fmt: skip
    for name, flags in RULE_RUNS.items():
        fresh_process_score(champion["uri"], source, tmp_path / f"fresh-{name}.parquet", flags, env)
    sequence = [("alpha", 0.1), (None, None), ("fdr", 0.2), (None, None), ("alpha", 0.1)]
    for i, (rule, level) in enumerate(sequence):
        output = tmp_path / f"run{i}.parquet"
        summary = batch_score_flow(
            champion["uri"], str(source), str(output), rows_per_partition=300,
            flag_rule=rule, flag_level=level,
        )  # fmt: skip
        assert summary["rule"] == (rule or "threshold")
        if rule != "fdr":
            assert sha256(output) == sha256(tmp_path / f"fresh-{rule or 'own'}.parquet"), i
    own = pd.read_parquet(tmp_path / "fresh-own.parquet")
    assert (own["is_anomaly"] == (own["score"] > 0)).all()  # the model's threshold rule
    cached, saved = cached_bundle(str(resolved.bundle_dir)), load_bundle(resolved.bundle_dir)
    assert cached.detector.get_params() == saved.detector.get_params()
    assert (cached.name, cached.version) == (saved.name, saved.version)

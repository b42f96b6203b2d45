"""Crash-safe batch scoring: the part manifest, a `genad score` killed with SIGKILL and run
again, bad input leaving nothing behind, and scoring on a real Dask scheduler with two workers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_tabular
from servers import REPO_ROOT, VENV_BIN, child_env, dask_cluster

from anomaly.batchio import Partition
from anomaly.manifest import PartManifest, work_folder
from pipelines.score import batch_score_flow, dask_batch_score

pytestmark = pytest.mark.usefixtures("no_heartbeats")
ROWS, PARTITION_ROWS = 6000, 100  # 60 partitions: the kill lands well before the end


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "rows.npz"
    frame = make_tabular(n=ROWS, anomalies=300, seed=7)
    np.savez(path, X=frame[["f0", "f1", "f2", "f3"]].to_numpy(), y=frame["label"].to_numpy())
    return path


@pytest.fixture(scope="module")
def reference(champion, big_input, tmp_path_factory) -> pd.DataFrame:
    """An uninterrupted run."""
    output = tmp_path_factory.mktemp("reference") / "scores.parquet"
    batch_score_flow(champion["uri"], str(big_input), str(output), rows_per_partition=100)
    return pd.read_parquet(output)


# --- the manifest ------------------------------------------------------------------------------
def write_part(manifest: PartManifest, partition: Partition, rows: int, rejected: int = 0) -> dict:
    frame = pd.DataFrame({"row_id": np.arange(partition.start, partition.start + rows)})
    frame.to_parquet(manifest.part_path(partition))
    return manifest.record(partition, {"rows": rows, "flagged": 0, "rejected": rejected})


def test_manifest_reuses_only_intact_parts_of_the_same_job(tmp_path):
    folder = tmp_path / "work"
    first, second, third = Partition(0, 0, 10), Partition(1, 10, 20), Partition(2, 20, 30)
    manifest, reused = PartManifest.open(folder, {"model": "m/1", "rows": 30})
    assert not reused and manifest.finished(first) is None
    record = write_part(manifest, first, 10)
    write_part(manifest, second, 10)
    write_part(manifest, third, 9)  # fewer rows than the partition: not finished
    (folder / ".part-000003.parquet.abc.tmp").write_bytes(b"half")  # a killed writer's file
    manifest, reused = PartManifest.open(folder, {"model": "m/1", "rows": 30})
    assert reused and not list(folder.glob(".*"))
    assert manifest.finished(first) == record
    part = manifest.part_path(second)
    damaged = bytearray(part.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    part.write_bytes(bytes(damaged))  # same size, other bytes: only the checksum sees it
    assert manifest.finished(second) is None and not part.exists()
    assert manifest.finished(third) is None
    manifest, reused = PartManifest.open(folder, {"model": "m/2", "rows": 30})  # new version
    assert not reused and manifest.finished(first) is None


def test_a_part_whose_rejected_row_report_is_damaged_is_scored_again(tmp_path):
    manifest, _ = PartManifest.open(tmp_path / "work", {"bad_rows": "skip"})
    partition = Partition(0, 0, 10)
    manifest.rejected_path(partition).write_text("row_id,column,reason\n3,f1,not a number\n")
    record = write_part(manifest, partition, 9, rejected=1)
    assert manifest.finished(partition) == record and "rejected_sha256" in record
    manifest.rejected_path(partition).write_text("row_id,column,reason\n")  # the row is gone
    assert manifest.finished(partition) is None
    assert not manifest.part_path(partition).exists()


def test_a_damaged_job_file_starts_the_job_afresh(tmp_path):
    folder = tmp_path / "work"
    manifest, _ = PartManifest.open(folder, {"job": 1})
    write_part(manifest, Partition(0, 0, 5), 5)
    (folder / "job.json").write_text("{not json")
    manifest, reused = PartManifest.open(folder, {"job": 1})
    assert not reused and manifest.finished(Partition(0, 0, 5)) is None


# --- kill -9 -----------------------------------------------------------------------------------
def start_cli_score(champion, big_input, output, prefect_api_url, log: Path) -> subprocess.Popen:
    args = [
        VENV_BIN / "genad", "score", "--model-uri", champion["uri"], "--input", big_input,
        "--output", output, "--rows-per-partition", str(PARTITION_ROWS), "--chunk-rows", "50",
    ]  # fmt: skip
    env = child_env({"PREFECT_API_URL": prefect_api_url, "OMP_NUM_THREADS": "1"})
    return subprocess.Popen(
        [str(a) for a in args], env=env, cwd=REPO_ROOT, stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def kill_after_parts(process: subprocess.Popen, work: Path, parts: int, log: Path) -> set[int]:
    """SIGKILL the run once `parts` partitions are recorded; the recorded partitions then."""
    deadline = time.monotonic() + 180
    while len(list(work.glob("part-*.done.json"))) < parts:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run ended or stalled before {parts} parts:\n{log.read_text()}")
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return {int(p.name[5:11]) for p in work.glob("part-*.done.json")}


@pytest.mark.slow  # kills and restarts a real CLI run (~15 s): in CI's `make test-slow`
def test_a_killed_run_resumes_without_rescoring_finished_partitions(
    champion, big_input, reference, prefect_api_url, tmp_path, monkeypatch
):
    output, log = tmp_path / "scores.parquet", tmp_path / "killed.log"
    process = start_cli_score(champion, big_input, output, prefect_api_url, log)
    done = kill_after_parts(process, work_folder(output), 3, log)
    assert process.returncode == -signal.SIGKILL
    assert 3 <= len(done) < ROWS // PARTITION_ROWS, "killed after the last partition"
    assert not output.exists() and not output.with_name("scores.parquet.summary.json").exists()

    rescored: list[int] = []
    record = PartManifest.record

    def spy(self, partition, counts):
        rescored.append(partition.index)
        return record(self, partition, counts)

    monkeypatch.setattr(PartManifest, "record", spy)
    summary = batch_score_flow(
        champion["uri"], str(big_input), str(output), rows_per_partition=PARTITION_ROWS
    )
    assert summary["reused_partitions"] == len(done)
    assert sorted(rescored) == sorted(set(range(ROWS // PARTITION_ROWS)) - done)
    scored = pd.read_parquet(output)
    np.testing.assert_array_equal(scored["row_id"], np.arange(ROWS))  # none lost or doubled
    # the killed run read chunks of 50 rows, the reference 8192: float32 rounding only
    np.testing.assert_allclose(scored["log_px"], reference["log_px"], rtol=1e-6, atol=2e-6)
    pd.testing.assert_frame_equal(
        scored.drop(columns=["log_px", "normality", "score"]),
        reference.drop(columns=["log_px", "normality", "score"]),
    )
    assert not work_folder(output).exists()


def test_bad_rows_found_while_scoring_leave_no_output_and_no_work_folder(champion, tmp_path):
    frame = make_tabular(n=600, anomalies=10, seed=3)
    text = frame.drop(columns="label").to_csv(index=False).splitlines()
    text[450] = "1.0,2.0,oops,4.0"  # row 449: found by the reader, after 4 partitions
    source, output = tmp_path / "bad.csv", tmp_path / "out" / "scores.parquet"
    output.parent.mkdir()
    source.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match="f2"):
        batch_score_flow(champion["uri"], str(source), str(output), rows_per_partition=100)
    assert not output.parent.exists() or not any(output.parent.iterdir())


# --- Dask --------------------------------------------------------------------------------------
@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite
def test_a_dask_scheduler_with_two_workers_gives_the_sequential_output(
    champion, big_input, prefect_api_url, mlflow_store, tmp_path
):
    env = child_env(
        {"PREFECT_API_URL": prefect_api_url, "MLFLOW_TRACKING_URI": mlflow_store,
         "OMP_NUM_THREADS": "1"}
    )  # fmt: skip
    sequential, parallel = tmp_path / "sequential.parquet", tmp_path / "dask.parquet"
    options = {"model_uri": champion["uri"], "input": str(big_input), "rows_per_partition": 1000}
    batch_score_flow(output=str(sequential), **options)
    with dask_cluster(2, env=env, log_dir=tmp_path / "dask") as address:
        summary = dask_batch_score(address=address, output=str(parallel), **options)
    workers = summary["partitions_by_process"]
    assert sum(workers.values()) == 6 and len(workers) == 2, workers
    assert all(not key.endswith(f":{os.getpid()}") for key in workers)  # not this process
    # the same partitions and chunks: the same bytes, whichever process scored them
    pd.testing.assert_frame_equal(pd.read_parquet(parallel), pd.read_parquet(sequential))

"""`interval_score_flow` on the test Prefect server and MLflow store: templates name each
interval's files, a missing input ends in a named state, an interval scored twice gives the
same bytes, several input files merge into one output, and the history lists the intervals."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_tabular

from pipelines.history import experiment_name, list_intervals
from pipelines.interval import interval_score_flow

pytestmark = pytest.mark.usefixtures("no_heartbeats")
FIRST = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)


def write_day(root: Path, when: dt.datetime, parts: int, seed: int, shift: float = 0.0) -> int:
    """`parts` CSV files of normal rows (feature f0 shifted by `shift`) under root/<date>/."""
    folder = root / f"{when:%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    rows = 0
    for index in range(parts):
        frame = make_tabular(n=300, anomalies=0, seed=seed + index).drop(columns="label")
        frame["f0"] += shift
        frame.to_csv(folder / f"part-{index}.csv", index=False)
        rows += len(frame)
    return rows


def run_interval(champion: dict, root: Path, when: dt.datetime, **options):
    return interval_score_flow(
        champion["uri"],
        str(root / "data" / "{date}" / "part-*.csv"),
        str(root / "scores" / "{%Y/%m}" / "{date}.parquet"),
        deployment="flow-test",
        scheduled_time=when.isoformat(),
        **options,
    )


def test_each_interval_scores_its_own_files_once(champion, tmp_path: Path):
    rows = write_day(tmp_path / "data", FIRST, parts=2, seed=10)
    summary = run_interval(champion, tmp_path, FIRST)
    output = tmp_path / "scores" / "2026" / "12" / "2026-12-01.parquet"
    assert summary["output"] == str(output) and summary["state"] == "scored"
    assert summary["interval"] == "2026-12-01T02:00:00+00:00"
    scored = pd.read_parquet(output)
    assert len(scored) == rows == summary["rows"]
    assert scored["input_file"].tolist() == ["part-0.csv"] * 300 + ["part-1.csv"] * 300
    assert scored["row_id"].tolist() == list(range(300)) * 2
    assert summary["anomalies"] == int(scored["is_anomaly"].sum())
    on_disk = json.loads(output.with_name(output.name + ".summary.json").read_text())
    assert on_disk["alarm"] == summary["alarm"]
    assert not any(p.name.startswith(".") for p in output.parent.iterdir())  # no work left
    first_bytes = output.read_bytes()
    again = run_interval(champion, tmp_path, FIRST)
    assert output.read_bytes() == first_bytes
    assert again["rows"] == rows
    assert sorted(p.name for p in output.parent.iterdir()) == [
        "2026-12-01.parquet",
        "2026-12-01.parquet.summary.json",
    ]


def test_a_single_file_interval_and_its_alarm(champion, tmp_path: Path):
    second = FIRST + dt.timedelta(days=1)
    write_day(tmp_path / "data", second, parts=1, seed=20)
    quiet = run_interval(champion, tmp_path, second)
    assert "input_file" not in pd.read_parquet(quiet["output"]).columns
    third = FIRST + dt.timedelta(days=2)
    write_day(tmp_path / "data", third, parts=1, seed=30, shift=3.0)
    shifted = run_interval(champion, tmp_path, third)
    assert shifted["alarm"]["fired"] and shifted["alarm"]["rank_auc"] < 0.2
    assert quiet["alarm"]["rate"] == pytest.approx(0.1)  # the model's target_fpr
    assert quiet["alarm"]["flagged"] <= shifted["alarm"]["flagged"]


def test_missing_input_ends_in_a_named_state(champion, tmp_path: Path):
    empty = FIRST - dt.timedelta(days=30)
    state = run_interval(champion, tmp_path, empty, return_state=True)
    assert state.is_completed() and state.name == "Skipped"
    assert "2026-11-01T02:00:00+00:00" in state.message and "matches no file" in state.message
    state = run_interval(champion, tmp_path, empty, on_missing="fail", return_state=True)
    assert state.is_failed() and state.name == "InputMissing"
    assert not (tmp_path / "scores").exists()


def test_history_lists_the_latest_run_of_each_interval(champion, tmp_path: Path):
    deployment = "history-test"
    days = [FIRST + dt.timedelta(days=d) for d in range(3)]
    for index, day in enumerate(days[:2]):
        write_day(tmp_path / "data", day, parts=1, seed=40 + index)
    for day in days:
        interval_score_flow(
            champion["uri"], str(tmp_path / "data" / "{date}" / "*.csv"),
            str(tmp_path / "scores" / "{date}.parquet"), deployment=deployment,
            scheduled_time=day.isoformat(), return_state=True,
        )  # fmt: skip
    listed = list_intervals(deployment, last=10)
    assert [row["interval"][:10] for row in listed] == ["2026-12-03", "2026-12-02", "2026-12-01"]
    assert [row["state"] for row in listed] == ["skipped", "scored", "scored"]
    assert listed[1]["rows"] == 300 and listed[1]["model_version"] == str(champion["version"])
    assert list_intervals(deployment, last=1) == listed[:1]
    assert list_intervals("no-such-deployment") == []
    assert experiment_name(deployment) == "genad-schedule/history-test"


def test_bad_options_are_refused_before_any_work(champion, tmp_path: Path):
    from anomaly.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown placeholder"):
        interval_score_flow(champion["uri"], "in/{day}.csv", str(tmp_path / "o.parquet"))
    with pytest.raises(ConfigError, match="on_missing must be one of"):
        run_interval(champion, tmp_path, FIRST, on_missing="ignore")


def test_a_rerun_reuses_the_files_a_killed_run_finished(champion, tmp_path: Path):
    """Files of a multi-file interval scored before (same input, same model version) are
    reused by the next run of the interval; a changed file is scored again."""
    from pipelines.interval import score_one_file

    write_day(tmp_path / "data", FIRST, parts=2, seed=50)
    inputs = sorted((tmp_path / "data" / "2026-12-01").glob("*.csv"))
    folder = tmp_path / "work"
    folder.mkdir()
    uri = f"models:/tabular-test/{champion['version']}"
    options = {"rows_per_partition": 100_000, "chunk_rows": 8192, "flag_rule": None,
               "flag_level": None, "bad_rows": "fail"}  # fmt: skip
    part = folder / "00000.parquet"
    first = score_one_file(uri, inputs[0], part, options)
    written = part.stat().st_mtime_ns
    assert score_one_file(uri, inputs[0], part, options) == first
    assert part.stat().st_mtime_ns == written  # reused, not rewritten
    frame = pd.read_csv(inputs[0]).head(100)
    frame.to_csv(inputs[0], index=False)
    assert score_one_file(uri, inputs[0], part, options)["rows"] == 100

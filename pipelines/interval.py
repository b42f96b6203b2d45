"""`interval_score_flow`: scheduled scoring, each run scoring its own interval's batch.

A run takes its interval from its *scheduled* time (Prefect's expected start time, or
`scheduled_time` when given), in the schedule's `timezone`, and fills the `input` and `output`
templates with it (`anomaly.intervals`: `{date}`, `{datetime}`, `{%Y/%m/%d}`; the input may be
a glob). Then:

- **Missing input**: the run ends in a named state without a traceback: "Skipped" (Completed)
  by default, "InputMissing" (Failed) with `on_missing="fail"`; either way the history records
  the interval and the message.
- **Scoring**: the model URI is resolved once and pinned to its version; each input file is
  scored by `batch_score_flow` (its part files resume a killed run); several files are merged
  in name order into the one output with an `input_file` column (Benjamini-Hochberg, for the
  "fdr" rule, then runs over the merged rows). The same interval twice with the same model
  version rewrites the same bytes.
- **Alarm** (`anomaly.alarm`): the flag count at p-value level `alarm_rate` (default: the run's
  flag level) against its exact null, and a rank test of the scores against the calibration
  scores, at `alarm_level` overall. A firing alarm is in the summary, the MLflow history and
  the Prefect artifact, and is emitted as the Prefect event `genad.scoring.alarm` (its payload
  holds the figures) for an automation to act on.
- **History** (`pipelines.history`): one MLflow run per interval in `genad-schedule/<deployment>`
  and a Prefect markdown artifact; the summary JSON goes beside the output.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import deployment as runtime_deployment
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from anomaly.alarm import batch_alarm, check_alarm_level
from anomaly.atomic import write_json_atomic
from anomaly.batch import apply_batch_fdr, cached_bundle, merge_parts
from anomaly.errors import ConfigError
from anomaly.intervals import check_template, fill_template, local_time, matching_inputs
from anomaly.manifest import input_identity
from pipelines import history, reports
from pipelines.score import batch_score_flow, resolve, summary_path

ON_MISSING = ("skip", "fail")
ALARM_EVENT = "genad.scoring.alarm"
MANUAL_DEPLOYMENT = "manual"


def check_interval_options(
    input: str, output: str, timezone: str, on_missing: str, alarm_level: float
) -> None:
    """ConfigError naming a bad template, time zone, missing-input policy or alarm level."""
    check_template(input)
    check_template(output)
    local_time(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), timezone)
    if on_missing not in ON_MISSING:
        raise ConfigError(f"on_missing must be one of {', '.join(ON_MISSING)}, got {on_missing!r}")
    try:
        check_alarm_level(alarm_level)
    except ValueError as error:
        raise ConfigError(str(error)) from error


def interval_start(scheduled_time: str | None) -> dt.datetime:
    """The interval's time: `scheduled_time` (ISO text) when given, else the run's scheduled
    start time (the current time outside a flow run)."""
    if scheduled_time is None:
        return flow_run.scheduled_start_time
    try:
        return dt.datetime.fromisoformat(scheduled_time)
    except ValueError as error:
        raise ConfigError(f"scheduled_time {scheduled_time!r} is not an ISO time") from error


@flow(name="interval-score", log_prints=True)
def interval_score_flow(
    model_uri: str,
    input: str,
    output: str,
    *,
    deployment: str | None = None,
    timezone: str = "UTC",
    scheduled_time: str | None = None,
    on_missing: str = "skip",
    alarm_level: float = 0.01,
    alarm_rate: float | None = None,
    rows_per_partition: int = 100_000,
    chunk_rows: int = 8192,
    flag_rule: str | None = None,
    flag_level: float | None = None,
    bad_rows: str = "fail",
) -> dict[str, Any] | State:
    """Score the interval's input (see the module docstring) into its output; the summary, or
    the Skipped / InputMissing state when the input is missing."""
    check_interval_options(input, output, timezone, on_missing, alarm_level)
    when = local_time(interval_start(scheduled_time), timezone)
    base = {
        "deployment": deployment or runtime_deployment.name or MANUAL_DEPLOYMENT,
        "interval": when.isoformat(),
        "flow_run_id": flow_run.id,
        "model_uri": model_uri,
    }
    pattern = fill_template(input, when)
    target = Path(fill_template(output, when)).expanduser().resolve()
    files = matching_inputs(pattern)
    if not files:
        return missing_input(base, pattern, on_missing)
    options = dict(
        rows_per_partition=rows_per_partition, chunk_rows=chunk_rows, flag_rule=flag_rule,
        flag_level=flag_level, bad_rows=bad_rows,
    )  # fmt: skip
    result = score_interval(model_uri, files, target, options, (alarm_rate, alarm_level))
    summary = {
        **result, **base, "state": "scored", "input": pattern,
        "inputs": [str(f) for f in files], "output": str(target),
    }  # fmt: skip
    write_json_atomic(summary, summary_path(target))
    summary["mlflow_run_id"] = history.log_interval(summary)
    announce(summary)
    return summary


def score_interval(
    model_uri: str,
    files: list[Path],
    target: Path,
    options: dict[str, Any],
    alarm: tuple[float | None, float],
) -> dict[str, Any]:
    """Resolve the model once (pinned to its version), score `files` into `target` and test
    the output; `alarm` = (rate, or None for the run's flag level; level)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as scratch:
        model = resolve(model_uri, os.path.join(scratch, "model"))
        pinned = f"models:/{model.name}/{model.version}"
        result = score_files(pinned, files, target, options)
        calibration = cached_bundle(str(model.bundle_dir)).detector.calibration_scores_
    rate, level = alarm
    result["alarm"] = output_alarm(target, calibration, rate or result["level"], level)
    return result


def missing_input(base: dict[str, Any], pattern: str, on_missing: str) -> State:
    """Record the interval as skipped (or missing) in the history; the run's named state."""
    message = f"no input for interval {base['interval']}: {pattern} matches no file or folder"
    state = "skipped" if on_missing == "skip" else "missing"
    history.log_interval({**base, "state": state, "input": pattern, "message": message})
    get_run_logger().warning(message)
    if on_missing == "skip":
        return Completed(name="Skipped", message=message)
    return Failed(name="InputMissing", message=message)


def score_files(
    model_uri: str, files: list[Path], target: Path, options: dict[str, Any]
) -> dict[str, Any]:
    """Score one input into `target`, or each of several into its own part (reusing parts a
    killed run finished) and merge them in order; the batch summary."""
    if len(files) == 1:
        return batch_score_flow(model_uri, str(files[0]), str(target), track=False, **options)
    folder = target.with_name(f".{target.name}.genad-files")
    folder.mkdir(exist_ok=True)
    parts = [folder / f"{index:05d}.parquet" for index in range(len(files))]
    summaries = [
        score_one_file(model_uri, path, part, options)
        for path, part in zip(files, parts, strict=True)
    ]
    common = Path(os.path.commonpath([path.parent for path in files]))
    labels = [str(path.relative_to(common)) for path in files]
    schema = pq.read_schema(parts[0])
    first = summaries[0]
    fdr = first["rule"] == "fdr"
    merged = folder / "merged.parquet" if fdr else target
    result = merge_parts(parts, merged, schema, labels=labels)
    if fdr:
        result = apply_batch_fdr(merged, target, first["level"], result)
    shutil.rmtree(folder)
    keys = ("rule", "level", "threshold", "model_name", "model_version")
    return {**result, **{key: first[key] for key in keys}, "partitions": len(parts)}


def score_one_file(
    model_uri: str, path: Path, part: Path, options: dict[str, Any]
) -> dict[str, Any]:
    """Score one input file of a multi-file interval into `part`; a part a previous run of the
    interval finished (same input file, same model version) is reused."""
    done = summary_path(part)
    identity = input_identity(path.resolve())
    if done.is_file() and part.is_file():
        previous = json.loads(done.read_text())
        if previous.get("identity") == identity and previous.get("model_uri") == model_uri:
            return previous
    summary = batch_score_flow(
        model_uri, str(path), str(part), summary=str(done), track=False, **options
    )
    summary = {**summary, "identity": identity, "model_uri": model_uri}
    write_json_atomic(summary, done)
    return summary


def output_alarm(output: Path, calibration: Any, rate: float, level: float) -> dict[str, Any]:
    """The alarm figures of a scored output against the detector's calibration scores."""
    table = pq.read_table(output, columns=["normality", "p_value"])
    return batch_alarm(
        table["normality"].to_numpy(),
        table["p_value"].to_numpy(),
        calibration,
        rate=rate,
        level=level,
    )


def announce(summary: dict[str, Any]) -> None:
    """Log the interval's line, post its markdown artifact and, when the alarm fires, emit
    the `genad.scoring.alarm` event with the figures."""
    logger, alarm = get_run_logger(), summary["alarm"]
    logger.info(
        "interval %s: %d rows, %d flagged (%.2f%%); alarm %s",
        summary["interval"], summary["rows"], summary["anomalies"],
        100 * summary["anomaly_rate"], "FIRED: " + "; ".join(alarm["reasons"])
        if alarm["fired"] else "quiet",
    )  # fmt: skip
    create_markdown_artifact(
        markdown=reports.interval_markdown(summary),
        key="interval-summary",
        description=f"{summary['deployment']} interval {summary['interval']}",
    )
    if alarm["fired"]:
        emit_event(
            event=ALARM_EVENT,
            resource={
                "prefect.resource.id": f"genad.deployment.{summary['deployment']}",
                "prefect.resource.name": summary["deployment"],
            },
            payload={
                key: summary[key]
                for key in (
                    "interval",
                    "rows",
                    "anomalies",
                    "anomaly_rate",
                    "output",
                    "model_name",
                    "model_version",
                    "alarm",
                )
            },  # fmt: skip
        )

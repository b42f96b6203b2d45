"""The history of a scheduled-scoring deployment in MLflow: one experiment per deployment.

Every run of `interval_score_flow` logs one MLflow run named by its interval in the experiment
`genad-schedule/<deployment>`: tags `genad.interval` (ISO time), `genad.state` ("scored",
"skipped" or "missing"), `genad.alarm`; the model version and paths as parameters; rows,
flagged count, anomaly rate, score quantiles and the alarm's p-values as metrics stamped with
the interval's time. The same metrics also go, one point per interval (step = the interval's
Unix time), to one run named "history" in the experiment, so the MLflow UI draws them as a time
series (open that run's metric charts and pick "wall time" or "step" on the x axis).
`list_intervals` reads the runs back, the latest per interval first.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pipelines import tracking

EXPERIMENT_PREFIX = "genad-schedule/"
HISTORY_RUN = "history"
MAX_LISTED = 1000


def experiment_name(deployment: str) -> str:
    """The MLflow experiment holding a deployment's history."""
    return EXPERIMENT_PREFIX + deployment


def interval_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The figures of one interval that are logged as metrics (a skipped interval: none)."""
    if summary.get("state") != "scored":
        return {}
    alarm = summary["alarm"]
    metrics = {
        "rows": summary["rows"],
        "flagged": summary["anomalies"],
        "anomaly_rate": summary["anomaly_rate"],
        "alarm_fired": float(alarm["fired"]),
        "alarm_count_p_value": alarm["count_p_value"],
        "alarm_shift_p_value": alarm["shift_p_value"],
        "alarm_rank_auc": alarm["rank_auc"],
        "flagged_at_alarm_rate": alarm["flagged"],
    }
    metrics.update({f"score_{k}": v for k, v in summary["score_quantiles"].items()})
    return metrics


def log_interval(summary: dict[str, Any]) -> str:
    """Log one interval's run (and its point of the history run); its MLflow run id."""
    deployment, interval = summary["deployment"], summary["interval"]
    stamp = int(dt.datetime.fromisoformat(interval).timestamp() * 1000)
    alarm = summary.get("alarm") or {}
    tags = {
        "genad.flow": "interval-score",
        "genad.deployment": deployment,
        "genad.interval": interval,
        "genad.state": summary["state"],
        "genad.alarm": str(bool(alarm.get("fired", False))).lower(),
        "genad.flow_run_id": summary.get("flow_run_id") or "",
    }
    metrics = interval_metrics(summary)
    with tracking.new_run(experiment_name(deployment), interval, tags) as run:
        keys = ("model_uri", "model_name", "model_version", "input", "output", "message")
        run.log_params({k: summary[k] for k in keys if summary.get(k) is not None})
        if metrics:
            run.log_metrics(metrics, timestamp_ms=stamp)
            run.log_dict(summary, "interval_summary.json")
    if metrics:
        history = history_run(deployment)
        history.log_metrics(metrics, step=stamp // 1000, timestamp_ms=stamp)
    return run.run_id


def history_run(deployment: str) -> tracking.Run:
    """The deployment's "history" run (the oldest, if two processes made one each)."""
    name = experiment_name(deployment)
    where = f"tags.`mlflow.runName` = '{HISTORY_RUN}'"
    found = tracking.find_runs(name, where, ["attributes.start_time ASC"], 1)
    if found:
        return tracking.Run(found[0].info.run_id)
    return tracking.finished_run(name, HISTORY_RUN, {"genad.history": "1"})


def list_intervals(deployment: str, last: int = 10) -> list[dict[str, Any]]:
    """The last `last` intervals logged for `deployment`, newest first: for each interval its
    latest run's state, rows, flagged count, anomaly rate, alarm and model version."""
    runs = tracking.find_runs(
        experiment_name(deployment),
        "tags.`genad.flow` = 'interval-score'",
        ["attributes.start_time DESC"],
        MAX_LISTED,
    )
    latest: dict[str, Any] = {}
    for run in runs:
        latest.setdefault(run.data.tags["genad.interval"], run)
    newest = sorted(latest, key=dt.datetime.fromisoformat, reverse=True)
    return [_row(latest[key]) for key in newest[:last]]


def _row(run: Any) -> dict[str, Any]:
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    return {
        "interval": tags["genad.interval"],
        "state": tags.get("genad.state", ""),
        "rows": int(metrics["rows"]) if "rows" in metrics else None,
        "flagged": int(metrics["flagged"]) if "flagged" in metrics else None,
        "anomaly_rate": metrics.get("anomaly_rate"),
        "alarm": tags.get("genad.alarm") == "true",
        "model_version": params.get("model_version"),
        "run_id": run.info.run_id,
        "message": params.get("message", ""),
    }

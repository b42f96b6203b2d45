"""`evaluate_and_promote_flow`: the gate that alone moves `champion`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from anomaly.errors import UserInputError
from anomaly.evaluation import DataSpec, ranking_metrics
from anomaly.packaged.scoring import load_bundle
from pipelines import tracking
from pipelines.retries import io_task_options
from pipelines.train import load_data

EVAL_EXPERIMENT = "genad-evaluation"
METRICS = ("auroc", "auprc")


@dataclass(frozen=True)
class Decision:
    """What the gate decided and why."""

    promoted: bool
    reason: str
    metric: str
    challenger_version: str
    challenger_value: float
    champion_version: str | None
    champion_value: float | None
    margin: float


def decide(
    metric: str,
    challenger: tuple[str, float],
    champion: tuple[str, float] | None,
    margin: float,
) -> Decision:
    """Promote when there is no champion, or the challenger beats it by more than `margin`."""
    version, value = challenger
    if champion is None:
        return Decision(True, "no champion yet", metric, version, value, None, None, margin)
    best_version, best_value = champion
    if version == best_version:
        reason = f"version {version} is already the champion"
        return Decision(False, reason, metric, version, value, best_version, best_value, margin)
    if value > best_value + margin:
        reason = f"{metric} {value:.4f} beats the champion's {best_value:.4f} by more than {margin}"
        return Decision(True, reason, metric, version, value, best_version, best_value, margin)
    reason = (
        f"{metric} {value:.4f} does not beat the champion's (version {best_version}) "
        f"{best_value:.4f} by more than {margin}"
    )
    return Decision(False, reason, metric, version, value, best_version, best_value, margin)


@task(**io_task_options(2, 2), cache_policy=NONE)
def score_version(model_name: str, version: str, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Download one version and compute its ranking metrics on (X, y)."""
    resolved = tracking.resolve_model(f"models:/{model_name}/{version}")
    model = load_bundle(resolved.bundle_dir)
    scores = model.detector.score_samples(X)
    return ranking_metrics(y, -scores)


@task(cache_policy=NONE)
def record_decision(model_name: str, decision: Decision, digest: str) -> str:
    """Log the evaluation run; move `champion` if promoted; tag the challenger either way."""
    with tracking.new_run(EVAL_EXPERIMENT, f"gate-{model_name}", {}) as run:
        run.log_params({k: v for k, v in asdict(decision).items() if v is not None})
        run.log_params({"model_name": model_name, "validation_digest": digest})
        run.log_metrics({"promoted": float(decision.promoted)})
    metric = {**asdict(decision), "validation_digest": digest, "evaluation_run": run.run_id}
    if decision.promoted:
        tracking.move_alias(
            model_name,
            tracking.CHAMPION,
            decision.challenger_version,
            reason=decision.reason,
            action="evaluate-and-promote",
            metric=metric,
        )
    key = f"genad.gate.{time.time_ns()}"
    tracking.tag_version(model_name, decision.challenger_version, key, json.dumps(metric))
    return run.run_id


@flow(name="evaluate-and-promote", log_prints=True)
def evaluate_and_promote_flow(
    model_name: str,
    validation: str,
    *,
    split: str | None = None,
    label_column: str | None = None,
    novelty_classes: list[int] | None = None,
    holdout_fraction: float | None = 0.2,
    seed: int = 0,
    metric: str = "auroc",
    margin: float = 0.0,
) -> dict[str, Any]:
    """Score `challenger` and `champion` on the same labelled validation rows; promote the
    challenger only if it beats the champion's `metric` by more than `margin` (the first model
    is promoted when there is no champion). Otherwise aliases stay and the reason is returned.

    `validation` is a data set name or file. With `holdout_fraction` (default 0.2, as in
    `train_vae_flow`) the gate uses the same held-out rows as training did (same seed); pass
    None to use every row (a separate validation file).
    """
    logger = get_run_logger()
    if metric not in METRICS:
        raise UserInputError(f"metric must be one of {METRICS}, got {metric!r}")
    tracking.configure()
    challenger = tracking.alias_version(model_name, tracking.CHALLENGER)
    if challenger is None:
        raise tracking.ModelNotFoundError(f"model {model_name!r} has no challenger to evaluate")
    champion = tracking.alias_version(model_name, tracking.CHAMPION)
    data = load_data(DataSpec(validation, split, label_column, tuple(novelty_classes or ())))
    X, y = validation_rows(data, holdout_fraction, seed)
    challenger_value = score_version(model_name, challenger, X, y)[metric]
    champion_pair = None
    if champion is not None and champion != challenger:
        champion_pair = (champion, score_version(model_name, champion, X, y)[metric])
    elif champion is not None:
        champion_pair = (champion, challenger_value)
    decision = decide(metric, (challenger, challenger_value), champion_pair, margin)
    run_id = record_decision(model_name, decision, data.digest)
    logger.info("%s: %s", "promoted" if decision.promoted else "not promoted", decision.reason)
    return {**asdict(decision), "evaluation_run": run_id}


def validation_rows(data: Any, holdout_fraction: float | None, seed: int) -> tuple:
    """The labelled rows the gate scores: the seeded held-out part, or every row."""
    if data.y is None or len(np.unique(data.y)) < 2:
        raise UserInputError(f"{data.name}: the gate needs labelled data with both classes")
    if holdout_fraction is None:
        return data.X, data.y
    split = data.holdout(holdout_fraction, seed)
    return split.X_test, split.y_test

"""The main job end to end (`make demo`): train, register, promote, batch-score, report.

Fashion-MNIST with one class held out as the novelty: a VAE trains on the other nine classes
of the training split, the evaluation gate promotes it (held-out rows of the training split),
and `batch_score_flow` scores the whole test split from the registry's champion.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomaly.atomic import atomic_file
from anomaly.data import load_dataset
from anomaly.data.catalog import IMAGE_SETS
from anomaly.evaluation import DataSpec, ranking_metrics
from anomaly.plots import plot_score_histogram
from pipelines import tracking
from pipelines.promote import evaluate_and_promote_flow
from pipelines.score import batch_score_flow
from pipelines.train import train_vae_flow

HOLDOUT_FRACTION = 0.2
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def write_npz_atomic(path: Path, **arrays: np.ndarray) -> Path:
    """np.savez to a temp file beside `path`, then rename."""
    with atomic_file(path, suffix=".npz") as staging:
        np.savez(staging, **arrays)
    return path


def test_rows(dataset: str, novelty_class: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows the demo batch-scores, with 0/1 labels: the test split of an image set, or
    for a set without one (ADBench) the held-out part the gate also used."""
    if dataset in IMAGE_SETS:
        test = load_dataset(dataset, split="test")
        return test.X, (test.y == novelty_class).astype(int)
    spec = DataSpec(dataset, novelty_classes=() if novelty_class is None else (novelty_class,))
    split = spec.load().holdout(HOLDOUT_FRACTION, seed)
    return split.X_test, split.y_test


def run_demo(
    *,
    dataset: str = "fashion-mnist",
    novelty_class: int | None = 0,
    config: dict[str, Any],
    workdir: Path,
    model_name: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train -> register -> promote -> batch-score the test split; return what was measured."""
    started = time.perf_counter()
    workdir = workdir.resolve()
    split = "train" if dataset in IMAGE_SETS else None
    novelty = [] if novelty_class is None else [novelty_class]
    trained = train_vae_flow(
        dataset, config, model_name=model_name, split=split, novelty_classes=novelty,
        validation_fraction=HOLDOUT_FRACTION, seed=seed,
    )  # fmt: skip
    name = trained["model_name"]
    gate = evaluate_and_promote_flow(
        name, dataset, split=split, novelty_classes=novelty,
        holdout_fraction=HOLDOUT_FRACTION, seed=seed,
    )  # fmt: skip
    X_test, labels = test_rows(dataset, novelty_class, seed)
    test_file = write_npz_atomic(workdir / "test.npz", X=X_test, y=labels)
    output = workdir / "scores.parquet"
    summary = batch_score_flow(f"models:/{name}@champion", str(test_file), str(output))
    scored = pd.read_parquet(output, columns=["row_id", "log_px", "is_anomaly"])
    y = labels[scored["row_id"].to_numpy()]
    metrics = ranking_metrics(y, -scored["log_px"].to_numpy())
    picture = plot_score_histogram(
        scored["log_px"].to_numpy(), y, summary["threshold"], workdir / "test_scores.png",
        title=f"{dataset} test: class {novelty_class} held out, AUROC {metrics['auroc']:.3f}",
    )  # fmt: skip
    flagged = scored["is_anomaly"].to_numpy()
    return {
        "trained": trained,
        "gate": gate,
        "summary": summary,
        "auroc": metrics["auroc"],
        "auprc": metrics["auprc"],
        "flag_rate_normal": float(flagged[y == 0].mean()),
        "flag_rate_novel": float(flagged[y == 1].mean()),
        "output": output,
        "plot": picture,
        "seconds": time.perf_counter() - started,
    }


def print_report(result: dict[str, Any], dataset: str, novelty_class: int | None) -> None:
    """The demo's closing lines: quality, flags, where things are."""
    summary = result["summary"]
    if novelty_class is None:
        held_out = "labelled anomalies"
    elif dataset == "fashion-mnist":
        held_out = f"novelty class {novelty_class} ({FASHION_CLASSES[novelty_class]})"
    else:
        held_out = f"novelty class {novelty_class}"
    print(f"\n== genad demo: {dataset}, {held_out} ==")
    print(f"model {summary['model_name']} version {summary['model_version']} (champion)")
    print(
        f"gate: {'promoted' if result['gate']['promoted'] else 'kept'}: {result['gate']['reason']}"
    )
    print(
        f"AUROC {result['auroc']:.4f}  AUPRC {result['auprc']:.4f} on {summary['rows']} test rows"
    )
    print(
        f"anomaly rate {summary['anomaly_rate']:.4f} (normal rows flagged "
        f"{result['flag_rate_normal']:.4f}, novel rows flagged {result['flag_rate_novel']:.4f})"
    )
    print(f"output: {result['output']}")
    print(f"summary: {result['output']}.summary.json   plot: {result['plot']}")
    print(f"MLflow UI: {tracking.ui_command()}")
    print(f"total {result['seconds']:.0f}s")

"""The main job end to end (`make demo`): train, register, promote, batch-score, report.

Fashion-MNIST one-class novelty: a VAE with the likelihood-ratio correction (what
docs/detector.md recommends for images) trains on one class of the training split, the
evaluation gate promotes it (held-out rows of the training split), and `batch_score_flow`
scores the whole test split from the registry's champion; every other class is the novelty.
The report puts the raw log p(x) beside the corrected score the flags use, as numbers and as a
figure, because the raw likelihood is what fails here. A failing step is one line naming it
(`pipelines.preflight.step`), its traceback in `<workdir>/error.log`.
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
from anomaly.errors import ConfigError
from anomaly.evaluation import DataSpec, ranking_metrics
from anomaly.plots import plot_score_comparison
from pipelines import tracking
from pipelines.preflight import step
from pipelines.promote import evaluate_and_promote_flow
from pipelines.score import batch_score_flow
from pipelines.train import train_vae_flow

HOLDOUT_FRACTION = 0.2
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
RAW_SCORE = "raw log p(x)"
# The name of each correction's score in the report (the column `normality` of the scores).
CORRECTED_SCORE = {
    "none": "log p(x)",
    "likelihood_ratio": "likelihood ratio",
    "complexity": "complexity-corrected",
}


# The demo's detector: docs/detector.md's one-class setting (conv VAE, IWAE K=16 under bf16, early
# stopping) with the calibrated rule; image sets add the likelihood-ratio correction it
# recommends for images.
DEMO_CONFIG = {
    "epochs": 8,
    "patience": 3,
    "score_method": "iwae",
    "n_samples": 16,
    "precision": "bf16",
    "target_fpr": 0.05,
    "verbose": True,
}
DEMO_IMAGE_CONFIG = {**DEMO_CONFIG, "correction": "likelihood_ratio"}


def demo_config(dataset: str) -> dict[str, Any]:
    """The demo's VAEDetector parameters for `dataset` (flags and --config go on top)."""
    return dict(DEMO_IMAGE_CONFIG if dataset in IMAGE_SETS else DEMO_CONFIG)


def write_npz_atomic(path: Path, **arrays: np.ndarray) -> Path:
    """np.savez to a temp file beside `path`, then rename."""
    with atomic_file(path, suffix=".npz") as staging:
        np.savez(staging, **arrays)
    return path


def novelty_classes(dataset: str, normal_class: int) -> list[int]:
    """Every class but `normal_class`: the ten of an image set, else labels 0/1."""
    classes = range(10) if dataset in IMAGE_SETS else range(2)
    if normal_class not in classes:
        raise ConfigError(f"--normal-class {normal_class} is not a class of {dataset}")
    return [label for label in classes if label != normal_class]


def test_rows(dataset: str, novelty: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows the demo batch-scores, with 0/1 labels (1 = a novelty class): the test split
    of an image set, or for a set without one (ADBench) the held-out part the gate also used."""
    if dataset in IMAGE_SETS:
        test = load_dataset(dataset, split="test")
        return test.X, np.isin(test.y, novelty).astype(int)
    split = DataSpec(dataset, novelty_classes=tuple(novelty)).load().holdout(HOLDOUT_FRACTION, seed)
    return split.X_test, split.y_test


def run_demo(
    *,
    dataset: str = "fashion-mnist",
    normal_class: int = 0,
    config: dict[str, Any],
    workdir: Path,
    model_name: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train -> register -> promote -> batch-score the test split; return what was measured.
    A failing step raises `StepFailedError` naming it (traceback in `workdir/error.log`)."""
    started = time.perf_counter()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)  # the demo's own work folder
    log = workdir / "error.log"
    log.unlink(missing_ok=True)
    split = "train" if dataset in IMAGE_SETS else None
    novelty = novelty_classes(dataset, normal_class)
    with step("training", log):
        trained = train_vae_flow(
            dataset, config, model_name=model_name, split=split, novelty_classes=novelty,
            validation_fraction=HOLDOUT_FRACTION, seed=seed,
        )  # fmt: skip
    name = trained["model_name"]
    with step("the evaluation gate", log):
        gate = evaluate_and_promote_flow(
            name, dataset, split=split, novelty_classes=novelty,
            holdout_fraction=HOLDOUT_FRACTION, seed=seed,
        )  # fmt: skip
    with step("batch scoring", log):
        X_test, labels = test_rows(dataset, novelty, seed)
        test_file = write_npz_atomic(workdir / "test.npz", X=X_test, y=labels)
        output = workdir / "scores.parquet"
        summary = batch_score_flow(f"models:/{name}@champion", str(test_file), str(output))
    with step("the report", log):
        measured = measure(output, labels, summary, config.get("correction", "none"), workdir)
    return {
        "trained": trained, "gate": gate, "summary": summary, "output": output,
        **measured, "seconds": time.perf_counter() - started,
    }  # fmt: skip


def measure(
    output: Path, labels: np.ndarray, summary: dict[str, Any], correction: str, workdir: Path
) -> dict[str, Any]:
    """AUROC/AUPRC of the raw log p(x) and of the score the flags use, the flag rates, and
    the figure that compares the two scores."""
    scored = pd.read_parquet(output, columns=["row_id", "log_px", "normality", "is_anomaly"])
    y = labels[scored["row_id"].to_numpy()]
    scores = {RAW_SCORE: scored["log_px"].to_numpy()}
    if correction != "none":
        scores[CORRECTED_SCORE[correction]] = scored["normality"].to_numpy()
    metrics = {name: ranking_metrics(y, -values) for name, values in scores.items()}
    picture = plot_score_comparison(
        y, scores, summary["threshold"], workdir / "test_scores.png",
        title=f"{len(y)} test rows, {int(y.sum())} novel: raw and flagged-by scores",
    )  # fmt: skip
    flagged = scored["is_anomaly"].to_numpy()
    return {
        "metrics": metrics,
        "flagged_by": list(scores)[-1],
        "flag_rate_normal": float(flagged[y == 0].mean()),
        "flag_rate_novel": float(flagged[y == 1].mean()),
        "plot": picture,
    }


def print_report(result: dict[str, Any], dataset: str, normal_class: int) -> None:
    """The demo's closing lines: both scores' quality, flags, where things are."""
    summary = result["summary"]
    if dataset in IMAGE_SETS:
        label = f" ({FASHION_CLASSES[normal_class]})" if dataset == "fashion-mnist" else ""
        task = f"trained on class {normal_class}{label} only; every other class is novel"
    else:
        task = f"trained on label {normal_class} rows; the labelled anomalies are the novelty"
    print(f"\n== genad demo: {dataset}, {task} ==")
    print(f"model {summary['model_name']} version {summary['model_version']} (champion)")
    print(
        f"gate: {'promoted' if result['gate']['promoted'] else 'kept'}: {result['gate']['reason']}"
    )
    print(f"on {summary['rows']} test rows:")
    for name, metrics in result["metrics"].items():
        role = "  <- the score the flags use" if name == result["flagged_by"] else ""
        print(f"  {name:<22} AUROC {metrics['auroc']:.4f}  AUPRC {metrics['auprc']:.4f}{role}")
    print(
        f"anomaly rate {summary['anomaly_rate']:.4f} (normal rows flagged "
        f"{result['flag_rate_normal']:.4f}, novel rows flagged {result['flag_rate_novel']:.4f})"
    )
    print(f"output: {result['output']}")
    print(f"summary: {result['output']}.summary.json   plot: {result['plot']}")
    print(f"MLflow UI: {tracking.ui_command()}")
    print(f"total {result['seconds']:.0f}s")

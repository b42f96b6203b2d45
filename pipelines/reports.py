"""Validation metrics and the pictures a training run logs (PNG files in one folder), and the
markdown summary a scoring run posts to Prefect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anomaly import VAEDetector
from anomaly.diagnostics import prior_samples, reconstructions, to_unit_range
from anomaly.evaluation import NoveltySplit, ranking_metrics
from anomaly.plots import plot_image_grid, plot_loss_curves, plot_roc, plot_score_histogram

GRID_IMAGES = 16


def validation_report(detector: VAEDetector, split: NoveltySplit, folder: Path) -> dict[str, float]:
    """Score the held-out rows; write loss curves, ROC, score histogram (and, for images,
    reconstructions and prior samples) into `folder`; return the validation metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    plot_loss_curves(detector.history_, folder / "loss_curves.png")
    scores = detector.score_samples(split.X_test)
    labels = split.y_test
    normal = labels == 0
    metrics = {
        "val_rows": float(len(labels)),
        "val_log_px_median_normal": float(np.median(scores[normal])) if normal.any() else np.nan,
        "val_flag_rate_normal": float(np.mean(scores[normal] < detector.offset_)),
        "threshold": float(detector.offset_),
        "active_units": float(detector.active_units_),
        "epochs_run": float(len(detector.history_)),
    }
    plot_score_histogram(
        scores, labels, detector.offset_, folder / "score_histogram.png", title="validation rows"
    )
    if 0 < labels.sum() < len(labels):
        metrics.update({f"val_{k}": v for k, v in ranking_metrics(labels, -scores).items()})
        metrics["val_flag_rate_anomaly"] = float(np.mean(scores[~normal] < detector.offset_))
        plot_roc(labels, -scores, folder / "roc.png", title="validation ROC")
    if len(detector.input_shape_) == 3:
        _image_plots(detector, split.X_test, folder)
    return metrics


def _image_plots(detector: VAEDetector, X: np.ndarray, folder: Path) -> None:
    originals = X[:GRID_IMAGES]
    if originals.ndim == 3:
        originals = originals[:, np.newaxis]
    rebuilt = reconstructions(detector, originals)
    grid = np.concatenate([to_unit_range(originals), rebuilt])
    plot_image_grid(
        grid,
        folder / "reconstructions.png",
        ncols=len(originals),
        title="validation images (top) and reconstructions (bottom)",
        row_labels=["input", "reconstruction"],
    )
    plot_image_grid(
        prior_samples(detector, 2 * GRID_IMAGES),
        folder / "prior_samples.png",
        ncols=GRID_IMAGES,
        title="decoder means of z ~ N(0, I)",
    )


def scoring_markdown(summary: dict[str, Any]) -> str:
    """A markdown table of the most anomalous rows, for the Prefect UI."""
    rows = summary["top_anomalies"]
    lines = [
        f"# Batch scoring: {summary['rows']} rows, {summary['anomalies']} flagged "
        f"({summary['anomaly_rate']:.2%})",
        f"Model `{summary['model_name']}` version {summary['model_version']}; "
        f"output `{summary['output']}`.",
        "",
        *typicality_lines(summary.get("typicality")),
        *rejected_lines(summary),
        "| rank | row_id | file | log_px | normality | score |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for rank, row in enumerate(rows, 1):
        name = row.get("file", "")
        lines.append(
            f"| {rank} | {row['row_id']} | {name} | {row['log_px']:.2f} "
            f"| {row['normality']:.2f} | {row['score']:.2f} |"
        )
    return "\n".join(lines)


def typicality_lines(typicality: dict[str, Any] | None) -> list[str]:
    """One markdown line on the typicality test, when it ran."""
    if not typicality or not typicality.get("groups"):
        return []
    return [
        f"Typicality: {typicality['atypical_groups']} of {typicality['groups']} groups of "
        f"{typicality['group_size']} rows atypical at level {typicality['level']}; whole input "
        f"p = {typicality['whole_input_p_value']:.4g}.",
        "",
    ]


def rejected_lines(summary: dict[str, Any]) -> list[str]:
    """One markdown line on the bad rows skipped, when the run skipped any."""
    if not summary.get("rejected"):
        return []
    return [
        f'{summary["rejected"]} bad cells or lines skipped (`bad_rows="skip"`): '
        f"`{summary['rejected_report']}`.",
        "",
    ]


def interval_markdown(summary: dict[str, Any]) -> str:
    """The Prefect artifact of one scheduled interval: its figures, the alarm, the top rows."""
    alarm = summary["alarm"]
    verdict = "**ALARM**: " + "; ".join(alarm["reasons"]) if alarm["fired"] else "no alarm"
    lines = [
        f"# Interval {summary['interval']} of {summary['deployment']}",
        f"Input `{summary['input']}` ({len(summary['inputs'])} file(s)); {verdict}.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| rows | {summary['rows']} |",
        f"| flagged (the run's rule) | {summary['anomalies']} ({summary['anomaly_rate']:.2%}) |",
        f"| flagged at p <= {alarm['rate']:g} | {alarm['flagged']} "
        f"(expected {alarm['expected_flagged']:.1f}) |",
        f"| flag-count p-value (beta-binomial) | {alarm['count_p_value']:.3g} |",
        f"| score-shift p-value (rank test) | {alarm['shift_p_value']:.3g} |",
        f"| P(batch score > calibration score) | {alarm['rank_auc']:.3f} |",
        f"| alarm level | {alarm['level']:g} |",
        "",
    ]
    return "\n".join(lines) + "\n" + scoring_markdown(summary)

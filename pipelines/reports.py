"""Validation metrics and the pictures a training run logs (PNG files in one folder)."""

from __future__ import annotations

from pathlib import Path

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

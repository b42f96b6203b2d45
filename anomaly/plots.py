"""Pictures people would rather look at than read: score distributions with the threshold,
training curves, ROC curves and image grids (reconstructions, prior samples).

Every public function writes a PNG atomically (a temporary file in the target folder, then
`os.replace`) with matplotlib's non-interactive Agg backend, and returns the target `Path`.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from anomaly.atomic import atomic_file

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# History keys drawn on the right-hand axis of the training panel: schedules, not losses.
_SCHEDULE_SUFFIXES = ("_weight", "lr", "learning_rate")


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_atomically(figure: Figure, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Write `figure` as a PNG at `path` via a temporary file and `os.replace`; always closes
    the figure and never leaves the temporary file behind."""
    plt = _pyplot()
    try:
        with atomic_file(path, suffix=".png") as staging:
            figure.savefig(staging, dpi=dpi, format="png")
    finally:
        plt.close(figure)
    return Path(path)


# --- score histogram --------------------------------------------------------------------------
def plot_score_histogram(
    scores: np.ndarray,
    labels: np.ndarray | None,
    threshold: float,
    path: str | os.PathLike,
    *,
    title: str = "log p(x) of test rows",
) -> Path:
    """Histogram of log p(x) for normal (label 0) and anomalous (1) rows, with the threshold;
    written atomically as a PNG. With `labels=None` (unlabelled scoring) one histogram of all
    rows is drawn instead."""
    figure, axis = _pyplot().subplots(figsize=(7, 4))
    _draw_histogram(axis, scores, labels, threshold, "estimated log p(x) (nats")
    axis.set_title(title)
    figure.tight_layout()
    return _save_atomically(figure, path, dpi=110)


def _draw_histogram(
    axis: Axes,
    scores: np.ndarray,
    labels: np.ndarray | None,
    threshold: float,
    quantity: str,
    *,
    density: bool = False,
) -> None:
    """Histograms of `scores` by label (or of all rows) on `axis`, the threshold dashed; with
    `density` each label's histogram has area 1 (classes of very different sizes)."""
    scores = np.asarray(scores, dtype=float)
    low, high = np.percentile(scores, [0.5, 100])
    bins = np.linspace(low, high, 60)
    if labels is None:
        chosen = np.clip(scores, low, high)
        axis.hist(chosen, bins=bins, alpha=0.6, label=f"all rows ({len(chosen)})", color="tab:blue")
    else:
        labels = np.asarray(labels).astype(int)
        for label, name, colour in ((0, "normal", "tab:blue"), (1, "anomaly", "tab:red")):
            chosen = np.clip(scores[labels == label], low, high)
            axis.hist(
                chosen, bins=bins, alpha=0.6, label=f"{name} ({len(chosen)})", color=colour,
                density=density,
            )  # fmt: skip
    if np.isfinite(threshold):
        axis.axvline(threshold, color="black", linestyle="--", label="threshold")
    axis.set_xlabel(f"{quantity}; lowest 0.5% clipped)")
    axis.set_ylabel("density (each label)" if density else "rows")
    axis.legend()


def plot_score_comparison(
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    threshold: float,
    path: str | os.PathLike,
    *,
    title: str = "",
) -> Path:
    """Scores side by side on labelled rows (1 = anomaly): their ROC curves on one panel, then
    a histogram per score by label. `scores` maps a name to normality (higher = more normal);
    `threshold` is drawn on the last score's panel (the one the flags use); each label's
    histogram has area 1, so a small class stays visible. Written atomically as a PNG."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = np.asarray(labels).astype(int)
    figure, axes = _pyplot().subplots(1, 1 + len(scores), figsize=(5 + 5 * len(scores), 4.4))
    for index, (name, normality) in enumerate(scores.items()):
        anomaly_score = -np.asarray(normality, dtype=float)
        false_positive, true_positive, _ = roc_curve(labels, anomaly_score)
        area = roc_auc_score(labels, anomaly_score)
        axes[0].plot(false_positive, true_positive, label=f"{name}: AUROC {area:.3f}")
        last = index == len(scores) - 1
        _draw_histogram(
            axes[index + 1], normality, labels, threshold if last else np.nan, name, density=True
        )
        axes[index + 1].set_title(f"{name} (higher = more normal)")
    axes[0].plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance")
    axes[0].set_xlabel("false positive rate")
    axes[0].set_ylabel("true positive rate")
    axes[0].set_title("ROC")
    axes[0].legend(loc="lower right")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save_atomically(figure, path, dpi=100)


# --- training curves --------------------------------------------------------------------------
def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _history_series(
    history: Sequence[dict[str, float]],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Epoch numbers (the row's "epoch" if numeric, else its 1-based position) and one array
    per numeric metric, NaN where an epoch lacks the key or holds a non-number."""
    epochs = np.array(
        [row["epoch"] if _is_number(row.get("epoch")) else i + 1 for i, row in enumerate(history)],
        dtype=float,
    )
    names: list[str] = []
    for row in history:
        names += [k for k, v in row.items() if k != "epoch" and k not in names and _is_number(v)]
    series = {
        name: np.array(
            [float(row[name]) if _is_number(row.get(name)) else np.nan for row in history]
        )
        for name in names
    }
    return epochs, series


def _draw_series(axis: Axes, epochs: np.ndarray, series: dict[str, np.ndarray], **style) -> None:
    """One line per series over the epochs it has; markers when there are few points."""
    for name, values in series.items():
        present = np.isfinite(values)
        marker = "o" if present.sum() <= 30 else None
        axis.plot(epochs[present], values[present], marker=marker, label=name, **style)


def _loss_figure(history: Sequence[dict[str, float]], title: str) -> Figure:
    """The figure of `plot_loss_curves`, unsaved."""
    from matplotlib.ticker import MaxNLocator

    if len(history) == 0:
        raise ValueError("plot_loss_curves needs a non-empty history (one dict per epoch)")
    epochs, series = _history_series(history)
    validation = {k: v for k, v in series.items() if k.startswith("val")}
    schedule = {
        k: v for k, v in series.items() if k not in validation and k.endswith(_SCHEDULE_SUFFIXES)
    }
    training = {k: v for k, v in series.items() if k not in validation and k not in schedule}
    panels = [("training", training)] + ([("validation", validation)] if validation else [])
    figure, axes = _pyplot().subplots(
        len(panels), 1, figsize=(7, 3.2 * len(panels)), sharex=True, squeeze=False
    )
    for axis, (name, chosen) in zip(axes[:, 0], panels, strict=True):
        _draw_series(axis, epochs, chosen)
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        if not chosen:
            axis.text(0.5, 0.5, "no metrics recorded", ha="center", transform=axis.transAxes)
    training_axis = axes[0, 0]
    handles, names = training_axis.get_legend_handles_labels()
    if schedule:
        twin = training_axis.twinx()
        _draw_series(twin, epochs, schedule, linestyle="--", alpha=0.6)
        twin.set_ylabel("schedule")
        more_handles, more_names = twin.get_legend_handles_labels()
        handles, names = handles + more_handles, names + more_names
    if handles:
        training_axis.legend(handles, names, loc="best", fontsize="small")
    if validation:
        axes[1, 0].legend(loc="best", fontsize="small")
    axes[-1, 0].set_xlabel("epoch")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_title(title)
    figure.tight_layout()
    return figure


def plot_loss_curves(
    history: Sequence[dict[str, float]], path: str | os.PathLike, *, title: str = "training"
) -> Path:
    """Training curves from a Trainer history (one dict of metrics per epoch); written
    atomically as a PNG.

    Every numeric key except "epoch" is drawn against the epoch (the row's "epoch" value if
    present, else its 1-based position). Keys starting with "val" go to a second panel;
    schedules (keys ending in "_weight", "lr") to a dashed right-hand axis of the training panel;
    everything else (the loss and its parts) to the training panel. Epochs lacking a key are
    skipped for that key. Raises ValueError on an empty history.
    """
    return _save_atomically(_loss_figure(history, title), path)


# --- ROC curve --------------------------------------------------------------------------------
def _roc_figure(labels: np.ndarray, anomaly_score: np.ndarray, title: str) -> tuple[Figure, float]:
    """The figure of `plot_roc`, unsaved, and the AUROC shown in its legend."""
    from sklearn.metrics import auc, roc_curve

    labels = np.asarray(labels).ravel()
    anomaly_score = np.asarray(anomaly_score, dtype=float).ravel()
    if labels.shape != anomaly_score.shape:
        raise ValueError(
            f"plot_roc: labels ({labels.size}) and anomaly_score ({anomaly_score.size}) "
            "must have the same length"
        )
    classes = set(np.unique(labels).tolist())
    if not classes <= {0, 1}:
        raise ValueError(f"plot_roc: labels must be 0 (normal) or 1 (anomaly), got {classes}")
    if len(classes) < 2:
        raise ValueError(
            "plot_roc: labels contain only one class; ROC needs both normal (0) and anomaly (1)"
        )
    false_positive, true_positive, _ = roc_curve(labels.astype(int), anomaly_score, pos_label=1)
    area = float(auc(false_positive, true_positive))
    figure, axis = _pyplot().subplots(figsize=(5, 5))
    axis.plot(false_positive, true_positive, color="tab:red", label=f"AUROC = {area:.4f}")
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.set_title(title)
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure, area


def plot_roc(
    labels: np.ndarray, anomaly_score: np.ndarray, path: str | os.PathLike, *, title: str = "ROC"
) -> Path:
    """ROC curve of `anomaly_score` (higher = more anomalous) against `labels` (1 = anomaly),
    with the AUROC in the legend and the chance diagonal; written atomically as a PNG.

    Raises ValueError if the lengths differ, labels are not 0/1, or only one class is present.
    """
    figure, _ = _roc_figure(labels, anomaly_score, title)
    return _save_atomically(figure, path)


# --- image grids ------------------------------------------------------------------------------
def _as_images(images: np.ndarray) -> np.ndarray:
    """(n, h, w) or (n, c, h, w) with c in {1, 3} -> (n, h, w) or (n, h, w, 3), in [0, 1]."""
    array = np.asarray(images, dtype=float)
    if array.ndim == 4:
        if array.shape[1] not in (1, 3):
            raise ValueError(
                f"plot_image_grid: expected 1 or 3 channels in (n, c, h, w), got {array.shape}"
            )
        array = array[:, 0] if array.shape[1] == 1 else array.transpose(0, 2, 3, 1)
    elif array.ndim != 3:
        raise ValueError(
            f"plot_image_grid: images must be (n, h, w) or (n, c, h, w), got shape {array.shape}"
        )
    if len(array) == 0:
        raise ValueError("plot_image_grid: no images to draw")
    return np.clip(np.nan_to_num(array, nan=0.0), 0.0, 1.0)


def plot_image_grid(
    images: np.ndarray,
    path: str | os.PathLike,
    *,
    ncols: int = 8,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Images (n, c, h, w) or (n, h, w), values clipped to [0, 1], c in {1, 3}, laid out
    row by row in a grid of `ncols` columns (grayscale with the gray colormap), without ticks;
    written atomically as a PNG.

    For reconstructions, pass originals then reconstructions with `ncols` = images per row and
    `row_labels` (e.g. ["original", "reconstruction"]), one label per grid row. Raises
    ValueError on a wrong shape or channel count, `ncols` < 1, or a `row_labels` length that
    differs from the number of grid rows.
    """
    array = _as_images(images)
    if ncols < 1:
        raise ValueError(f"plot_image_grid: ncols must be at least 1, got {ncols}")
    ncols = min(ncols, len(array))
    nrows = math.ceil(len(array) / ncols)
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(
            f"plot_image_grid: {len(row_labels)} row_labels for a grid of {nrows} rows"
        )
    figure, axes = _pyplot().subplots(
        nrows, ncols, figsize=(1.2 * ncols + 0.3, 1.2 * nrows + 0.3), squeeze=False
    )
    for index, axis in enumerate(axes.ravel()):
        if index < len(array):
            axis.imshow(array[index], cmap="gray" if array.ndim == 3 else None, vmin=0, vmax=1)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_frame_on(False)
    for axis, label in zip(axes[:, 0], row_labels or [], strict=False):
        axis.set_ylabel(label, rotation=90, fontsize="small")
    if title is not None:
        figure.suptitle(title)
    figure.tight_layout()
    return _save_atomically(figure, path)

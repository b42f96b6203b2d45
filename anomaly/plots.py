"""Pictures people would rather look at than read: score distributions with the threshold."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def plot_score_histogram(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    path: str | os.PathLike,
    *,
    title: str = "log p(x) of test rows",
) -> Path:
    """Histogram of log p(x) for normal (label 0) and anomalous (1) rows, with the threshold;
    written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels).astype(int)
    low, high = np.percentile(scores, [0.5, 100])
    bins = np.linspace(low, high, 60)
    figure, axis = plt.subplots(figsize=(7, 4))
    for label, name, colour in ((0, "normal", "tab:blue"), (1, "anomaly", "tab:red")):
        chosen = np.clip(scores[labels == label], low, high)
        axis.hist(chosen, bins=bins, alpha=0.6, label=f"{name} ({len(chosen)})", color=colour)
    if np.isfinite(threshold):
        axis.axvline(threshold, color="black", linestyle="--", label="threshold")
    axis.set_xlabel("estimated log p(x) (nats; lowest 0.5% clipped)")
    axis.set_ylabel("rows")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(suffix=".png", dir=target.parent)
    os.close(handle)
    figure.savefig(staging, dpi=110)
    plt.close(figure)
    os.replace(staging, target)
    return target

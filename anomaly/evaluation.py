"""Evaluation protocol shared by the demo and the benchmarks: splits and ranking metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


@dataclass(frozen=True)
class NoveltySplit:
    """Training rows (normal only) and a labelled test set (1 = anomaly)."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    test_index: np.ndarray


def novelty_split(
    X: np.ndarray, y: np.ndarray, *, test_fraction: float = 0.3, seed: int = 0
) -> NoveltySplit:
    """Stratified split; the detector trains on the normal rows of the training part only.

    Both classes are split in the same proportion, so the test set keeps the data set's
    anomaly rate. Every method compared on a seed sees the identical split.
    """
    y = np.asarray(y).astype(int)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    rng = np.random.default_rng(seed)
    test_rows: list[np.ndarray] = []
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == label))
        test_rows.append(rows[: int(round(test_fraction * len(rows)))])
    test_index = np.sort(np.concatenate(test_rows))
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test_index] = True
    train_index = np.flatnonzero(~is_test & (y == 0))
    return NoveltySplit(X[train_index], X[test_index], y[test_index], test_index)


def ranking_metrics(y_true: np.ndarray, anomaly_score: np.ndarray) -> dict[str, float]:
    """AUROC and AUPRC (average precision) of `anomaly_score` (higher = more anomalous)."""
    return {
        "auroc": float(roc_auc_score(y_true, anomaly_score)),
        "auprc": float(average_precision_score(y_true, anomaly_score)),
    }

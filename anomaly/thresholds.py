"""Thresholds set on held-out calibration scores."""

from __future__ import annotations

import math

import numpy as np


def conformal_rank(rate: float, n_calibration: int) -> int:
    """k = floor(rate * (n + 1)): a new row is flagged at level `rate` when its score is below
    the k-th smallest of n calibration scores (0: no row can be)."""
    return math.floor(rate * (n_calibration + 1) + 1e-9)


def conformal_offset(calibration_scores: np.ndarray, rate: float) -> float:
    """The offset that flags a new row when its score is <= the k-th smallest calibration score,
    k = floor(rate * (n + 1)).

    If the new row and the n calibration rows are exchangeable (all normal), its rank is uniform,
    so it is flagged with probability k / (n + 1) <= rate (exactly, for continuous scores).
    Returns -inf (flag nothing) when n is too small for k >= 1. Rows are flagged when
    `score - offset < 0`, so the offset is the next float above the k-th score.
    """
    scores = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError("calibration_scores must be a non-empty 1-D array")
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    k = conformal_rank(rate, len(scores))
    if k < 1:
        return -math.inf
    return float(np.nextafter(scores[k - 1], np.inf))


def conformal_p_values(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """p = (1 + #{calibration scores <= score}) / (n + 1) per score (lower = more anomalous).

    With n calibration rows exchangeable with a new normal row, P(p <= a) <= a for every a:
    the p-value is super-uniform under normality, whatever the model.
    """
    calibration = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    if calibration.ndim != 1 or len(calibration) == 0:
        raise ValueError("calibration_scores must be a non-empty 1-D array")
    scores = np.asarray(scores, dtype=np.float64)
    at_or_below = np.searchsorted(calibration, scores, side="right")
    return (1.0 + at_or_below) / (len(calibration) + 1.0)


def benjamini_hochberg(p_values: np.ndarray, level: float) -> np.ndarray:
    """Flags of the Benjamini-Hochberg procedure at FDR `level` over one batch of p-values:
    reject the k smallest, k = max{i : p_(i) <= level * i / m}."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return np.zeros(0, dtype=bool)
    ordered = np.sort(p)
    passing = np.flatnonzero(ordered <= level * np.arange(1, m + 1) / m)
    if len(passing) == 0:
        return np.zeros(m, dtype=bool)
    return p <= ordered[passing[-1]]


def flag_by_threshold(log_px: np.ndarray, p: np.ndarray, offset: float, level: float) -> np.ndarray:
    """Flag rows scoring below the calibrated offset (`contamination` / `target_fpr`)."""
    return np.asarray(log_px) < offset


def flag_by_alpha(log_px: np.ndarray, p: np.ndarray, offset: float, level: float) -> np.ndarray:
    """Flag rows whose conformal p-value is <= level: a normal row is flagged with
    probability <= level."""
    return np.asarray(p) <= level


def flag_by_fdr(log_px: np.ndarray, p: np.ndarray, offset: float, level: float) -> np.ndarray:
    """Benjamini-Hochberg over the batch: the expected share of normal rows among the flagged
    ones is <= level."""
    return benjamini_hochberg(p, level)


FLAG_RULES = {"threshold": flag_by_threshold, "alpha": flag_by_alpha, "fdr": flag_by_fdr}

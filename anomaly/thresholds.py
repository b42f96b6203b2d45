"""Thresholds set on held-out calibration scores."""

from __future__ import annotations

import math

import numpy as np


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
    k = math.floor(rate * (len(scores) + 1) + 1e-9)
    if k < 1:
        return -math.inf
    return float(np.nextafter(scores[k - 1], np.inf))

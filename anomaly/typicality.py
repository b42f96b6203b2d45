"""A typicality test over groups of inputs (Nalisnick et al. 2019b).

A model's typical set holds inputs whose log-likelihood is close to its mean over normal data
(minus the entropy), not the inputs with the highest likelihood. A group of M inputs is
flagged when its mean score is far from the normal mean in either direction, so a batch of
too-likely inputs (MNIST under a Fashion-MNIST model) is caught as well as a batch of unlikely
ones. It tests groups, not single rows: one input says little about a mean.

The null distribution is bootstrapped from the detector's calibration scores (held-out normal
rows): the statistic |mean(group) - mean(calibration)| of a normal group varies both with the
group's draw (variance s^2 / M) and with the calibration sample's own mean (s^2 / n), and both
are resampled, so the p-value stays valid for small calibration sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Above this many rows a bootstrap mean (of a group, or of the calibration set) is drawn from
# its normal limit (CLT) instead of resampling the rows: memory stays at n_bootstrap x 1000.
MAX_RESAMPLED_GROUP = 1000


@dataclass(frozen=True)
class TypicalityTest:
    """Two-sided test that a group's mean score is typical of normal data.

    `calibration` are scores (higher = more normal; log p(x) or a corrected score) of
    held-out normal rows; `n_bootstrap` draws build each null distribution, seeded by `seed`.
    """

    calibration: np.ndarray
    n_bootstrap: int = 4999
    seed: int = 0

    def __post_init__(self) -> None:
        calibration = np.asarray(self.calibration, dtype=np.float64)
        if calibration.ndim != 1 or len(calibration) < 2 or not np.isfinite(calibration).all():
            raise ValueError("calibration must be a 1-D array of at least 2 finite scores")
        if self.n_bootstrap < 99:
            raise ValueError(f"n_bootstrap must be >= 99, got {self.n_bootstrap}")
        object.__setattr__(self, "calibration", calibration)

    @property
    def centre(self) -> float:
        """The mean calibration score (for log p(x), an estimate of minus the entropy)."""
        return float(self.calibration.mean())

    def statistic(self, scores: np.ndarray) -> float:
        """|mean(scores) - centre|: how far the group's mean is from the typical one."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 1 or len(scores) == 0:
            raise ValueError("a group needs at least one score")
        return abs(float(scores.mean()) - self.centre)

    def null_statistics(self, group_size: int) -> np.ndarray:
        """`n_bootstrap` draws of the statistic for a normal group of `group_size` rows."""
        rng = np.random.default_rng([self.seed, group_size])
        reference = self._bootstrap_means(rng, len(self.calibration))
        return np.abs(self._bootstrap_means(rng, group_size) - reference)

    def _bootstrap_means(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """`n_bootstrap` means of `size` rows resampled from the calibration scores."""
        if size <= MAX_RESAMPLED_GROUP:
            draws = rng.integers(0, len(self.calibration), size=(self.n_bootstrap, size))
            return self.calibration[draws].mean(axis=1)
        spread = self.calibration.std() / math.sqrt(size)
        return rng.normal(self.centre, spread, size=self.n_bootstrap)

    def p_value(self, scores: np.ndarray) -> float:
        """Bootstrap p-value (1 + #{null >= observed}) / (B + 1) of one group."""
        observed = self.statistic(scores)
        null = self.null_statistics(len(scores))
        return float((1 + np.count_nonzero(null >= observed)) / (self.n_bootstrap + 1))

    def test_groups(self, scores: np.ndarray, group_size: int) -> dict[str, np.ndarray]:
        """Split `scores` (in row order) into consecutive groups of `group_size` (the last may
        be shorter) and test each: columns group, first_row, rows, mean_score, statistic,
        p_value."""
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        scores = np.asarray(scores, dtype=np.float64)
        starts = np.arange(0, len(scores), group_size)
        nulls: dict[int, np.ndarray] = {}
        columns: dict[str, list] = {k: [] for k in ("mean_score", "statistic", "p_value")}
        for start in starts:
            group = scores[start : start + group_size]
            if len(group) not in nulls:
                nulls[len(group)] = self.null_statistics(len(group))
            observed = self.statistic(group)
            exceed = np.count_nonzero(nulls[len(group)] >= observed)
            columns["mean_score"].append(float(group.mean()))
            columns["statistic"].append(observed)
            columns["p_value"].append((1 + exceed) / (self.n_bootstrap + 1))
        return {
            "group": np.arange(len(starts), dtype=np.int64),
            "first_row": starts.astype(np.int64),
            "rows": np.minimum(group_size, len(scores) - starts).astype(np.int64),
            **{name: np.asarray(values, dtype=np.float64) for name, values in columns.items()},
        }

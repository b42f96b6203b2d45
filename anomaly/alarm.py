"""A calibrated alarm on a scored batch: did the anomaly rate or the score distribution change?

Two tests, each at half the operator's `level` (Bonferroni), so a batch of normal rows raises
the alarm with probability at most `level`:

1. **Flag count.** A row's conformal p-value is at most a exactly when its score is below the
   k-th smallest of the m calibration scores, k = floor(a (m + 1)). Given the calibration set,
   the n rows of a normal batch are flagged independently with the probability U = F(S_(k)),
   so the count is Binomial(n, U); and U itself is Beta(k, m + 1 - k) over calibration sets
   (the k-th of m + 1 exchangeable uniforms). The exact null of the count is therefore
   Beta-Binomial(n, k, m + 1 - k): the binomial Binomial(n, a) of a fixed rate is its limit for
   m >> n, and used alone with n >> m it raises false alarms on most batches of some models
   (docs/operations.md measures by how much). The p-value is the upper tail P(K >= count).
2. **Score distribution.** The two-sided Mann-Whitney test of the batch's scores against the
   calibration scores: exchangeable under normality, so valid whatever the score's
   distribution. It is a rank test on purpose: the typicality test of the batch mean
   (`anomaly.typicality`) is moved by a handful of rows with extreme scores, which a batch
   holding its usual few anomalies always has, while ranks move only when the bulk of the
   scores shifts (a changed feature, a batch of too-likely inputs). Its effect size is
   `rank_auc` = P(batch score > calibration score), 0.5 under normality.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from anomaly.thresholds import conformal_rank


@dataclass(frozen=True)
class FlagCountTest:
    """The flag-count figures of one batch at p-value level `rate`, against `n_calibration`."""

    rows: int
    flagged: int
    rate: float
    n_calibration: int

    @property
    def order(self) -> int:
        """k: a row is flagged when its score is below the k-th smallest calibration score."""
        return conformal_rank(self.rate, self.n_calibration)

    @property
    def expected_rate(self) -> float:
        """The expected share of normal rows flagged, k / (m + 1) <= rate."""
        return self.order / (self.n_calibration + 1)

    def p_value(self) -> float:
        """P(K >= flagged) with K ~ Beta-Binomial(rows, k, m + 1 - k): exact under normality."""
        k = self.order
        if self.flagged <= 0:
            return 1.0
        if k < 1:  # no row can be flagged at this level: any flag is impossible under the null
            return 0.0
        null = stats.betabinom(self.rows, k, self.n_calibration + 1 - k)
        return float(min(1.0, null.sf(self.flagged - 1)))

    def binomial_p_value(self) -> float:
        """P(K >= flagged) with K ~ Binomial(rows, rate): the fixed-rate approximation."""
        if self.flagged <= 0:
            return 1.0
        return float(stats.binom.sf(self.flagged - 1, self.rows, self.rate))


def count_flagged(p_values: np.ndarray, rate: float, n_calibration: int) -> int:
    """How many conformal p-values = (1 + j) / (m + 1) are at most `rate`, counted on the integer
    j (so rounding of the stored p-values cannot move a row across the level)."""
    ranks = np.rint(np.asarray(p_values, dtype=np.float64) * (n_calibration + 1))
    return int(np.count_nonzero(ranks <= conformal_rank(rate, n_calibration)))


def check_alarm_level(level: float) -> None:
    """ValueError unless 0 < level < 1."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"the alarm level must be in (0, 1), got {level}")


def batch_alarm(
    scores: np.ndarray,
    p_values: np.ndarray,
    calibration: np.ndarray,
    *,
    rate: float,
    level: float = 0.01,
) -> dict[str, Any]:
    """Test one scored batch (scores higher = more normal, their conformal p-values) against the
    detector's calibration scores; the figures and whether the alarm fires at `level`."""
    check_alarm_level(level)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"the flag rate level must be in (0, 1), got {rate}")
    m = len(calibration)
    count = FlagCountTest(len(p_values), count_flagged(p_values, rate, m), rate, m)
    count_p = count.p_value()
    shift = stats.mannwhitneyu(scores, calibration, alternative="two-sided", method="asymptotic")
    shift_p = float(shift.pvalue)
    reasons = []
    if count_p <= level / 2:
        reasons.append(
            f"{count.flagged} of {count.rows} rows flagged at p <= {rate:g}, "
            f"{count.rows * count.expected_rate:.1f} expected (p = {count_p:.3g})"
        )
    rank_auc = float(shift.statistic) / (len(scores) * m)
    if shift_p <= level / 2:
        reasons.append(
            f"score distribution shifted: P(batch score > calibration score) = {rank_auc:.3f}, "
            f"0.5 expected (p = {shift_p:.3g})"
        )
    return {
        **asdict(count),
        "expected_flagged": count.rows * count.expected_rate,
        "count_p_value": count_p,
        "binomial_p_value": count.binomial_p_value(),
        "shift_p_value": shift_p,
        "rank_auc": rank_auc,
        "median_score": float(np.median(scores)),
        "calibration_median_score": float(np.median(calibration)),
        "level": level,
        "fired": bool(reasons),
        "reasons": reasons,
    }

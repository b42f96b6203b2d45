"""The detector contract (`anomaly.base`): a second family gets calibration, flag rules and
persistence from the base class; families load by name; a run's flag rule is a view that leaves
the shared, cached bundle unchanged, also across threads."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from anomaly import VAEDetector
from anomaly.base import DETECTOR_FAMILIES, BaseDetector, load_detector, register_detector
from anomaly.batch import cached_bundle
from anomaly.packaged.scoring import load_bundle, save_bundle
from anomaly.thresholds import conformal_offset


@register_detector("test_gaussian")
class GaussianDetector(BaseDetector):
    """A diagonal Gaussian density: the smallest family, to test what the base class owns."""

    def _fit_density(self, X, train_idx, val_idx, **options: Any) -> np.ndarray:
        self.mean_ = X[train_idx].mean(axis=0)
        self.var_ = X[train_idx].var(axis=0) + 1e-6
        return X

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return X

    def _terms(self, rows: np.ndarray, *, everything: bool) -> dict[str, np.ndarray]:
        log_px = -0.5 * (((rows - self.mean_) ** 2 / self.var_) + np.log(2 * np.pi * self.var_))
        return {"log_px": log_px.sum(axis=1), "score": log_px.sum(axis=1)}

    def _write_density(self, folder: Path) -> None:
        """No files: the density is two vectors, kept in the JSON state."""

    def _density_state(self) -> dict[str, Any]:
        return {"mean": self.mean_.tolist(), "var": self.var_.tolist()}

    def _load_density(self, folder: Path, state: dict[str, Any], device: str) -> None:
        self.mean_, self.var_ = np.asarray(state["mean"]), np.asarray(state["var"])


def blob(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3))


@parametrize_with_checks([GaussianDetector()])
def test_a_second_family_meets_the_sklearn_outlier_contract(estimator, check):
    check(estimator)


def test_the_base_class_calibrates_flags_and_saves_any_family(tmp_path):
    X = blob(500)
    detector = GaussianDetector(target_fpr=0.1, flag_rule="alpha", alpha=0.05).fit(X)
    assert len(detector.calibration_scores_) == 100
    assert detector.offset_ == conformal_offset(detector.calibration_scores_, 0.1)
    p = detector.p_values(X)
    np.testing.assert_array_equal(detector.predict(X), np.where(p <= 0.05, -1, 1))
    loaded = load_detector(detector.save(tmp_path / "gaussian"))
    assert type(loaded) is GaussianDetector and loaded.get_params() == detector.get_params()
    np.testing.assert_array_equal(loaded.decision_function(X), detector.decision_function(X))
    with pytest.raises(TypeError, match="holds a GaussianDetector, not a VAEDetector"):
        VAEDetector.load(tmp_path / "gaussian")


def test_families_load_by_name_and_old_folders_as_vae(tmp_path):
    assert DETECTOR_FAMILIES["vae"] is VAEDetector
    detector = VAEDetector(epochs=1, min_steps=0, n_samples=2, patience=0, device="cpu").fit(
        blob(100)
    )
    folder = detector.save(tmp_path / "vae")
    state = json.loads((folder / "detector.json").read_text())
    assert state.pop("family") == "vae"
    (folder / "detector.json").write_text(json.dumps(state))  # as saved before families
    loaded = load_detector(folder, device="cpu")
    assert isinstance(loaded, VAEDetector)
    np.testing.assert_array_equal(loaded.score_samples(blob(9)), detector.score_samples(blob(9)))
    (folder / "detector.json").write_text(json.dumps({**state, "family": "nope"}))
    with pytest.raises(ValueError, match="unknown detector family 'nope'"):
        load_detector(folder)
    with pytest.raises(ValueError, match="already registered"):
        register_detector("vae")(GaussianDetector)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """A saved tabular bundle flagging by its calibrated threshold (target_fpr 0.1)."""
    detector = VAEDetector(
        epochs=2, min_steps=0, n_samples=4, patience=0, target_fpr=0.1, device="cpu"
    )
    return save_bundle(detector.fit(blob(400)), tmp_path_factory.mktemp("bundle") / "model")


RULES = [("alpha", 0.2), ("fdr", 0.3), ("threshold", None)]


def expected_columns(bundle_dir: Path, rule: str, level: float | None, X: np.ndarray) -> dict:
    """What a fresh load with the rule set on its own detector gives."""
    fresh = load_bundle(bundle_dir)
    fresh.detector.set_params(flag_rule=rule, alpha=level)
    return fresh.score_columns(X)


def assert_same_columns(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for column in got:
        np.testing.assert_array_equal(got[column], expected[column], err_msg=column)


def test_views_of_one_cached_bundle_each_flag_by_their_own_rule(bundle_dir):
    cached = cached_bundle(str(bundle_dir))
    before = (cached.detector.get_params(), cached.name, cached.version)
    X = np.vstack([blob(60, seed=1), 2.5 + blob(20, seed=2)])
    views = [cached.with_flag_rule(rule, level) for rule, level in RULES]
    named = cached.with_identity("model-a", "7")
    expected = [expected_columns(bundle_dir, rule, level, X) for rule, level in RULES]
    assert len({int(e["is_anomaly"].sum()) for e in expected}) == len(RULES)  # rules differ
    for _ in range(2):  # interleaved
        for view, want in zip(views, expected, strict=True):
            assert_same_columns(view.score_columns(X), want)
    with ThreadPoolExecutor(max_workers=len(views)) as pool:
        results = [pool.submit(lambda v=v: [v.score_columns(X) for _ in range(3)]) for v in views]
        for result, want in zip(results, expected, strict=True):
            for got in result.result():
                assert_same_columns(got, want)
    assert [v.detector.flag_rule for v in views] == [rule for rule, _ in RULES]
    assert all(v.detector.model_ is cached.detector.model_ for v in views)  # weights shared
    assert (named.name, named.version) == ("model-a", "7")
    assert (cached.detector.get_params(), cached.name, cached.version) == before


def test_a_view_refuses_a_bad_rule_or_level(bundle_dir):
    detector = load_bundle(bundle_dir).detector
    with pytest.raises(ValueError, match="flag_rule must be one of"):
        detector.with_flag_rule("maybe", 0.1)
    with pytest.raises(ValueError, match=r"the flag level must be in \(0, 1\)"):
        detector.with_flag_rule("alpha", 1.5)
    assert detector.with_flag_rule("alpha").alpha == detector.alpha


def test_a_second_family_packages_and_scores_through_the_bundle(tmp_path):
    """save_bundle / load_bundle / score_frame know only the contract: the Gaussian family's
    log p(x) comes back as its closed form, and its flags as the base class sets them."""
    import pandas as pd

    X = blob(400)
    detector = GaussianDetector(target_fpr=0.1).fit(X)
    bundle = load_bundle(
        save_bundle(detector, tmp_path / "gaussian", feature_names=["a", "b", "c"])
    )
    new = blob(50, seed=1)
    scored = bundle.score_frame(pd.DataFrame(new, columns=["a", "b", "c"]))
    mean, var = detector.mean_, detector.var_
    closed_form = (-0.5 * ((new - mean) ** 2 / var + np.log(2 * np.pi * var))).sum(axis=1)
    np.testing.assert_allclose(scored["log_px"], closed_form, rtol=1e-6)
    np.testing.assert_array_equal(scored["is_anomaly"], detector.predict(new) == -1)

"""VAEEnsembleDetector ("vae_ensemble"): members on seeded subsamples, their log p(x) put in the
data's units and combined; determinism, the one-member case, the combine rules, persistence,
parameter checks and scikit-learn's outlier contract."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from anomaly import VAEDetector, VAEEnsembleDetector
from anomaly.base import DETECTOR_FAMILIES, load_detector

TINY = {"epochs": 2, "min_steps": 0, "hidden_dims": (8,), "latent_dim": 2, "n_samples": 4,
        "patience": 0}  # fmt: skip
MEMBER = {**TINY, "device": "cpu"}


def ensemble(**overrides) -> VAEEnsembleDetector:
    params = {"n_estimators": 3, "max_samples": 0.6, "member_params": MEMBER}
    return VAEEnsembleDetector(**{**params, **overrides})


def blob(n: int, d: int = 4, seed: int = 0) -> np.ndarray:
    """Features on different scales, so each member's log-Jacobian matters."""
    return np.random.default_rng(seed).normal(size=(n, d)) * np.array([1.0, 5.0, 0.2, 30.0])


@pytest.fixture(scope="module")
def fitted() -> VAEEnsembleDetector:
    return ensemble(target_fpr=0.1).fit(blob(200))


@parametrize_with_checks([ensemble(n_estimators=2, max_samples=1.0)])
def test_sklearn_outlier_contract(estimator, check):
    check(estimator)


def test_the_family_is_registered():
    assert DETECTOR_FAMILIES["vae_ensemble"] is VAEEnsembleDetector


def test_same_seed_same_scores_other_seed_other_scores(fitted):
    X = blob(200)
    again = ensemble(target_fpr=0.1).fit(X)
    np.testing.assert_array_equal(again.score_samples(X), fitted.score_samples(X))
    other = ensemble(target_fpr=0.1, random_state=1).fit(X)
    assert not np.allclose(other.score_samples(X), fitted.score_samples(X))
    seeds = [member.random_state for member in fitted.estimators_]
    assert len(set(seeds)) == 3  # each member its own seed, drawn from random_state
    assert seeds == [member.random_state for member in again.estimators_]
    assert not set(seeds) & {member.random_state for member in other.estimators_}


def test_one_member_on_all_rows_is_a_vae_detector_in_data_units():
    """n_estimators=1, max_samples=1.0: the score is the member's log p of its standardised
    rows, trained on the ensemble's training rows with the member's seed, minus sum(log std)."""
    X = blob(150)
    detector = ensemble(n_estimators=1, max_samples=1.0).fit(X)
    train_idx, val_idx, _ = detector._split(len(X))
    seed = detector.estimators_[0].random_state
    reference = VAEDetector(**MEMBER, random_state=seed)
    reference._fit_density(X, np.sort(train_idx), val_idx)
    std = X[train_idx].std(axis=0)
    np.testing.assert_allclose(reference.preprocessor_.scale_, std, rtol=1e-12)
    expected = reference._log_px(reference._transform(X)) - np.log(std).sum()
    np.testing.assert_allclose(detector.score_samples(X), expected, rtol=1e-10, atol=0)


def members_in_data_units(detector: VAEEnsembleDetector, X: np.ndarray) -> np.ndarray:
    """(n_estimators, n): each member's log p of its preprocessed rows, plus -sum(log scale)."""
    return np.stack(
        [
            member._log_px(member._transform(X)) - np.log(member.preprocessor_.scale_).sum()
            for member in detector.estimators_
        ]
    )


def test_mean_and_logmeanexp_combine_the_members(fitted):
    X = blob(40, seed=3)
    members = members_in_data_units(fitted, X)
    np.testing.assert_allclose(fitted.score_samples(X), members.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(fitted.score_terms(X)["member_log_px"], members.T, rtol=1e-12)
    mixture = copy.copy(fitted)
    mixture.combine = "logmeanexp"
    expected = torch.logsumexp(torch.from_numpy(members), dim=0).numpy() - math.log(3)
    np.testing.assert_allclose(mixture.score_samples(X), expected, rtol=1e-12)
    assert np.all(mixture.score_samples(X) >= fitted.score_samples(X))  # Jensen
    assert np.any(mixture.score_samples(X) > fitted.score_samples(X) + 1e-6)  # members differ


def test_save_and_load_reproduce_scores_p_values_and_flags(fitted, tmp_path):
    X = np.vstack([blob(50, seed=1), 3.0 * blob(10, seed=2)])
    folder = fitted.save(tmp_path / "ensemble")
    assert sorted(p.name for p in folder.glob("member_*")) == ["member_0", "member_1", "member_2"]
    loaded = load_detector(folder, device="cpu")
    assert type(loaded) is VAEEnsembleDetector
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.score_samples(X), fitted.score_samples(X))
    np.testing.assert_array_equal(loaded.p_values(X), fitted.p_values(X))
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    assert loaded.offset_ == fitted.offset_
    with pytest.raises(TypeError, match="holds a VAEEnsembleDetector, not a VAEDetector"):
        VAEDetector.load(folder)


BAD_PARAMS = [
    ({"n_estimators": 0}, "n_estimators must be an integer >= 1"),
    ({"n_estimators": 2.0}, "n_estimators must be an integer >= 1"),
    ({"max_samples": 0.0}, "max_samples must be a share"),
    ({"max_samples": 1.5}, "max_samples must be a share"),
    ({"max_samples": 1}, "max_samples must be a share"),
    ({"max_samples": True}, "max_samples must be a share"),
    ({"max_samples": 500}, "max_samples=500 is more than the 70 training rows"),
    ({"combine": "median"}, "combine must be one of"),
    ({"member_params": {"random_state": 1}}, r"must not set \['random_state'\]"),
    ({"member_params": {"contamination": 0.2}}, r"must not set \['contamination'\]"),
    ({"member_params": {"target_fpr": 0.1}}, r"must not set \['target_fpr'\]"),
    ({"member_params": {"epochz": 3}}, r"unknown VAEDetector parameter\(s\) \['epochz'\]"),
    ({"member_params": {"correction": "complexity"}}, "correction='complexity' is not supported"),
    ({"member_params": {"scaling": "quantile"}}, "scaling='quantile' is not supported"),
    ({"member_params": {"score_method": "bogus"}}, "member_params: score_method must be one of"),
    ({"member_params": {"score": "elbo"}}, "renamed to 'score_method'"),
    ({"member_params": [("epochs", 2)]}, "member_params must be a dict"),
    ({"contamination": 0.7}, r"^contamination must be in \(0, 0.5\)"),
]


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS)
def test_bad_parameters_are_refused_naming_them(params, message):
    detector = ensemble(**params)  # scikit-learn: the constructor only stores them
    with pytest.raises(ValueError, match=message):
        detector.fit(blob(100))


def test_images_fit_score_and_show_progress(tmp_path, capsys):
    """Image members share ImageScaler's Jacobian (0.0 added); verbose shows a bar."""
    images = np.random.default_rng(0).integers(0, 256, size=(40, 1, 8, 8)).astype(np.uint8)
    detector = ensemble(n_estimators=2, combine="logmeanexp", verbose=True).fit(images)
    assert "VAEEnsembleDetector.fit" in capsys.readouterr().err
    members = np.stack([m._log_px(m._transform(images)) for m in detector.estimators_])
    expected = torch.logsumexp(torch.from_numpy(members), dim=0).numpy() - math.log(2)
    np.testing.assert_allclose(detector.score_samples(images), expected, rtol=1e-12)
    loaded = load_detector(detector.save(tmp_path / "images"), device="cpu")
    np.testing.assert_array_equal(loaded.score_samples(images), detector.score_samples(images))

"""VAEDetector: the scikit-learn outlier contract, persistence, tabular and image paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from anomaly import VAEDetector
from anomaly.data import load_dataset
from anomaly.evaluation import novelty_split, ranking_metrics


def fast_detector(**overrides) -> VAEDetector:
    params = {"epochs": 3, "min_steps": 0, "n_samples": 8, "patience": 0, "device": "cpu"}
    return VAEDetector(**{**params, **overrides})


@parametrize_with_checks([fast_detector()])
def test_sklearn_outlier_contract(estimator, check):
    check(estimator)


def gaussian_blob(n: int, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_threshold_uses_only_calibration_rows_and_controls_fpr():
    detector = fast_detector(epochs=20, target_fpr=0.1, calibration_fraction=0.3)
    detector.fit(gaussian_blob(1000))
    calibration = detector.calibration_scores_
    assert len(calibration) == 300
    k = int(np.floor(0.1 * (len(calibration) + 1)))
    assert calibration[k - 1] < detector.offset_ <= np.nextafter(calibration[k - 1], np.inf)
    # Fresh normal rows: flagged fraction is Binomial(n, <= 0.1); allow 4 standard deviations.
    fresh = detector.predict(gaussian_blob(4000, seed=1))
    rate = np.mean(fresh == -1)
    assert rate < 0.1 + 4 * np.sqrt(0.1 * 0.9 / 4000)
    assert rate > (k - 1) / (len(calibration) + 1) - 4 * np.sqrt(0.1 * 0.9 / 4000) - 0.05


def test_contamination_flags_that_share_of_the_training_rows():
    X = gaussian_blob(500)
    detector = fast_detector(contamination=0.07).fit(X)
    scores = detector.score_samples(X)
    assert detector.offset_ == pytest.approx(np.percentile(scores, 7.0), abs=0.0)
    # Distinct continuous scores: exactly floor(0.07 * 500) = 35 lie below the 7th percentile.
    assert np.sum(detector.fit_predict(X) == -1) == 35


def test_target_fpr_takes_precedence_over_contamination():
    X = gaussian_blob(500)
    detector = fast_detector(contamination=0.3, target_fpr=0.1).fit(X)
    calibration = detector.calibration_scores_
    k = int(np.floor(0.1 * (len(calibration) + 1)))
    assert calibration[k - 1] < detector.offset_ <= np.nextafter(calibration[k - 1], np.inf)
    training_share = np.mean(detector.predict(X) == -1)
    assert training_share < 0.3 - 4 * np.sqrt(0.3 * 0.7 / 500)  # not the contamination rule


def test_old_score_keyword_names_its_new_name(tmp_path):
    with pytest.raises(TypeError, match="renamed to 'score_method'; pass score_method='elbo'"):
        VAEDetector(score="elbo")
    with pytest.raises(TypeError, match="score_method"):
        fast_detector().set_params(score="elbo")
    # A detector saved by an earlier release (parameter "score") still loads, as score_method.
    X = gaussian_blob(200)
    detector = fast_detector(score_method="elbo").fit(X)
    path = detector.save(tmp_path / "old")
    state = json.loads((path / "detector.json").read_text())
    state["params"]["score"] = state["params"].pop("score_method")
    (path / "detector.json").write_text(json.dumps(state))
    loaded = VAEDetector.load(path, device="cpu")
    assert loaded.score_method == "elbo"
    np.testing.assert_array_equal(loaded.score_samples(X), detector.score_samples(X))


@pytest.mark.parametrize("image", [False, True])
def test_a_row_scores_bit_identically_in_any_batch(image):
    """Blocks are padded to one row count, so float32 rounding cannot depend on the batch."""
    rng = np.random.default_rng(4)
    if image:
        X = rng.integers(0, 256, size=(60, 1, 8, 8)).astype(np.float64)
        detector = fast_detector(epochs=1, correction="likelihood_ratio", background_epochs=1)
    else:
        X, detector = rng.normal(size=(60, 3)), fast_detector()
    detector.fit(X)
    whole = detector.score_samples(X)
    alone = np.concatenate([detector.score_samples(X[i : i + 1]) for i in range(0, 60, 7)])
    batches = np.concatenate([detector.score_samples(part) for part in np.array_split(X, 7)])
    np.testing.assert_array_equal(alone, whole[::7])
    np.testing.assert_array_equal(batches, whole)


def test_decision_function_and_predict_agree_with_offset():
    detector = fast_detector().fit(gaussian_blob(200))
    X = np.vstack([gaussian_blob(50, seed=2), 8 + gaussian_blob(10, seed=3)])
    scores = detector.score_samples(X)
    np.testing.assert_allclose(detector.decision_function(X), scores - detector.offset_)
    np.testing.assert_array_equal(detector.predict(X), np.where(scores < detector.offset_, -1, 1))
    assert detector.threshold_ == detector.offset_
    assert np.all(detector.predict(X[50:]) == -1)  # 8 standard deviations away


@pytest.mark.parametrize("method", ["elbo", "iwae", "prior_mc"])
def test_save_load_gives_identical_scores(tmp_path, method):
    X = gaussian_blob(300)
    detector = fast_detector(score_method=method).fit(X)
    path = detector.save(tmp_path / "detector")
    assert sorted(p.name for p in path.iterdir()) == [
        "checksums.json", "config.json", "detector.json", "model.pt"
    ]  # fmt: skip
    loaded = VAEDetector.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.score_samples(X), detector.score_samples(X))
    assert loaded.offset_ == detector.offset_
    assert loaded.get_params() == detector.get_params()


def test_save_is_atomic_and_replaces(tmp_path):
    detector = fast_detector().fit(gaussian_blob(100))
    target = tmp_path / "model"
    detector.save(target)
    detector.save(target)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_load_missing_folder_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="detector.json"):
        VAEDetector.load(tmp_path / "nothing")


def test_iwae_tightens_elbo_on_the_same_model(data_env):
    """On one trained model, IWAE_K >= ELBO on average, increasing in K (Burda et al. 2016)."""
    X = load_dataset("fashion-mnist", split="test").X[:600]
    detector = fast_detector(epochs=5, score_method="elbo", image_mode="binarize", backbone="mlp")
    detector.fit(X[:400])
    model, data = detector.model_, detector._to_tensor(detector.preprocessor_.transform(X[400:]))
    elbo = model.elbo(data, n_samples=64).numpy()
    iwae_8 = model.log_px_iwae(data, n_samples=8).numpy()
    iwae_64 = model.log_px_iwae(data, n_samples=64).numpy()
    for lower, upper in ((elbo, iwae_8), (iwae_8, iwae_64)):
        gain = upper - lower
        assert gain.mean() > 4 * gain.std(ddof=1) / np.sqrt(len(gain))


@pytest.mark.slow  # about 16 s: the default suite's budget is 8 minutes
def test_image_path_with_discrete_and_bernoulli_likelihoods(data_env):
    images = load_dataset("fashion-mnist", split="test")
    trousers = images.X[images.y == 1][:400]
    bags = images.X[images.y == 8][:100]
    for mode, likelihood in (("scale", "logistic256"), ("binarize", "bernoulli")):
        detector = fast_detector(epochs=4, image_mode=mode, latent_dim=8, n_samples=4)
        detector.fit(trousers[:300])
        assert detector.model_.config.likelihood == likelihood
        assert detector.model_.config.backbone == "conv"
        normal, odd = detector.score_samples(trousers[300:]), detector.score_samples(bags)
        auroc = ranking_metrics(np.r_[np.zeros(100), np.ones(100)], -np.r_[normal, odd])["auroc"]
        assert auroc > 0.9, (mode, auroc)
    bits = detector.model_.bits_per_dim(
        detector.model_.log_px_iwae(detector._to_tensor(detector.preprocessor_.transform(bags)), 4),
        784,
    )
    assert float(bits.mean()) > 0  # a code length: -log2 p of discrete symbols is positive


def test_three_dimensional_images_are_single_channel(data_env):
    images = load_dataset("mnist", split="test").X[:120, 0]  # (n, 28, 28)
    detector = fast_detector(epochs=1, n_samples=2, latent_dim=4).fit(images)
    assert detector.input_shape_ == (1, 28, 28)
    assert detector.score_samples(images[:5]).shape == (5,)


def test_breastw_auroc_well_above_chance(data_env):
    data = load_dataset("adbench/breastw")
    split = novelty_split(data.X, data.y, seed=0)
    detector = VAEDetector(epochs=60, n_samples=32, random_state=0).fit(split.X_train)
    metrics = ranking_metrics(split.y_test, -detector.score_samples(split.X_test))
    # 72 anomalies vs 134 normal test rows: chance AUROC has sd ~0.04; 0.9 is > 10 sd above it.
    assert metrics["auroc"] > 0.9, metrics


BAD_INPUTS = [
    (np.array([[1.0, np.nan, 2.0, 3.0]]), "NaN"),
    (np.array([[1.0, np.inf, 2.0, 3.0]]), "inf"),
    (np.zeros((0, 4)), "0 sample"),
    (np.zeros((5, 3)), "X has 3 features, but VAEDetector is expecting 4 features as input"),
    (np.array([1.0, 2.0, 3.0, 4.0]), "Reshape"),
]


@pytest.mark.parametrize(("X", "message"), BAD_INPUTS)
def test_bad_input_is_rejected_with_a_clear_message(X, message):
    detector = fast_detector().fit(gaussian_blob(100))
    with pytest.raises(ValueError, match=message):
        detector.score_samples(X)


def test_wrong_image_shape_and_non_numeric_columns():
    import pandas as pd

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 1, 8, 8)).astype(np.uint8)
    detector = fast_detector(latent_dim=2, n_samples=2).fit(images)
    with pytest.raises(ValueError, match=r"\(1, 8, 9\)"):
        detector.score_samples(rng.integers(0, 256, size=(3, 1, 8, 9)))
    frame = pd.DataFrame({"a": [1.0, 2.0], "colour": ["red", "blue"]})
    with pytest.raises(ValueError, match="colour"):
        fast_detector().fit(frame)


def test_invalid_parameters_name_the_parameter():
    with pytest.raises(ValueError, match="score_method"):
        fast_detector(score_method="likelihood").fit(gaussian_blob(50))
    with pytest.raises(ValueError, match="target_fpr"):
        fast_detector(target_fpr=0.9).fit(gaussian_blob(50))
    with pytest.raises(ValueError, match="calibration_fraction"):
        fast_detector(calibration_fraction=0.0).fit(gaussian_blob(50))


def test_bf16_scoring_moves_scores_by_a_fraction_of_a_percent(data_env):
    """bf16 keeps 8 significant bits per activation; the likelihood is summed in fp32."""
    X = load_dataset("fashion-mnist", split="test").X[:500]
    detector = fast_detector(epochs=3, image_mode="binarize", backbone="mlp").fit(X[:400])
    fp32 = detector.score_samples(X[400:])
    bf16 = detector.set_params(precision="bf16").score_samples(X[400:])
    relative = np.abs(bf16 - fp32) / np.abs(fp32)
    assert 0 < relative.mean() < 2.0**-8  # changed, but by less than one bf16 rounding step
    assert np.corrcoef(fp32, bf16)[0, 1] > 0.999
    with pytest.raises(ValueError, match="precision"):
        fast_detector(precision="fp8").fit(gaussian_blob(50))

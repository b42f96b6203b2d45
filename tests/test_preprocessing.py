"""Preprocessors: statistics from training data only, safe constants, JSON round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from anomaly.preprocessing import (
    PREPROCESSORS,
    ImageScaler,
    QuantileScaler,
    RobustScaler,
    Standardizer,
    preprocessor_from_dict,
)


def round_trip(preprocessor):
    return preprocessor_from_dict(json.loads(json.dumps(preprocessor.to_dict())))


def test_standardizer_uses_training_statistics() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(loc=[5.0, -3.0], scale=[2.0, 0.5], size=(500, 2))
    scaler = Standardizer().fit(train)
    out = scaler.transform(train)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-5)
    new = np.array([[train[:, 0].mean() + train[:, 0].std(), train[:, 1].mean()]])
    np.testing.assert_allclose(scaler.transform(new), [[1.0, 0.0]], atol=1e-5)


def test_standardizer_constant_feature_is_only_centred() -> None:
    train = np.array([[1.0, 7.0], [3.0, 7.0], [5.0, 7.0]])
    scaler = Standardizer().fit(train)
    out = scaler.transform(np.array([[3.0, 7.0], [3.0, 9.0]]))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 1], [0.0, 2.0])


def test_standardizer_rejects_wrong_width_and_images() -> None:
    scaler = Standardizer().fit(np.ones((4, 3)))
    with pytest.raises(ValueError, match="X has 2 features, but model is expecting 3 features"):
        scaler.transform(np.ones((4, 2)))
    with pytest.raises(ValueError, match="ImageScaler"):
        Standardizer().fit(np.ones((4, 1, 2, 2)))


def test_standardizer_round_trip() -> None:
    train = np.random.default_rng(1).normal(size=(50, 4)) * [1, 10, 100, 0]
    scaler = Standardizer().fit(train)
    restored = round_trip(scaler)
    assert isinstance(restored, Standardizer)
    np.testing.assert_array_equal(restored.transform(train), scaler.transform(train))


def test_unfitted_preprocessors_raise() -> None:
    with pytest.raises(NotFittedError, match="Standardizer is not fitted"):
        Standardizer().transform(np.ones((2, 2)))
    with pytest.raises(NotFittedError, match="ImageScaler is not fitted"):
        ImageScaler().to_dict()


def test_image_scaler_scale_and_binarize() -> None:
    images = np.array([0, 127, 128, 255], dtype=np.uint8).reshape(1, 1, 2, 2)
    scaled = ImageScaler().fit(images).transform(images)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled.ravel(), [0, 127 / 255, 128 / 255, 1], rtol=1e-6)
    binary = ImageScaler(mode="binarize").fit(images).transform(images)
    assert binary.ravel().tolist() == [0.0, 0.0, 1.0, 1.0]


def test_image_scaler_records_and_checks_shape() -> None:
    scaler = ImageScaler().fit(np.zeros((3, 28, 28), dtype=np.uint8))
    assert scaler.input_shape_ == (1, 28, 28)
    assert scaler.transform(np.zeros((2, 1, 28, 28))).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"\(3, 32, 32\).*\(1, 28, 28\)"):
        scaler.transform(np.zeros((2, 3, 32, 32)))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        scaler.transform(np.full((1, 1, 28, 28), 300.0))


def test_image_scaler_rejects_bad_mode_and_tables() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        ImageScaler(mode="normalize").fit(np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="Standardizer"):
        ImageScaler().fit(np.zeros((5, 4)))


def test_image_scaler_round_trip() -> None:
    images = np.random.default_rng(2).integers(0, 256, size=(4, 3, 5, 5), dtype=np.uint8)
    scaler = ImageScaler(mode="binarize").fit(images)
    restored = round_trip(scaler)
    assert isinstance(restored, ImageScaler)
    assert restored.input_shape_ == (3, 5, 5) and restored.mode == "binarize"
    np.testing.assert_array_equal(restored.transform(images), scaler.transform(images))


def test_registry_and_unknown_type() -> None:
    expected = {
        "standardize": Standardizer,
        "robust": RobustScaler,
        "quantile": QuantileScaler,
        "image": ImageScaler,
    }
    assert expected == PREPROCESSORS
    with pytest.raises(
        ValueError, match=r"'pca'.*\['image', 'quantile', 'robust', 'standardize'\]"
    ):
        preprocessor_from_dict({"type": "pca"})


def test_quantile_scaler_maps_to_normal_scores() -> None:
    """A lognormal column becomes standard normal: its transform matches log's standard score
    (the exact normalising map) to within the quantile grid's error in the bulk."""
    rng = np.random.default_rng(0)
    normal = rng.standard_normal(20_000)
    scaler = QuantileScaler().fit(np.exp(normal)[:, None])
    probe = np.linspace(-2.5, 2.5, 11)
    out = scaler.transform(np.exp(probe)[:, None])[:, 0]
    # A sample quantile at level p has standard error sqrt(p (1 - p) / n) / phi(z): allow 4.
    from scipy.stats import norm

    level = norm.cdf(probe)
    error = np.sqrt(level * (1 - level) / len(normal)) / norm.pdf(probe)
    assert np.all(np.abs(out - probe) < 4 * error + 0.005)
    train = scaler.transform(np.exp(normal)[:, None])[:, 0]
    assert abs(train.mean()) < 0.01 and abs(train.std() - 1.0) < 0.01


def test_quantile_scaler_flags_and_tails() -> None:
    """A 0/1 flag with share p of ones maps to the midpoints of its levels, Phi^-1((1-p)/2)
    and Phi^-1(1 - p/2); beyond the training range the map goes on with slope 1/std."""
    from scipy.stats import norm

    rng = np.random.default_rng(1)
    flag = (rng.random(5_000) < 0.2).astype(float)
    wide = rng.normal(10.0, 3.0, size=5_000)
    scaler = QuantileScaler().fit(np.c_[flag, wide])
    p = flag.mean()
    zeros_ones = scaler.transform(np.array([[0.0, 10.0], [1.0, 10.0]]))[:, 0]
    # The tie's levels are read off a grid of 1000 levels: exact to one grid step.
    np.testing.assert_allclose(norm.cdf(zeros_ones), [(1 - p) / 2, 1 - p / 2], atol=1 / 999)
    top, std = wide.max(), wide.std()
    edge = norm.ppf(1 - 0.5 / len(wide))
    far = scaler.transform(np.array([[0.0, top], [0.0, top + 2 * std], [0.0, top + 5 * std]]))
    np.testing.assert_allclose(far[:, 1], [edge, edge + 2, edge + 5], atol=1e-4)
    low = scaler.transform(np.array([[0.0, wide.min() - std]]))[0, 1]
    np.testing.assert_allclose(low, -edge - 1, atol=1e-4)


def test_quantile_scaler_round_trip_and_checks() -> None:
    rng = np.random.default_rng(2)
    train = rng.standard_t(2, size=(300, 3))
    scaler = QuantileScaler(n_quantiles=50).fit(train)
    assert scaler.quantiles_.shape == (50, 3)
    restored = round_trip(scaler)
    assert isinstance(restored, QuantileScaler)
    np.testing.assert_array_equal(restored.transform(train), scaler.transform(train))
    with pytest.raises(ValueError, match="n_quantiles must be at least 2"):
        QuantileScaler(n_quantiles=1).fit(train)
    with pytest.raises(ValueError, match="features"):
        scaler.transform(train[:, :2])
    with pytest.raises(NotFittedError):
        QuantileScaler().transform(train)

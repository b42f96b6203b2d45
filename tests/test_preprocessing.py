"""Preprocessors: statistics from training data only, safe constants, JSON round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from anomaly.preprocessing import (
    PREPROCESSORS,
    ImageScaler,
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
    expected = {"standardize": Standardizer, "robust": RobustScaler, "image": ImageScaler}
    assert expected == PREPROCESSORS
    with pytest.raises(ValueError, match=r"'pca'.*\['image', 'robust', 'standardize'\]"):
        preprocessor_from_dict({"type": "pca"})

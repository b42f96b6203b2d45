"""check_input: accepted containers and shapes, and a clear message for each kind of bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from anomaly.validation import check_input


def test_accepts_lists_arrays_and_frames() -> None:
    expected = np.array([[1.0, 2.0], [3.0, 4.0]])
    for data in ([[1, 2], [3, 4]], expected, pd.DataFrame(expected, columns=["a", "b"])):
        out = check_input(data)
        assert out.ndim == 2 and out.dtype.kind == "f"
        np.testing.assert_array_equal(out, expected)


def test_dtypes() -> None:
    assert check_input(np.zeros((2, 2), dtype=np.uint8)).dtype == np.float32
    assert check_input(np.zeros((2, 2), dtype=np.float32)).dtype == np.float32
    assert check_input(np.zeros((2, 2), dtype=np.int64)).dtype == np.float64
    assert check_input(np.array([[1, 2.5]], dtype=object)).dtype == np.float64


def test_images_three_and_four_dimensional() -> None:
    assert check_input(np.zeros((5, 28, 28))).shape == (5, 1, 28, 28)
    assert check_input(np.zeros((5, 3, 8, 8)), image_shape=(3, 8, 8)).shape == (5, 3, 8, 8)
    assert check_input(np.zeros((5, 8, 8)), image_shape=(8, 8)).shape == (5, 1, 8, 8)
    assert check_input(np.zeros((5, 3, 8, 8)), n_features=192).shape == (5, 3, 8, 8)


def test_empty_input() -> None:
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        check_input(np.empty((0, 3)))
    with pytest.raises(ValueError, match=r"0 feature\(s\)"):
        check_input(np.empty((4, 0)))


def test_non_finite_values_are_counted_and_located() -> None:
    X = np.ones((6, 3))
    X[4, 1] = np.nan
    X[5, 0] = np.nan
    X[2, 2] = np.inf
    with pytest.raises(
        ValueError, match=r"2 NaN and 1 inf value\(s\); the first is in row 2, column 2\."
    ):
        check_input(X)
    images = np.zeros((3, 1, 2, 2))
    images[1, 0, 1, 1] = -np.inf
    with pytest.raises(ValueError, match=r"0 NaN and 1 inf.*row 1, flattened pixel 3\."):
        check_input(images)


def test_non_numeric_input() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "color": ["red", "blue"], "size": ["S", "M"]})
    with pytest.raises(ValueError, match=r"non-numeric columns: \['color', 'size'\]"):
        check_input(frame)
    with pytest.raises(ValueError, match="non-numeric dtype"):
        check_input(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="non-numeric values"):
        check_input(np.array([[1, "x"]], dtype=object))
    with pytest.raises(ValueError, match="Complex data not supported"):
        check_input(np.ones((2, 2), dtype=complex))
    X = np.ones((2, 2), dtype=object)
    X[0, 0] = {"foo": "bar"}
    with pytest.raises(TypeError, match="argument must be a string.* number"):
        check_input(X)


def test_feature_count_mismatch() -> None:
    with pytest.raises(ValueError, match="X has 5 features, but model is expecting 9 features"):
        check_input(np.ones((3, 5)), n_features=9)
    with pytest.raises(ValueError, match="has 784 features, but model is expecting 9 features"):
        check_input(np.ones((3, 28, 28)), n_features=9, name="images")


def test_image_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(1, 28, 28\).*\(3, 32, 32\)"):
        check_input(np.zeros((2, 28, 28)), image_shape=(3, 32, 32))
    with pytest.raises(ValueError, match=r"tabular.*\(1, 28, 28\)"):
        check_input(np.zeros((2, 784)), image_shape=(1, 28, 28))


def test_one_dimensional_and_high_dimensional_input() -> None:
    with pytest.raises(ValueError, match="Reshape your data"):
        check_input(np.arange(5.0))
    with pytest.raises(ValueError, match="5 dimensions"):
        check_input(np.zeros((1, 1, 1, 1, 1)))

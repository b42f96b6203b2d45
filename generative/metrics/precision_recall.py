"""Improved precision and recall of generative models (Kynkäänniemi et al. 2019).

Each set's manifold is the union of balls around its points, each with the radius of the
distance to that point's k-th nearest neighbour within the set. Precision is the fraction of
fake points inside the real manifold (fidelity); recall is the fraction of real points inside
the fake manifold (coverage). Distances are Euclidean, computed in row blocks so memory stays
bounded (about `block_elements` float64 values at a time) for any set size.
"""

from __future__ import annotations

import numpy as np

from generative.metrics.fid import FeatureArray, as_features

BLOCK_ELEMENTS = 1 << 22  # 32 MiB of float64 distances per block


def _squared_distances(a: np.ndarray, b: np.ndarray, b_norms: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 for all pairs, clipped at 0 against rounding."""
    a_norms = np.einsum("ij,ij->i", a, a)
    return np.maximum(a_norms[:, None] + b_norms[None, :] - 2.0 * (a @ b.T), 0.0)


def _block_rows(n_cols: int, block_elements: int) -> int:
    """Rows per block so that a block of distances holds about `block_elements` values."""
    return max(1, block_elements // max(n_cols, 1))


def knn_radii(points: np.ndarray, k: int, *, block_elements: int = BLOCK_ELEMENTS) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point of the set."""
    if not 1 <= k < len(points):
        raise ValueError(f"k must be in [1, {len(points) - 1}] for {len(points)} points, got {k}")
    norms = np.einsum("ij,ij->i", points, points)
    step = _block_rows(len(points), block_elements)
    radii = np.empty(len(points))
    for start in range(0, len(points), step):
        block = _squared_distances(points[start : start + step], points, norms)
        # index k of the sorted row: index 0 is the point itself (distance 0)
        radii[start : start + step] = np.partition(block, k, axis=1)[:, k]
    return radii


def coverage(
    queries: np.ndarray,
    centres: np.ndarray,
    radii: np.ndarray,
    *,
    block_elements: int = BLOCK_ELEMENTS,
) -> float:
    """Fraction of `queries` within radius of at least one centre (radii squared)."""
    norms = np.einsum("ij,ij->i", centres, centres)
    step = _block_rows(len(centres), block_elements)
    inside = 0
    for start in range(0, len(queries), step):
        block = _squared_distances(queries[start : start + step], centres, norms)
        inside += int((block <= radii[None, :]).any(axis=1).sum())
    return inside / len(queries)


def precision_recall(
    real_features: FeatureArray,
    fake_features: FeatureArray,
    *,
    k: int = 3,
    block_elements: int = BLOCK_ELEMENTS,
) -> tuple[float, float]:
    """(precision, recall) of the fake set against the real set, with k-NN radii."""
    real, fake = as_features(real_features), as_features(fake_features)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature widths differ: {real.shape[1]} and {fake.shape[1]}")
    real_radii = knn_radii(real, k, block_elements=block_elements)
    fake_radii = knn_radii(fake, k, block_elements=block_elements)
    precision = coverage(fake, real, real_radii, block_elements=block_elements)
    recall = coverage(real, fake, fake_radii, block_elements=block_elements)
    return precision, recall

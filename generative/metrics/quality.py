"""Image quality in a feature network's space: a registry of feature-set metrics and the
one-call `image_quality` that extracts features once and runs them all.

A metric takes (real_features, fake_features, options) and returns named values; new ones
join with `@register_metric("name")`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from generative.metrics.features import FeatureNet, ImageArray
from generative.metrics.fid import FeatureArray, as_features, fid, kid
from generative.metrics.precision_recall import precision_recall


@dataclass(frozen=True)
class QualityOptions:
    """Settings shared by the feature metrics: KID's subsets, the k of precision/recall, and
    the seed of every random choice."""

    kid_subsets: int = 100
    kid_subset_size: int = 1000
    k: int = 3
    seed: int = 0


FeatureMetric = Callable[[np.ndarray, np.ndarray, QualityOptions], dict[str, float]]
FEATURE_METRICS: dict[str, FeatureMetric] = {}


def register_metric(name: str) -> Callable[[FeatureMetric], FeatureMetric]:
    """Decorator: add a feature metric to FEATURE_METRICS under `name`."""

    def add(function: FeatureMetric) -> FeatureMetric:
        if name in FEATURE_METRICS:
            raise ValueError(f"feature metric {name!r} is already registered")
        FEATURE_METRICS[name] = function
        return function

    return add


@register_metric("fid")
def _fid(real: np.ndarray, fake: np.ndarray, options: QualityOptions) -> dict[str, float]:
    return {"fid": fid(real, fake)}


@register_metric("kid")
def _kid(real: np.ndarray, fake: np.ndarray, options: QualityOptions) -> dict[str, float]:
    mean, std = kid(
        real,
        fake,
        n_subsets=options.kid_subsets,
        subset_size=options.kid_subset_size,
        seed=options.seed,
    )
    return {"kid": mean, "kid_std": std}


@register_metric("precision_recall")
def _precision_recall(
    real: np.ndarray, fake: np.ndarray, options: QualityOptions
) -> dict[str, float]:
    precision, recall = precision_recall(real, fake, k=options.k)
    return {"precision": precision, "recall": recall}


def feature_quality(
    real_features: FeatureArray,
    fake_features: FeatureArray,
    *,
    metrics: Sequence[str] | None = None,
    options: QualityOptions | None = None,
) -> dict[str, float]:
    """Run the named feature metrics (default: all registered) on precomputed features; useful
    when the real features are computed once and reused for many checkpoints."""
    names = list(FEATURE_METRICS) if metrics is None else list(metrics)
    unknown = sorted(set(names) - set(FEATURE_METRICS))
    if unknown:
        raise ValueError(
            f"unknown feature metrics {unknown}; choose from {sorted(FEATURE_METRICS)}"
        )
    real, fake = as_features(real_features), as_features(fake_features)
    options = options or QualityOptions()
    results: dict[str, float] = {}
    for name in names:
        results.update(FEATURE_METRICS[name](real, fake, options))
    return results


def image_quality(
    real_X: ImageArray,
    fake_X: ImageArray,
    net: FeatureNet,
    *,
    metrics: Sequence[str] | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """FID, KID (mean and std), precision and recall of `fake_X` against `real_X` in the
    feature space of `net`; features are extracted once per set.

    Returns {"fid", "kid", "kid_std", "precision", "recall"} for the default metrics.
    """
    options = QualityOptions(kid_subsets, kid_subset_size, k, seed)
    return feature_quality(
        net.features(real_X), net.features(fake_X), metrics=metrics, options=options
    )

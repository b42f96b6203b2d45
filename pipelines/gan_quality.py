"""Quality metrics of a trained generator against real rows it did not train on
(`generative.metrics`).

Samples are drawn like the reference rows: for a conditional generator as many per class as
the reference holds of that class, otherwise as many as there are reference rows. Samples of a
generator trained on padded images (the progressive nets' 28 -> 32) are cropped back to the
reference's size.

- Tables (in the data's own units): per-feature KS statistic and Wasserstein-1 distance
  (metrics `ks.<feature>`, `wasserstein_1.<feature>`, their mean and max, and the table as
  `quality/feature_distances.csv`) and the C2ST AUC (`c2st_auc`, 0.5 = indistinguishable).
- Images of a catalog set (fashion-mnist, mnist): FID, KID (`kid`, `kid_std`), precision and
  recall in the feature space of the set's registered feature net (`pipelines.feature_net`,
  trained and registered on first use), whose name and version are logged as params. Images
  from files have no feature net: the run logs `quality.feature_net = none` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from anomaly.data.gan_data import GanData
from anomaly.packaged.generation import GeneratorBundle, Request
from generative.gan.latent import brightness_analogy
from generative.metrics import FeatureNet, c2st_auc, feature_distances, image_quality
from pipelines.feature_net import ensure_feature_net

KID_SUBSET_SIZE = 1000


ARITHMETIC_GRID = "latent/arithmetic_brightness.png"


@dataclass(frozen=True)
class Quality:
    """Metrics (logged as MLflow metrics) and the parameters that qualify them (logged as
    MLflow params, e.g. the feature net's name and version)."""

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # artifact path -> text
    images: dict[str, np.ndarray] = field(default_factory=dict)  # artifact path -> image


def draw_like_reference(
    bundle: GeneratorBundle, data: GanData, *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(samples, real rows) at data scale, matched in number (and per class when the
    generator is conditional; reference rows of classes it does not know are left out)."""
    if not bundle.conditional:
        n = len(data.reference)
        return bundle.generate(Request(n, None, seed)), data.reference
    labels = np.asarray(data.reference_labels)
    known = np.isin(labels, bundle.classes)
    samples = [
        bundle.generate(Request(int((labels == label).sum()), label, seed))
        for label in bundle.classes
        if (labels == label).any()
    ]
    order = np.argsort(labels[known], kind="stable")
    return np.concatenate(samples), data.reference[known][order]


def quality_metrics(bundle: GeneratorBundle, data: GanData, *, seed: int) -> Quality:
    """The final quality metrics of a run: images or tables, as the module docstring says."""
    samples, real = draw_like_reference(bundle, data, seed=seed)
    if not data.is_image:
        return table_metrics(samples, real, bundle.feature_names, seed=seed)
    if data.feature_set is None:
        return Quality(params={"quality.feature_net": "none (images from a file)"})
    padded = samples.shape[1:] != real.shape[1:]
    if padded:  # trained on padded images (progressive nets): compare the centre
        samples = center_crop(samples, real.shape[-2:])
    net, identity = ensure_feature_net(data.feature_set, seed=seed)
    quality = image_metrics(samples, real, net, seed=seed)
    params = identity.as_params()
    if bundle.conditional:
        return Quality(quality, params)
    if padded:
        return Quality(quality, {**params, "arithmetic": "skipped: padded images"})
    try:
        metrics, grid = brightness_analogy(bundle.gan, net, seed=seed)
    except ValueError as error:  # a collapsed generator: no two classes to relate
        return Quality(quality, {**params, "arithmetic": f"skipped: {error}"})
    return Quality({**quality, **metrics}, params, images={ARITHMETIC_GRID: grid})


def center_crop(images: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """The centre `size` (h, w) of (n, c, H, W) images (padding trimmed equally per side)."""
    top = (images.shape[-2] - size[0]) // 2
    left = (images.shape[-1] - size[1]) // 2
    if top < 0 or left < 0:
        raise ValueError(f"cannot crop {images.shape[-2:]} images to {tuple(size)}")
    return images[..., top : top + size[0], left : left + size[1]]


def image_metrics(
    samples: np.ndarray, real: np.ndarray, net: FeatureNet, *, seed: int
) -> dict[str, float]:
    """FID, KID, precision and recall against `real` in the feature space of `net`."""
    size = min(KID_SUBSET_SIZE, len(samples), len(real))
    return image_quality(real, samples, net, kid_subset_size=size, seed=seed)


def table_metrics(
    samples: np.ndarray, real: np.ndarray, feature_names: list[str], *, seed: int
) -> Quality:
    """Per-feature KS and Wasserstein-1 distances and the C2ST AUC against `real`."""
    distances = feature_distances(real, samples, feature_names)
    auc = c2st_auc(real, samples, seed=seed)
    metrics = {
        "c2st_auc": auc,
        "ks_mean": float(distances["ks"].mean()),
        "ks_max": float(distances["ks"].max()),
        "wasserstein_1_mean": float(distances["wasserstein_1"].mean()),
    }
    for name, row in distances.iterrows():
        metrics[f"ks.{metric_safe(str(name))}"] = float(row["ks"])
        metrics[f"wasserstein_1.{metric_safe(str(name))}"] = float(row["wasserstein_1"])
    return Quality(metrics, artifacts={"quality/feature_distances.csv": distances.to_csv()})


def metric_safe(name: str) -> str:
    """A feature name as MLflow accepts it in a metric key."""
    return re.sub(r"[^\w\-. /]", "_", name)

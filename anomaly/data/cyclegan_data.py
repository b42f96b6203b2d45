"""The data of a CycleGAN training run: unpaired training images of domains A and B, test
images of each for evaluation, and the labels the domain classifier needs.

Two ways to give the domains:

- one image set and a known invertible transform T (`generative.cyclegan.TRANSFORMS`): a
  seeded permutation cuts the training images into two disjoint halves; A is the first half,
  B is T of the second, so no image ever appears in both domains. The test images are the
  set's test split (catalog image sets: mnist, fashion-mnist) or a seeded held-out fraction;
  test A = x and test B = T(x) of the same held-out images, whose answers are known.
- two data sets (catalog names, npz files or image folders) as `domain_a` and `domain_b`,
  each cut into training and held-out test images by a seeded permutation; with a
  `transform` named as well, the translation errors are measured against T and T^-1.

Images are float32 in [0, 1] (8-bit values divided by 255).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from anomaly.data import load_dataset
from anomaly.data.catalog import IMAGE_SETS
from anomaly.data.gan_data import to_data_scale
from anomaly.errors import ConfigError, UserInputError
from anomaly.evaluation import digest
from generative.cyclegan.transforms import get_transform


@dataclass(frozen=True)
class CycleDataSpec:
    """Which data: `dataset` + `transform` (B = T of a disjoint half), or `domain_a` +
    `domain_b` (optionally with the `transform` relating them); caps on the training images
    per domain and on the test images; the held-out fraction when there is no test split."""

    dataset: str | None = None
    transform: str | None = None
    domain_a: str | None = None
    domain_b: str | None = None
    max_rows: int | None = None
    test_rows: int = 500
    holdout_fraction: float = 0.2

    def __post_init__(self) -> None:
        domains = (self.domain_a is not None, self.domain_b is not None)
        if self.dataset is not None and any(domains):
            raise ConfigError("give either dataset (with transform) or domain_a and domain_b")
        if self.dataset is None and not all(domains):
            raise ConfigError(
                "give a dataset and a transform (B = T of a disjoint half), or both domain_a "
                "and domain_b"
            )
        if self.dataset is not None and self.transform is None:
            raise ConfigError(f"dataset {self.dataset!r} needs a transform to make domain B")
        if self.transform is not None:
            get_transform(self.transform)
        if self.max_rows is not None and self.max_rows < 1:
            raise ConfigError(f"max_rows must be >= 1, got {self.max_rows}")
        if self.test_rows < 1:
            raise ConfigError(f"test_rows must be >= 1, got {self.test_rows}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")

    @property
    def name(self) -> str:
        """A short description: `mnist+invert` or `<domain_a>-><domain_b>`."""
        if self.dataset is not None:
            return f"{self.dataset}+{self.transform}"
        return f"{self.domain_a}->{self.domain_b}"


@dataclass(frozen=True)
class CycleData:
    """Training and test images of both domains (float32 (n, C, H, W) in [0, 1]) with their
    labels where the data have them."""

    train_a: np.ndarray
    train_b: np.ndarray
    test_a: np.ndarray
    test_b: np.ndarray
    train_b_labels: np.ndarray | None
    test_a_labels: np.ndarray | None
    transform: str | None
    name: str
    digest: str
    test_source: str

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of both domains."""
        return tuple(self.train_a.shape[1:])

    def tensors(self, field: str) -> torch.Tensor:
        """One of the image arrays as a tensor."""
        return torch.from_numpy(np.ascontiguousarray(getattr(self, field)))


def load_cycle_data(spec: CycleDataSpec, *, seed: int) -> CycleData:
    """Read the data and cut them into the two domains' training and test images (seeded)."""
    if spec.dataset is not None:
        return _from_one_set(spec, seed)
    return _from_two_sets(spec, seed)


def _images(source: str, split: str | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(images in [0, 1], labels, digest) of an image data set; refuses tables."""
    data = load_dataset(source, split=split)
    if data.X.ndim != 4:
        raise UserInputError(f"{source!r} holds table rows, not images (n, C, H, W)")
    return to_data_scale(data.X), data.y, digest(data.X)


def _transformed(name: str, images: np.ndarray, inverse: bool = False) -> np.ndarray:
    return get_transform(name).apply(torch.from_numpy(images), inverse=inverse).numpy()


def _from_one_set(spec: CycleDataSpec, seed: int) -> CycleData:
    catalog = spec.dataset.lower() in IMAGE_SETS
    X, y, data_digest = _images(spec.dataset, "train" if catalog else None)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    if catalog:
        test_X, test_y, _ = _images(spec.dataset, "test")
        source = f"{spec.dataset} test split"
    else:
        cut = max(1, int(round(spec.holdout_fraction * len(X))))
        test_X, test_y = X[order[:cut]], None if y is None else y[order[:cut]]
        order, source = order[cut:], f"held-out {spec.holdout_fraction:g} of the images"
    if len(order) < 2:
        raise UserInputError(f"{spec.dataset!r} has too few images to make two domains")
    half = len(order) // 2
    rows_a, rows_b = np.sort(order[:half][: spec.max_rows]), np.sort(order[half:][: spec.max_rows])
    test = np.sort(rng.permutation(len(test_X))[: spec.test_rows])
    test_a = test_X[test]
    return CycleData(
        train_a=X[rows_a], train_b=_transformed(spec.transform, X[rows_b]),
        test_a=test_a, test_b=_transformed(spec.transform, test_a),
        train_b_labels=None if y is None else y[rows_b],
        test_a_labels=None if test_y is None else test_y[test],
        transform=spec.transform, name=spec.name, digest=data_digest,
        test_source=f"{source} ({len(test)} images; test B = T(test A))",
    )  # fmt: skip


def _split(
    X: np.ndarray, y: np.ndarray | None, spec: CycleDataSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """(train, train labels, test, test labels): a held-out fraction (>= 1 image) for test."""
    if len(X) < 2:
        raise UserInputError(f"a domain needs at least 2 images (training and test), got {len(X)}")
    order = rng.permutation(len(X))
    cut = min(max(1, int(round(spec.holdout_fraction * len(X)))), len(X) - 1)
    train, test = np.sort(order[cut:][: spec.max_rows]), np.sort(order[:cut][: spec.test_rows])
    labels = (None, None) if y is None else (y[train], y[test])
    return X[train], labels[0], X[test], labels[1]


def _from_two_sets(spec: CycleDataSpec, seed: int) -> CycleData:
    X_a, y_a, digest_a = _images(spec.domain_a)
    X_b, y_b, digest_b = _images(spec.domain_b)
    if X_a.shape[1:] != X_b.shape[1:]:
        raise UserInputError(
            f"domains A and B must share the image shape (C, H, W): A {spec.domain_a!r} has "
            f"{X_a.shape[1:]}, B {spec.domain_b!r} has {X_b.shape[1:]}"
        )
    rng = np.random.default_rng(seed)
    train_a, _, test_a, test_a_y = _split(X_a, y_a, spec, rng)
    train_b, train_b_y, test_b, _ = _split(X_b, y_b, spec, rng)
    return CycleData(
        train_a=train_a, train_b=train_b, test_a=test_a, test_b=test_b,
        train_b_labels=train_b_y, test_a_labels=test_a_y, transform=spec.transform,
        name=spec.name, digest=f"{digest_a}+{digest_b}",
        test_source=f"held-out {spec.holdout_fraction:g} of each domain "
        f"({len(test_a)} A, {len(test_b)} B images)",
    )  # fmt: skip

"""Evaluation protocol shared by the demo and the benchmarks: splits and ranking metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


@dataclass(frozen=True)
class NoveltySplit:
    """Training rows and a labelled test set (1 = anomaly). The training rows are normal only
    (`novelty_split`) or carry the data set's anomaly rate (`unsupervised_split`); their labels
    `y_train` are for stratified subsampling and reports, never for the detector."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    test_index: np.ndarray
    y_train: np.ndarray | None = None


def novelty_split(
    X: np.ndarray, y: np.ndarray, *, test_fraction: float = 0.3, seed: int = 0
) -> NoveltySplit:
    """Stratified split; the detector trains on the normal rows of the training part only.

    Both classes are split in the same proportion, so the test set keeps the data set's
    anomaly rate. Every method compared on a seed sees the identical split.
    """
    y = np.asarray(y).astype(int)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    rng = np.random.default_rng(seed)
    test_rows: list[np.ndarray] = []
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == label))
        test_rows.append(rows[: int(round(test_fraction * len(rows)))])
    test_index = np.sort(np.concatenate(test_rows))
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test_index] = True
    train_index = np.flatnonzero(~is_test & (y == 0))
    return NoveltySplit(X[train_index], X[test_index], y[test_index], test_index)


def unsupervised_split(
    X: np.ndarray, y: np.ndarray, *, test_fraction: float = 0.3, seed: int = 0
) -> NoveltySplit:
    """The same stratified split as `novelty_split`, but the detector trains on every row of
    the training part, anomalies included (unlabelled: as history arrives, nobody cleaned it).

    `X_train` keeps the data set's anomaly rate; the test part is identical to
    `novelty_split`'s for the same seed."""
    y = np.asarray(y).astype(int)
    clean = novelty_split(X, y, test_fraction=test_fraction, seed=seed)
    is_test = np.zeros(len(y), dtype=bool)
    is_test[clean.test_index] = True
    return NoveltySplit(X[~is_test], clean.X_test, clean.y_test, clean.test_index, y[~is_test])


def ranking_metrics(y_true: np.ndarray, anomaly_score: np.ndarray) -> dict[str, float]:
    """AUROC and AUPRC (average precision) of `anomaly_score` (higher = more anomalous)."""
    return {
        "auroc": float(roc_auc_score(y_true, anomaly_score)),
        "auprc": float(average_precision_score(y_true, anomaly_score)),
    }


@dataclass(frozen=True)
class LabelledData:
    """A data set's rows with binary labels (1 = anomaly / novelty; None when unlabelled)."""

    X: np.ndarray
    y: np.ndarray | None
    name: str
    feature_names: list[str] | None
    digest: str

    def holdout(self, fraction: float, seed: int) -> NoveltySplit:
        """Training rows (normal only) and a labelled held-out part of `fraction` of the rows.

        Unlabelled data count as all normal. The same (data, fraction, seed) always gives the
        same split, so the training flow and the evaluation gate agree on which rows are which.
        """
        labels = np.zeros(len(self.X), dtype=int) if self.y is None else self.y
        return novelty_split(self.X, labels, test_fraction=fraction, seed=seed)


@dataclass(frozen=True)
class DataSpec:
    """Which data: a catalog name or a file, its split, its label column, and which classes
    count as novelties (for multi-class sets such as Fashion-MNIST)."""

    dataset: str
    split: str | None = None
    label_column: str | None = None
    novelty_classes: tuple[int, ...] = ()

    def load(self) -> LabelledData:
        """Load the rows and turn the labels into 0 (normal) / 1 (novelty)."""
        from anomaly.data import load_dataset

        data = load_dataset(self.dataset, split=self.split, label_column=self.label_column)
        return LabelledData(
            data.X, self.binary_labels(data.y), data.name, data.feature_names, digest(data.X)
        )

    def binary_labels(self, y: np.ndarray | None) -> np.ndarray | None:
        """1 for novelty rows, 0 for normal ones; None when the data set has no labels."""
        if y is None:
            if self.novelty_classes:
                raise ValueError(f"{self.dataset}: novelty_classes given but it has no labels")
            return None
        if self.novelty_classes:
            return np.isin(y, self.novelty_classes).astype(int)
        values = set(np.unique(y).tolist())
        if not values <= {0, 1}:
            raise ValueError(
                f"{self.dataset}: labels take values {sorted(values)[:10]}; name the novelty "
                "classes (e.g. novelty_classes=(0,)) or use 0 = normal / 1 = anomaly labels"
            )
        return np.asarray(y).astype(int)


def digest(X: np.ndarray) -> str:
    """SHA-256 of an array's shape, dtype and bytes (hex, first 16 characters)."""
    import hashlib

    array = np.ascontiguousarray(X)
    hasher = hashlib.sha256(f"{array.shape}|{array.dtype.str}|".encode())
    hasher.update(memoryview(array).cast("B"))
    return hasher.hexdigest()[:16]

"""The domain feature network in the MLflow registry: trained once per dataset, then reused.

FID, KID and precision/recall are only comparable between runs that use the same features, so
the FeatureNet of a dataset is a registered model, `genad-features-<dataset>`, whose alias
`current` names the version every run uses. `ensure_feature_net` returns that version, training
and registering one only when none exists; callers log `identity.as_params()` with their
metrics so each number says which features it was measured on.

The network is stored as its own MLflow flavor, `genad_feature_net` (`pipelines.servables`):
an `MLmodel` file beside `config.json` ({"family": "feature_net", "config": {...}}) and
`model.pt` (the state_dict, read back with `torch.load(weights_only=True)`); nothing is pickled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from anomaly.data.catalog import load_dataset
from anomaly.data.readers import Dataset
from anomaly.errors import UserInputError
from generative.metrics import FeatureNet, FeatureNetConfig, accuracy, fid, train_feature_net
from pipelines import servables, tracking
from pipelines.train import default_model_name

FEATURE_EXPERIMENT = "genad-feature-nets"
CURRENT = "current"


@dataclass(frozen=True)
class FeatureNetIdentity:
    """Which registered feature network a metric was computed with."""

    name: str
    version: str
    run_id: str | None = None

    @property
    def uri(self) -> str:
        """The registry URI of this exact version."""
        return f"models:/{self.name}/{self.version}"

    def as_params(self) -> dict[str, str]:
        """MLflow params for runs whose metrics use these features."""
        return {"feature_net.name": self.name, "feature_net.version": self.version}


def feature_net_name(dataset: str) -> str:
    """`genad-features-<dataset>`, with path parts and odd characters removed."""
    return "genad-features-" + default_model_name(dataset).removeprefix("genad-")


# --- the registry -----------------------------------------------------------------------------
def current_version(name: str) -> str | None:
    """The version `current` points at, else the latest version, else None."""
    tracking.configure()
    pinned = tracking.alias_version(name, CURRENT)
    return pinned if pinned is not None else tracking.latest_version(name)


def load_feature_net(
    dataset: str, version_or_alias: str | int = CURRENT
) -> tuple[FeatureNet, FeatureNetIdentity]:
    """The registered feature net of `dataset` at a version number or alias."""
    name = feature_net_name(dataset)
    reference = str(version_or_alias)
    number, alias = (reference, None) if reference.isdigit() else (None, reference)
    try:
        version = tracking.find_version(name, alias=alias, number=number)
    except tracking.ModelNotFoundError as error:
        raise tracking.ModelNotFoundError(
            f"no feature net {name!r} at {reference!r} in {tracking.tracking_uri()}; "
            f"ensure_feature_net({dataset!r}) trains and registers one"
        ) from error
    net = servables.load_feature_net_model(f"models:/{name}/{version.version}")
    return net, FeatureNetIdentity(name, str(version.version), version.run_id)


def ensure_feature_net(dataset: str, **training: Any) -> tuple[FeatureNet, FeatureNetIdentity]:
    """The dataset's current feature net; trained and registered only if none exists, with
    `training` (the keyword options of `train_and_register_feature_net`: epochs, seed,
    train_rows, eval_rows, batch_size, net_config).

    When a version exists the training options are ignored: every run keeps comparing on the
    same features. Call `train_and_register_feature_net` to make a new version on purpose.
    """
    version = current_version(feature_net_name(dataset))
    if version is not None:
        return load_feature_net(dataset, version)
    return train_and_register_feature_net(dataset, **training)


# --- training a new version -------------------------------------------------------------------
def subsample(
    X: np.ndarray, y: np.ndarray, rows: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) at `rows` rows drawn without replacement (seeded, in order); all when None."""
    if rows is None or rows >= len(X):
        return X, y
    if rows < 1:
        raise UserInputError(f"rows must be >= 1, got {rows}")
    index = np.sort(np.random.default_rng(seed).choice(len(X), rows, replace=False))
    return X[index], y[index]


def load_splits(dataset: str) -> tuple[Dataset, Dataset]:
    """The labelled train and test splits of an image dataset."""
    train, test = load_dataset(dataset, split="train"), load_dataset(dataset, split="test")
    if train.kind != "image" or train.y is None or test.y is None:
        raise UserInputError(f"a feature net needs a labelled image dataset, got {dataset!r}")
    return train, test


def fit_and_measure(
    train: Dataset,
    test: Dataset,
    config: FeatureNetConfig,
    options: dict[str, Any],
) -> tuple[FeatureNet, dict[str, float]]:
    """Train on the train split; measure accuracy (on the test rows and on as many training
    rows) and the FID floor: the FID between the test rows and as many random rows of the
    train split, the smallest FID real images reach at that sample size."""
    seed = options["seed"]
    X, y = subsample(train.X, train.y, options["train_rows"], seed)
    started = time.perf_counter()
    net = train_feature_net(
        X, y, config, epochs=options["epochs"], seed=seed, batch_size=options["batch_size"]
    )
    seconds = time.perf_counter() - started
    test_X, test_y = subsample(test.X, test.y, options["eval_rows"], seed)
    reference_X, _ = subsample(train.X, train.y, len(test_X), seed + 1)
    metrics = {
        "train_seconds": seconds,
        "train_accuracy": accuracy(net, *subsample(X, y, len(test_X), seed)),
        "test_accuracy": accuracy(net, test_X, test_y),
        "fid_floor": fid(net.features(test_X), net.features(reference_X)),
    }
    return net, metrics


def train_and_register_feature_net(
    dataset: str,
    *,
    epochs: int = 2,
    seed: int = 0,
    train_rows: int | None = None,
    eval_rows: int | None = None,
    batch_size: int = 128,
    net_config: dict[str, Any] | None = None,
) -> tuple[FeatureNet, FeatureNetIdentity]:
    """Train a feature net on the train split of `dataset` (optionally `train_rows` of it),
    log the run (params, resolved config, test accuracy, FID floor on `eval_rows` test rows),
    log the model, register a new version and point `current` at it."""
    train, test = load_splits(dataset)
    config = FeatureNetConfig(
        input_shape=train.X.shape[1:], num_classes=int(train.y.max()) + 1, **(net_config or {})
    )
    options = {
        "epochs": epochs,
        "seed": seed,
        "train_rows": train_rows,
        "eval_rows": eval_rows,
        "batch_size": batch_size,
    }
    name = feature_net_name(dataset)
    tags = {"genad.model_name": name, "genad.flow": "feature-net"}
    with tracking.new_run(FEATURE_EXPERIMENT, f"features-{dataset}", tags) as run:
        run.log_params({"dataset": dataset, **options, "train_split_rows": len(train.X)})
        run.log_params({f"net.{k}": v for k, v in config.to_dict().items()})
        net, metrics = fit_and_measure(train, test, config, options)
        run.log_metrics(metrics)
        run.log_dict(
            {"config": config.to_dict(), "training": options, "torch": str(torch.__version__)},
            "config/resolved.json",
        )
        info = servables.log_feature_net(net)
    reason = f"trained by run {run.run_id}"
    version = tracking.register(
        info.model_uri, name, run_id=run.run_id, reason=reason, alias=CURRENT
    )
    return net, FeatureNetIdentity(name, str(version.version), run.run_id)

"""The domain feature network in the MLflow registry: trained once per dataset, then reused.

FID, KID and precision/recall are only comparable between runs that use the same features, so
the FeatureNet of a dataset is a registered model, `genad-features-<dataset>`, whose alias
`current` names the version every run uses. `ensure_feature_net` returns that version, training
and registering one only when none exists; callers log `identity.as_params()` with their
metrics so each number says which features it was measured on.

The network is stored as its own MLflow flavor, `genad_feature_net`: an `MLmodel` file beside
`config.json` ({"family": "feature_net", "config": {...}}) and `model.pt` (the state_dict, read
back with `torch.load(weights_only=True)`); nothing is pickled. `save_model` / `load_model`
follow MLflow's flavor-module convention (the module is passed to `mlflow.models.Model.log`).
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.models.model import MLMODEL_FILE_NAME

from anomaly.data.catalog import load_dataset
from anomaly.data.readers import Dataset
from generative import registry
from generative.metrics import FeatureNet, FeatureNetConfig, accuracy, fid, train_feature_net
from generative.registry import read_model_files, write_model_files
from pipelines import tracking
from pipelines.train import default_model_name

FEATURE_EXPERIMENT = "genad-feature-nets"
CURRENT = "current"
FLAVOR = "genad_feature_net"


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


# --- the flavor: files on disk ----------------------------------------------------------------
def save_model(path: str | Path, mlflow_model: Model | None = None, *, net: FeatureNet) -> None:
    """Write `net` as an MLflow model folder (MLmodel, config.json, model.pt) at a new `path`."""
    folder = Path(path)
    folder.mkdir(parents=True)
    write_model_files(net, folder)
    mlflow_model = mlflow_model or Model()
    mlflow_model.add_flavor(
        FLAVOR,
        family=net.family,
        config=registry.CONFIG_FILE,
        weights=registry.WEIGHTS_FILE,
        torch=str(torch.__version__),
    )
    mlflow_model.save(str(folder / MLMODEL_FILE_NAME))


def read_model_folder(folder: Path) -> FeatureNet:
    """Rebuild the FeatureNet of a model folder written by `save_model`, in eval mode."""
    flavor = Model.load(str(folder / MLMODEL_FILE_NAME)).flavors.get(FLAVOR)
    if flavor is None:
        raise ValueError(f"{folder} is not a {FLAVOR} model (no such flavor in its MLmodel)")
    net = read_model_files(folder)
    if not isinstance(net, FeatureNet):
        raise ValueError(f"{folder} holds family {net.family!r}, not a feature net")
    return net.eval()


def load_model(model_uri: str) -> FeatureNet:
    """Download a logged or registered feature net (any MLflow model URI) and rebuild it."""
    tracking.configure()
    with tempfile.TemporaryDirectory(prefix="genad-features-") as scratch:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=scratch)
        return read_model_folder(Path(local))


# --- the registry -----------------------------------------------------------------------------
def current_version(name: str) -> str | None:
    """The version `current` points at, else the latest version, else None."""
    tracking.configure()
    pinned = tracking.alias_version(name, CURRENT)
    if pinned is not None:
        return pinned
    versions = MlflowClient().search_model_versions(f"name='{name}'")
    return str(max(int(v.version) for v in versions)) if versions else None


def load_feature_net(
    dataset: str, version_or_alias: str | int = CURRENT
) -> tuple[FeatureNet, FeatureNetIdentity]:
    """The registered feature net of `dataset` at a version number or alias."""
    tracking.configure()
    name = feature_net_name(dataset)
    client = MlflowClient()
    reference = str(version_or_alias)
    try:
        if reference.isdigit():
            version = client.get_model_version(name, reference)
        else:
            version = client.get_model_version_by_alias(name, reference)
    except MlflowException as error:
        raise tracking.ModelNotFoundError(
            f"no feature net {name!r} at {reference!r} in {tracking.tracking_uri()}; "
            f"ensure_feature_net({dataset!r}) trains and registers one"
        ) from error
    net = load_model(f"models:/{name}/{version.version}")
    return net, FeatureNetIdentity(name, str(version.version), version.run_id)


def ensure_feature_net(
    dataset: str,
    *,
    epochs: int = 2,
    seed: int = 0,
    train_rows: int | None = None,
    eval_rows: int | None = None,
    net_config: dict[str, Any] | None = None,
) -> tuple[FeatureNet, FeatureNetIdentity]:
    """The dataset's current feature net; trained and registered only if none exists.

    When a version exists the training options are ignored: every run keeps comparing on the
    same features. Call `train_and_register_feature_net` to make a new version on purpose.
    """
    version = current_version(feature_net_name(dataset))
    if version is not None:
        return load_feature_net(dataset, version)
    return train_and_register_feature_net(
        dataset,
        epochs=epochs,
        seed=seed,
        train_rows=train_rows,
        eval_rows=eval_rows,
        net_config=net_config,
    )


# --- training a new version -------------------------------------------------------------------
def subsample(
    X: np.ndarray, y: np.ndarray, rows: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) at `rows` rows drawn without replacement (seeded, in order); all when None."""
    if rows is None or rows >= len(X):
        return X, y
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    index = np.sort(np.random.default_rng(seed).choice(len(X), rows, replace=False))
    return X[index], y[index]


def load_splits(dataset: str) -> tuple[Dataset, Dataset]:
    """The labelled train and test splits of an image dataset."""
    train, test = load_dataset(dataset, split="train"), load_dataset(dataset, split="test")
    if train.kind != "image" or train.y is None or test.y is None:
        raise ValueError(f"a feature net needs a labelled image dataset, got {dataset!r}")
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
    experiment_id = tracking.ensure_experiment(FEATURE_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"features-{dataset}") as run:
        mlflow.set_tags({"genad.model_name": name, "genad.flow": "feature-net"})
        mlflow.log_params({"dataset": dataset, **options, "train_split_rows": len(train.X)})
        mlflow.log_params({f"net.{k}": v for k, v in config.to_dict().items()})
        net, metrics = fit_and_measure(train, test, config, options)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(
            {"config": config.to_dict(), "training": options, "torch": str(torch.__version__)},
            "config/resolved.json",
        )
        info = Model.log(
            None, sys.modules[__name__], name="feature_net", flavor_name=FLAVOR, net=net
        )
    version = mlflow.register_model(info.model_uri, name, tags={"genad.run_id": run.info.run_id})
    tracking.move_alias(
        name,
        CURRENT,
        version.version,
        reason=f"trained by run {run.info.run_id}",
        action="register",
    )
    return net, FeatureNetIdentity(name, str(version.version), run.info.run_id)

"""`train_vae_flow`: train a VAE detector, log the run to MLflow, register it as `challenger`."""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from anomaly import VAEDetector
from anomaly.corrections import check_applicable
from anomaly.evaluation import DataSpec, LabelledData, NoveltySplit
from anomaly.scoring import default_feature_names, save_bundle
from generative.training import Callback, Trainer
from generative.vae import LIKELIHOODS
from pipelines import reports, tracking
from pipelines.retries import io_task_options

TRAIN_EXPERIMENT = "genad-train"


class MlflowEpochLogger(Callback):
    """Log each epoch's metrics to an MLflow run (by id: safe from any thread)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.client = MlflowClient()

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        stamp = int(time.time() * 1000)
        metrics = [Metric(f"epoch_{k}", float(v), stamp, epoch) for k, v in logs.items()]
        self.client.log_batch(self.run_id, metrics=metrics)


@task(**io_task_options(2, 2), cache_policy=NONE)
def load_data(spec: DataSpec) -> LabelledData:
    """Read the data set (retried: it may be downloaded)."""
    return spec.load()


@task(cache_policy=NONE)
def start_run(spec: DataSpec, data: LabelledData, params: dict[str, Any], model_name: str) -> str:
    """Create the MLflow run: parameters, tags and the dataset (name and digest)."""
    import mlflow

    experiment_id = tracking.ensure_experiment(TRAIN_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{model_name}") as run:
        mlflow.set_tags({"genad.model_name": model_name, "genad.flow": "train-vae"})
        mlflow.log_params({f"data.{k}": v for k, v in spec.__dict__.items()})
        mlflow.log_params({"data.rows": len(data.X), "data.digest": data.digest})
        with warnings.catch_warnings():  # mlflow registers the local source type twice
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_numpy(
                data.X, targets=data.y, source=spec.dataset, name=data.name, digest=data.digest
            )
        mlflow.log_input(dataset, context="training")
        mlflow.log_params({f"detector.{k}": v for k, v in params.items()})
    return run.info.run_id


@task(cache_policy=NONE)
def fit_detector(split: NoveltySplit, params: dict[str, Any], run_id: str) -> VAEDetector:
    """Fit the detector on the normal training rows, logging every epoch."""
    detector = VAEDetector(**params).fit(split.X_train, callbacks=[MlflowEpochLogger(run_id)])
    return detector.set_params(verbose=False)  # the served model scores without progress bars


@task(cache_policy=NONE)
def evaluate_and_log(
    detector: VAEDetector, split: NoveltySplit, data: LabelledData, run_id: str, model_name: str
) -> dict[str, float]:
    """Validation metrics and plots into the run; the model logged as pyfunc and registered."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="genad-train-") as scratch:
        folder = Path(scratch)
        names = data.feature_names or default_feature_names(tuple(detector.input_shape_))
        bundle_dir = save_bundle(
            detector,
            folder / "detector",
            feature_names=names,
            info={"dataset": data.name, "digest": data.digest, "run_id": run_id},
        )
        metrics = reports.validation_report(detector, split, folder / "plots")
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(metrics)
            mlflow.log_dict(resolved_config(detector), "config/resolved.json")
            mlflow.log_artifacts(str(folder / "plots"), "plots")
            info = tracking.log_pyfunc_model(bundle_dir, model_name, split.X_test[:5])
    version = tracking.register(
        info.model_uri, model_name, run_id=run_id, reason=f"trained by run {run_id}"
    )
    return {**metrics, "version": int(version.version)}


def resolved_config(detector: VAEDetector) -> dict[str, Any]:
    """Everything needed to rebuild the run: detector params, the VAE config, versions."""
    return {
        "detector": detector.get_params(),
        "vae": detector.model_.config.to_dict(),
        "epochs_run": len(detector.history_),
        "active_units": detector.active_units_,
        "threshold": detector.offset_,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


@flow(name="train-vae", log_prints=True)
def train_vae_flow(
    dataset: str = "fashion-mnist",
    config: dict[str, Any] | None = None,
    *,
    model_name: str | None = None,
    split: str | None = None,
    label_column: str | None = None,
    novelty_classes: list[int] | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a VAE detector on the normal rows of `dataset`, log it and register it.

    `config` holds VAEDetector parameters (e.g. {"epochs": 20, "score": "iwae"}). A labelled,
    stratified `validation_fraction` of the rows (seeded) is held out for validation metrics
    and plots; `evaluate_and_promote_flow` can reuse the same split. Returns the run id, the
    registered version (now `challenger`) and the validation metrics.
    """
    logger = get_run_logger()
    spec = DataSpec(dataset, split, label_column, tuple(novelty_classes or ()))
    name = model_name or default_model_name(dataset)
    params = {"random_state": seed, **(config or {})}
    VAEDetector(**params)._check_params()  # fail before any run is created
    data = load_data(spec)
    check_correction_fits(params, tuple(data.X.shape[1:]))  # before any run is created
    holdout = data.holdout(validation_fraction, seed)
    run_id = start_run(spec, data, {**params, "validation_fraction": validation_fraction}, name)
    detector = fit_detector(holdout, params, run_id)
    metrics = evaluate_and_log(detector, holdout, data, run_id, name)
    logger.info("registered %s version %s as challenger: %s", name, metrics["version"], metrics)
    return {"model_name": name, "run_id": run_id, **metrics}


def check_correction_fits(params: dict[str, Any], input_shape: tuple[int, ...]) -> None:
    """The checks `VAEDetector.fit` makes on a correction, made before training."""
    likelihood = params.get("likelihood", "auto")
    discrete = likelihood not in LIKELIHOODS or LIKELIHOODS[likelihood].discrete  # auto: yes
    compressor = params.get("compressor", "png")
    check_applicable(params.get("correction", "none"), input_shape, discrete, compressor)


def default_model_name(dataset: str) -> str:
    """`genad-<dataset>` with path parts and odd characters removed."""
    stem = Path(dataset).name.split(".")[0] if "/" in dataset or "." in dataset else dataset
    return "genad-" + "".join(c if c.isalnum() or c == "-" else "-" for c in stem.lower())

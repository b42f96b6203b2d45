"""`train_vae_flow`: train a VAE detector, log the run to MLflow, register it as `challenger`.

With a `checkpoint_dir` the flow records its MLflow run id there (`run.json`) and the trainer
writes a checkpoint after every epoch (`trainer/epoch_<n>`); running the flow again with the
same folder after a crash (even kill -9) resumes training from the latest checkpoint and logs
into the same run, each epoch's metrics once.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from anomaly import VAEDetector
from anomaly.atomic import atomic_file
from anomaly.corrections import check_applicable
from anomaly.errors import UserInputError, user_settings
from anomaly.evaluation import DataSpec, LabelledData, NoveltySplit
from anomaly.packaged.scoring import default_feature_names, save_bundle
from generative.loop import TrainingDivergedError
from generative.training import Callback, Trainer
from generative.vae import LIKELIHOODS
from pipelines import reports, servables, tracking
from pipelines.retries import io_task_options

TRAIN_EXPERIMENT = "genad-train"
RUN_FILE = "run.json"  # in a checkpoint_dir: the MLflow run id and the settings it belongs to
TRAINER_FOLDER = "trainer"  # in a checkpoint_dir: the trainer's epoch checkpoints


class MlflowEpochLogger(Callback):
    """Log each epoch's metrics to an MLflow run (by id: safe from any thread) as `epoch_<name>`
    for the training that makes the model, and `<stage>_epoch_<name>` for a training before
    it (the detector's first pass, whose scores pick the refit's rows). Epochs the run already
    has (logged before a crash, replayed by a resumed training) are not logged again."""

    def __init__(self, run_id: str) -> None:
        self.run = tracking.Run(run_id)
        self.prefix = "epoch_"
        self.logged_steps: set[int] = set()

    def on_train_begin(self, trainer: Trainer) -> None:
        self.prefix = f"{trainer.stage}_epoch_" if trainer.stage else "epoch_"
        self.logged_steps = self.run.logged_steps(self.prefix)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if epoch not in self.logged_steps:
            self.run.log_metrics({f"{self.prefix}{k}": v for k, v in logs.items()}, step=epoch)


@task(**io_task_options(2, 2), cache_policy=NONE)
def load_data(spec: DataSpec) -> LabelledData:
    """Read the data set (retried: it may be downloaded)."""
    return spec.load()


@task(cache_policy=NONE)
def start_run(spec: DataSpec, data: LabelledData, params: dict[str, Any], model_name: str) -> str:
    """Create the MLflow run: parameters, tags and the dataset (name and digest)."""
    tags = {"genad.model_name": model_name, "genad.flow": "train-vae"}
    with tracking.new_run(TRAIN_EXPERIMENT, f"train-{model_name}", tags) as run:
        run.log_params({f"data.{k}": v for k, v in spec.__dict__.items()})
        run.log_params({"data.rows": len(data.X), "data.digest": data.digest})
        run.log_numpy_input(
            data.X, context="training", targets=data.y, source=spec.dataset, name=data.name,
            digest=data.digest,
        )  # fmt: skip
        run.log_params({f"detector.{k}": v for k, v in params.items()})
    return run.run_id


@task(cache_policy=NONE)
def fit_detector(
    split: NoveltySplit, params: dict[str, Any], run_id: str, checkpoint_dir: str | None = None
) -> VAEDetector:
    """Fit the detector on the normal training rows, logging every epoch (resuming from the
    latest checkpoint in `checkpoint_dir`/trainer when there is one)."""
    folder = None if checkpoint_dir is None else Path(checkpoint_dir) / TRAINER_FOLDER
    logger = MlflowEpochLogger(run_id)
    detector = VAEDetector(**params).fit(split.X_train, callbacks=[logger], checkpoint_dir=folder)
    return detector.set_params(verbose=False)  # the served model scores without progress bars


@task(cache_policy=NONE)
def evaluate_and_log(
    detector: VAEDetector, split: NoveltySplit, data: LabelledData, run_id: str, model_name: str
) -> dict[str, float]:
    """Validation metrics and plots into the run; the model logged as pyfunc and registered."""
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
        run = tracking.Run(run_id)
        run.log_metrics(metrics)
        run.log_dict(resolved_config(detector), "config/resolved.json")
        run.log_artifacts(folder / "plots", "plots")
        version = servables.publish(
            "detector", bundle_dir, model_name, run_id, example_rows=split.X_test[:5]
        )
    return {**metrics, "version": version}


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


# A registered model flags with the calibrated guarantee (at most 10% of new normal rows) unless
# its config chooses a rule: `target_fpr`, or `contamination` for a share of the training rows.
PLATFORM_RULE = {"target_fpr": 0.1}


def detector_params(config: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    """VAEDetector parameters of a platform training run: `config` over the seed and, unless
    it sets `target_fpr` or `contamination`, `PLATFORM_RULE`."""
    config = config or {}
    rule = {} if {"target_fpr", "contamination"} & config.keys() else PLATFORM_RULE
    return {"random_state": seed, **rule, **config}


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
    checkpoint_dir: str | None = None,
) -> dict[str, Any]:
    """Train a VAE detector on the normal rows of `dataset`, log it and register it.

    `config` holds VAEDetector parameters (e.g. {"epochs": 20, "score_method": "iwae"}). A labelled,
    stratified `validation_fraction` of the rows (seeded) is held out for validation metrics
    and plots; `evaluate_and_promote_flow` can reuse the same split. Returns the run id, the
    registered version (now `challenger`) and the validation metrics.

    `checkpoint_dir`: checkpoint every epoch there; a run of the flow with the same folder
    (same dataset and settings, else ValueError) resumes training and its MLflow run.
    """
    logger = get_run_logger()
    spec = DataSpec(dataset, split, label_column, tuple(novelty_classes or ()))
    name = model_name or default_model_name(dataset)
    params = detector_params(config, seed)
    with user_settings():  # fail before any run is created
        VAEDetector(**params)._check_params()
    data = load_data(spec)
    with user_settings():  # before any run is created
        check_correction_fits(params, tuple(data.X.shape[1:]))
    holdout = data.holdout(validation_fraction, seed)
    given = {**params, "validation_fraction": validation_fraction}
    identity = {"model_name": name, "data": spec.__dict__, "digest": data.digest, **given}
    logged = {**VAEDetector(**params).get_params(), **given}  # the defaults too
    run_id = resumed_or_new_run(
        checkpoint_dir, identity, lambda: start_run(spec, data, logged, name)
    )
    detector = fit_detector(holdout, params, run_id, checkpoint_dir)
    metrics = evaluate_and_log(detector, holdout, data, run_id, name)
    logger.info("registered %s version %s as challenger: %s", name, metrics["version"], metrics)
    return {"model_name": name, "run_id": run_id, **metrics}


def recorded_run(checkpoint_dir: str | None, identity: dict[str, Any]) -> str | None:
    """The MLflow run id recorded in `checkpoint_dir` (None without one); ValueError when the
    folder was used by a flow run with other settings or data, or the run is gone."""
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / RUN_FILE
    if path is None or not path.is_file():
        return None
    recorded = json.loads(path.read_text())
    expected = json.loads(json.dumps(identity, sort_keys=True, default=str))
    if recorded["identity"] != expected:
        old, new = recorded["identity"], expected
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        raise UserInputError(
            f"checkpoint_dir {checkpoint_dir} belongs to run {recorded['run_id']} of other "
            f"settings ({', '.join(keys)} differ): use another folder or delete it"
        )
    try:
        tracking.Run(recorded["run_id"]).check_exists()
    except Exception as error:  # mlflow raises MlflowException subclasses by store
        raise UserInputError(
            f"checkpoint_dir {checkpoint_dir} names MLflow run {recorded['run_id']}, which this "
            f"tracking store does not have ({error}); check MLFLOW_TRACKING_URI"
        ) from None
    return recorded["run_id"]


def record_run(checkpoint_dir: str | None, run_id: str, identity: dict[str, Any]) -> None:
    """Write run.json (run id and the settings it belongs to) atomically."""
    if checkpoint_dir is None:
        return
    document = {"run_id": run_id, "identity": identity}
    with atomic_file(Path(checkpoint_dir) / RUN_FILE) as staging:
        staging.write_text(json.dumps(document, indent=2, sort_keys=True, default=str))


def resumed_or_new_run(
    checkpoint_dir: str | None, identity: dict[str, Any], start: Callable[[], str]
) -> str:
    """The MLflow run recorded in `checkpoint_dir` for these settings (a resumed training),
    else a new one from `start()`, recorded there."""
    run_id = recorded_run(checkpoint_dir, identity)
    if run_id is not None:
        get_run_logger().info(
            "resuming MLflow run %s from the checkpoints in %s", run_id, checkpoint_dir
        )
        return run_id
    run_id = start()
    record_run(checkpoint_dir, run_id, identity)
    return run_id


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


def fit_tracked(trainer: Any, run_id: str, *data: Any) -> list[dict[str, float]]:
    """`trainer.fit(*data)`, whose history it returns. On divergence the run is tagged and
    marked FAILED, with the message as `divergence.txt` and the epochs run, and the error raised
    again."""
    try:
        return trainer.fit(*data)
    except TrainingDivergedError as error:
        tracking.Run(run_id).mark_diverged(str(error), {"epochs_run": len(trainer.history)})
        raise

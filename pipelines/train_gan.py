"""`train_gan_flow`: train a GAN, log the run to MLflow, register the generator as `challenger`.

The run logs its parameters, the resolved configuration, per-epoch losses, per-epoch sample grids
(images) from one fixed latent batch, linear and spherical interpolation grids, and quality
metrics against real rows it did not train on (`pipelines.gan_quality`). A diverged run
(`TrainingDivergedError`) keeps what it logged, is marked FAILED, and fails the flow with the
trainer's message.

With a `checkpoint_dir` the flow records its MLflow run id there (`run.json`) and the trainer
writes a checkpoint after every epoch (`trainer/epoch_<n>`); running the flow again with the
same folder after a crash (even kill -9) resumes training from the latest checkpoint and logs
into the same run, each epoch's losses once.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from anomaly.data.gan_data import GanData, GanDataSpec, load_gan_data
from anomaly.errors import UserInputError, user_settings
from anomaly.packaged.generation import GeneratorBundle, load_generator, save_generator
from generative.gan import GAN, GANConfig, GANTrainer, GANTrainerConfig
from generative.gan.latent import image_grid, interpolation_grid
from generative.stylegan.latent import z_and_w_interpolation_grid
from generative.training import Callback, ProgressBar
from pipelines import servables, tracking
from pipelines.gan_quality import quality_metrics
from pipelines.retries import io_task_options
from pipelines.train import (
    TRAIN_EXPERIMENT,
    TRAINER_FOLDER,
    MlflowEpochLogger,
    default_model_name,
    fit_tracked,
    resumed_or_new_run,
)

GRID_COLUMNS = 8
INTERPOLATION_ROWS = 6
INTERPOLATIONS = ("linear", "spherical")  # logged as latent/interpolation_<method>.png
# Set by the data, not by the caller.
DATA_FIELDS = ("data_shape", "num_classes")


class SampleGridLogger(Callback):
    """After epochs 1, 2, 4, 8, ... and the last one, log the samples of one fixed latent batch
    as a grid (`samples/epoch_001.png`, ...), so epochs are comparable: one row per class for a
    conditional GAN, else an 8 x 8 grid. Powers of two keep a run of many short epochs (a small
    data set under a step cap) to a few dozen images."""

    def __init__(self, run_id: str, config: GANConfig, *, seed: int) -> None:
        self.run = tracking.Run(run_id)
        rows = config.num_classes or GRID_COLUMNS
        generator = torch.Generator().manual_seed(seed)
        self.z = torch.randn(rows * GRID_COLUMNS, config.latent_dim, generator=generator)
        self.labels = (
            torch.arange(config.num_classes).repeat_interleave(GRID_COLUMNS)
            if config.num_classes
            else None
        )

    def on_epoch_end(self, trainer: GANTrainer, epoch: int, logs: dict[str, float]) -> None:
        """Log the grid after epoch numbers (from 1) that are powers of two."""
        if (epoch + 1) & epoch == 0:
            self.log_grid(trainer, epoch)

    def on_train_end(self, trainer: GANTrainer) -> None:
        """Log the last epoch's grid unless it was just logged."""
        epochs = len(trainer.history)
        if epochs and epochs & (epochs - 1):
            self.log_grid(trainer, epochs - 1)

    def log_grid(self, trainer: GANTrainer, epoch: int) -> None:
        """Draw the fixed batch with the current weights and log it for `epoch` (from 0)."""
        device = next(trainer.model.parameters()).device
        labels = None if self.labels is None else self.labels.to(device)
        images = trainer.model.generate(self.z.to(device), labels)
        artifact = f"samples/epoch_{epoch + 1:03d}.png"
        self.run.log_image(image_grid(images, GRID_COLUMNS), artifact)


@task(**io_task_options(2, 2), cache_policy=NONE)
def load_data(spec: GanDataSpec, seed: int) -> GanData:
    """Read the data set (retried: it may be downloaded) and cut it into training and
    reference rows."""
    return load_gan_data(spec, seed=seed)


def resolve_configs(
    gan: dict[str, Any] | None, trainer: dict[str, Any] | None, data: GanData, seed: int
) -> tuple[GANConfig, GANTrainerConfig]:
    """The GAN config (`conditional` -> num_classes from the labels; architecture "dcgan" for
    images, "mlp" for tables unless given) and the trainer config (seed = the flow's unless
    given). Raises ValueError on unknown or data-owned keys."""
    values = dict(gan or {})
    conditional = bool(values.pop("conditional", False))
    owned = sorted(set(values) & set(DATA_FIELDS))
    if owned:
        raise UserInputError(f"{owned} are set from the data; remove them from the GAN config")
    if conditional and not data.classes:
        raise UserInputError(f"a conditional GAN needs class labels; {data.name} has none")
    values.setdefault("architecture", "dcgan" if data.is_image else "mlp")
    values["data_shape"] = data.train.shape[1:]
    values["num_classes"] = len(data.classes) if conditional else 0
    with user_settings():
        return GANConfig.from_dict(values), trainer_config(trainer, seed)


def trainer_config(values: dict[str, Any] | None, seed: int) -> GANTrainerConfig:
    """GANTrainerConfig from a dict (seed = `seed` unless given); unknown keys are an error."""
    with user_settings():
        return GANTrainerConfig.from_dict({"seed": seed, **(values or {})})


@task(cache_policy=NONE)
def start_run(
    spec: GanDataSpec, data: GanData, configs: tuple[GANConfig, GANTrainerConfig], name: str
) -> str:
    """Create the MLflow run: tags, parameters, the dataset, the resolved configuration."""
    gan_config, train_config = configs
    tags = {"genad.model_name": name, "genad.flow": "train-gan"}
    with tracking.new_run(TRAIN_EXPERIMENT, f"train-{name}", tags) as run:
        run.log_params({f"data.{k}": v for k, v in dataclasses.asdict(spec).items()})
        run.log_params(
            {"data.rows": len(data.train), "data.digest": data.digest,
             "data.reference": data.reference_source, "data.classes": data.classes}
        )  # fmt: skip
        resolved = resolved_config(configs, data)
        run.log_configs({"gan": gan_config, "trainer": train_config}, resolved)
    return run.run_id


@task(cache_policy=NONE)
def fit_gan(
    data: GanData,
    configs: tuple[GANConfig, GANTrainerConfig],
    run_id: str,
    progress: bool,
    checkpoint_dir: str | None = None,
) -> tuple[GAN, list[dict[str, float]]]:
    """Train, logging every epoch's losses (and sample grid for images), resuming from the
    latest checkpoint in `checkpoint_dir`/trainer when there is one. On divergence the run is
    tagged and marked FAILED, with the message as `divergence.txt`, and the error raised
    again."""
    gan_config, train_config = configs
    torch.manual_seed(train_config.seed)  # seeded initial weights: a rerun is the same run
    gan = GAN(gan_config)
    callbacks: list[Callback] = [MlflowEpochLogger(run_id)]
    if data.is_image:
        callbacks.append(SampleGridLogger(run_id, gan_config, seed=train_config.seed))
    bar = ProgressBar("training GAN")
    folder = None if checkpoint_dir is None else Path(checkpoint_dir) / TRAINER_FOLDER
    trainer = GANTrainer(
        gan, train_config, [*callbacks, bar] if progress else callbacks, checkpoint_dir=folder
    )
    labels = torch.from_numpy(data.train_labels) if gan_config.num_classes else None
    history = fit_tracked(trainer, run_id, torch.from_numpy(data.train), labels)
    return gan.cpu(), history


@task(cache_policy=NONE)
def evaluate_and_log(gan: GAN, data: GanData, run_id: str, name: str, seed: int) -> dict[str, Any]:
    """Quality metrics and latent grids into the run; the generator logged as a pyfunc model
    and registered as `challenger`."""
    with tempfile.TemporaryDirectory(prefix="genad-gan-") as scratch:
        folder = save_generator(
            gan, Path(scratch) / "generator", feature_names=data.feature_names,
            classes=data.classes if gan.config.num_classes else [], scaler=data.scaler,
            info={"dataset": data.name, "digest": data.digest, "run_id": run_id},
        )  # fmt: skip
        bundle = load_generator(folder)
        quality = quality_metrics(bundle, data, seed=seed)
        run = tracking.Run(run_id)
        run.log_metrics(quality.metrics)
        run.log_params(quality.params)
        for artifact, text in quality.artifacts.items():
            run.log_text(text, artifact)
        for artifact, image in quality.images.items():
            run.log_image(image, artifact)
        log_latent_grids(run, bundle, seed)
        version = servables.publish("generator", folder, name, run_id)
    return {**quality.metrics, "version": version}


def log_latent_grids(run: tracking.Run, bundle: GeneratorBundle, seed: int) -> None:
    """Linear and spherical interpolations between latent pairs (images only; one class per
    row for a conditional GAN) into `run`; for a StyleGAN, z and w interpolations of
    the same pairs side by side instead."""
    if len(bundle.sample_shape) != 3:
        return
    if bundle.styled:  # StyleGAN: the same pairs interpolated in z and in w, row by row
        grid = z_and_w_interpolation_grid(bundle.gan, seed=seed)  # type: ignore[arg-type]
        run.log_image(grid, "latent/interpolation_z_vs_w.png")
        return
    rows, classes = INTERPOLATION_ROWS, bundle.gan.config.num_classes
    labels = torch.arange(rows) % classes if classes else None
    for method in INTERPOLATIONS:
        grid = interpolation_grid(bundle.gan, rows=rows, method=method, seed=seed, labels=labels)
        run.log_image(grid, f"latent/interpolation_{method}.png")


def resolved_config(configs: tuple[GANConfig, GANTrainerConfig], data: GanData) -> dict[str, Any]:
    """Everything needed to rebuild the run: both configs, the classes, the data, versions."""
    gan_config, train_config = configs
    return {
        "gan": gan_config.to_dict(),
        "trainer": train_config.to_dict(),
        "classes": data.classes,
        "data": {"name": data.name, "digest": data.digest, "rows": len(data.train),
                 "reference": data.reference_source, "standardised": data.scaler is not None},
        "torch": torch.__version__,
        "numpy": np.__version__,
    }  # fmt: skip


@flow(name="train-gan", log_prints=True)
def train_gan_flow(
    dataset: str = "fashion-mnist",
    gan: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    *,
    model_name: str | None = None,
    split: str | None = None,
    label_column: str | None = None,
    max_rows: int | None = None,
    holdout_fraction: float = 0.2,
    reference_rows: int = 2000,
    seed: int = 0,
    progress: bool = False,
    checkpoint_dir: str | None = None,
) -> dict[str, Any]:
    """Train a GAN on `dataset`, log it and register its generator as `challenger`.

    `gan` holds GANConfig fields plus `conditional` (bool: one class per label value);
    `trainer` holds GANTrainerConfig fields. `max_rows` caps the training rows (a seeded
    subset). Quality metrics compare samples with up to `reference_rows` real rows that were
    not trained on: a catalog image set's test split, else a held-out `holdout_fraction`.
    Returns the run id, the registered version, the epochs run and the quality metrics.

    `checkpoint_dir`: checkpoint every epoch there; a run of the flow with the same folder
    (same dataset and settings, else ValueError) resumes training and its MLflow run.
    """
    logger = get_run_logger()
    with user_settings():
        spec = GanDataSpec(dataset, split, label_column, max_rows, holdout_fraction, reference_rows)
    name = model_name or default_model_name(dataset).replace("genad-", "genad-gan-", 1)
    trainer_config(trainer, seed)  # fail before reading any data
    data = load_data(spec, seed)
    configs = resolve_configs(gan, trainer, data, seed)  # fail before any run is created
    identity = {"model_name": name, "spec": dataclasses.asdict(spec), "digest": data.digest,
                "seed": seed, **resolved_config(configs, data)}  # fmt: skip
    run_id = resumed_or_new_run(
        checkpoint_dir, identity, lambda: start_run(spec, data, configs, name)
    )
    model, history = fit_gan(data, configs, run_id, progress, checkpoint_dir)
    tracking.Run(run_id).log_metrics({"epochs_run": len(history)})
    result = evaluate_and_log(model, data, run_id, name, configs[1].seed)
    logger.info("registered %s version %s as challenger: %s", name, result["version"], result)
    return {"model_name": name, "run_id": run_id, "epochs_run": len(history), **result}

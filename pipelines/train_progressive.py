"""`train_progressive_flow`: grow a Progressive GAN or a StyleGAN, log the run to MLflow,
register the generator as `challenger`.

Images whose side is not a power of two (28x28 Fashion-MNIST / MNIST) are zero-padded to the
next one (32x32); quality metrics crop the samples back. The run logs its parameters and
resolved configuration, every phase's losses (stage, resolution, alpha, images), one sample
grid per stage (`samples/stage_<k>_<r>x<r>.png`, from one fixed latent batch, upsampled to full
size), the interpolation grids (StyleGAN: z and w side by side) and the quality metrics.
Checkpoints are written per stage to `checkpoint_dir` (and logged under `checkpoints/` when
asked); `resume_from` continues a run from one of them at the next stage.
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from anomaly.data.gan_data import GanData, GanDataSpec
from anomaly.errors import UserInputError, user_settings
from anomaly.packaged.scoring import default_feature_names
from generative.gan import TrainingDivergedError
from generative.gan.latent import image_grid
from generative.progressive.config import START_RESOLUTION
from generative.progressive.model import ProgressiveModel
from generative.progressive.trainer import ProgressiveTrainer, ProgressiveTrainerConfig
from generative.registry import MODEL_FAMILIES, build_model
from generative.training import Callback, ProgressBar
from pipelines import tracking
from pipelines.train import TRAIN_EXPERIMENT, MlflowEpochLogger, default_model_name
from pipelines.train_gan import GRID_COLUMNS, evaluate_and_log, load_data

PROGRESSIVE_FAMILIES = ("progan", "stylegan")
DATA_FIELDS = ("data_shape",)  # set by the data, not by the caller


class StageGridLogger(Callback):
    """After each stage: the samples of one fixed latent batch at that stage (upsampled to
    full size) as `samples/stage_<k>_<r>x<r>.png`, and the stage's checkpoint under
    `checkpoints/` when `log_checkpoints`."""

    def __init__(self, run_id: str, latent_dim: int, *, seed: int, log_checkpoints: bool) -> None:
        self.run = tracking.Run(run_id)
        self.z = torch.randn(
            GRID_COLUMNS**2, latent_dim, generator=torch.Generator().manual_seed(seed)
        )
        self.log_checkpoints = log_checkpoints

    def on_stage_end(self, trainer: ProgressiveTrainer, stage: int) -> None:
        """Log the grid (and checkpoint) of the stage just finished."""
        model = trainer.model
        device = next(model.parameters()).device
        options = {"stage": stage, "alpha": 1.0}
        if model.truncation_space == "w":
            options["noise_mode"] = "const"
        images = model.generate(self.z.to(device), **options)
        side = START_RESOLUTION * 2**stage
        name = f"stage_{stage}_{side}x{side}"
        self.run.log_image(image_grid(images, GRID_COLUMNS), f"samples/{name}.png")
        if self.log_checkpoints and trainer.checkpoints:
            self.run.log_artifacts(trainer.checkpoints[-1], f"checkpoints/{name}")


def pad_to_power_of_two(data: GanData) -> GanData:
    """Training images zero-padded (equally per side) to the next power-of-two side."""
    side = data.train.shape[-1]
    target = max(START_RESOLUTION, 1 << (side - 1).bit_length())
    if target == side:
        return data
    before = (target - side) // 2
    pad = (before, target - side - before, before, target - side - before)
    train = F.pad(torch.from_numpy(data.train), pad).numpy()
    names = default_feature_names(tuple(train.shape[1:]))
    return dataclasses.replace(data, train=train, feature_names=names)


def resolve_configs(
    family: str,
    model: dict[str, Any] | None,
    trainer: dict[str, Any] | None,
    data: GanData,
    seed: int,
) -> tuple[Any, ProgressiveTrainerConfig]:
    """The family's config (data_shape from the data) and the trainer config (seed = the
    flow's unless given). Raises ValueError on an unknown family, key or data-owned key."""
    if family not in PROGRESSIVE_FAMILIES:
        raise UserInputError(f"family must be one of {PROGRESSIVE_FAMILIES}, got {family!r}")
    if not data.is_image:
        raise UserInputError(f"{family} generates images; {data.name} is a table")
    values = dict(model or {})
    owned = sorted(set(values) & set(DATA_FIELDS))
    if owned:
        raise UserInputError(f"{owned} are set from the data; remove them from the model config")
    config_class = MODEL_FAMILIES[family][0]
    with user_settings():
        config = config_class.from_dict({**values, "data_shape": data.train.shape[1:]})
        return config, ProgressiveTrainerConfig.from_dict({"seed": seed, **(trainer or {})})


@task(cache_policy=NONE)
def start_run(spec: GanDataSpec, data: GanData, family: str, configs: tuple, name: str) -> str:
    """Create the MLflow run: tags, parameters, the data set and the resolved configuration."""
    model_config, train_config = configs
    tags = {"genad.model_name": name, "genad.flow": f"train-{family}"}
    with tracking.new_run(TRAIN_EXPERIMENT, f"train-{name}", tags) as run:
        run.log_params({f"data.{k}": v for k, v in dataclasses.asdict(spec).items()})
        run.log_params({"data.rows": len(data.train), "data.digest": data.digest,
                        "data.reference": data.reference_source, "family": family})  # fmt: skip
        run.log_configs({"model": model_config, "trainer": train_config})
        run.log_dict(
            {"family": family, "model": model_config.to_dict(), "trainer": train_config.to_dict(),
             "data": {"name": data.name, "digest": data.digest, "rows": len(data.train),
                      "padded_shape": list(data.train.shape[1:])},
             "torch": torch.__version__, "numpy": np.__version__},
            "config/resolved.json",
        )  # fmt: skip
    return run.run_id


@task(cache_policy=NONE)
def fit_progressive(
    family: str, data: GanData, configs: tuple, run_id: str, options: dict[str, Any]
) -> tuple[ProgressiveModel, list[dict[str, float]]]:
    """Grow the model, logging phases and stage grids; on divergence the run is marked
    FAILED with the message as `divergence.txt` and the error raised again."""
    model_config, train_config = configs
    torch.manual_seed(train_config.seed)  # seeded initial weights: a rerun is the same run
    model = build_model(family, model_config)
    callbacks: list[Callback] = [
        MlflowEpochLogger(run_id),
        StageGridLogger(run_id, model_config.latent_dim, seed=train_config.seed,
                        log_checkpoints=options["log_checkpoints"]),
    ]  # fmt: skip
    if options["progress"]:
        callbacks.append(PhaseProgress(f"growing {family}"))
    with tempfile.TemporaryDirectory(prefix="genad-progressive-") as scratch:
        folder = options["checkpoint_dir"] or scratch
        trainer = ProgressiveTrainer(model, train_config, callbacks, checkpoint_dir=folder)
        try:
            history = trainer.fit(torch.from_numpy(data.train), resume_from=options["resume_from"])
        except TrainingDivergedError as error:
            tracking.Run(run_id).mark_diverged(str(error))
            raise
    return model.cpu(), history


class PhaseProgress(ProgressBar):
    """The progress bar counts phases of the growth schedule."""

    def on_train_begin(self, trainer: ProgressiveTrainer) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=len(trainer.schedule),
            initial=trainer.phase_index,
            desc=self.description,
            leave=False,
        )


@flow(name="train-progressive", log_prints=True)
def train_progressive_flow(
    family: str = "stylegan",
    dataset: str = "fashion-mnist",
    model: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    *,
    model_name: str | None = None,
    split: str | None = None,
    max_rows: int | None = None,
    holdout_fraction: float = 0.2,
    reference_rows: int = 2000,
    seed: int = 0,
    checkpoint_dir: str | None = None,
    resume_from: str | None = None,
    log_checkpoints: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Grow a `family` ("progan" or "stylegan") generator on the images of `dataset`, log it
    and register it as `challenger` (a generator pyfunc like `train_gan_flow`'s).

    `model` holds the family's config fields (ProGANConfig / StyleGANConfig), `trainer`
    ProgressiveTrainerConfig fields (schedule, budget). Returns the run id, the registered
    version, the phases run, the stage reached and the quality metrics.
    """
    logger = get_run_logger()
    with user_settings():
        spec = GanDataSpec(dataset, split, None, max_rows, holdout_fraction, reference_rows)
    name = model_name or default_model_name(dataset).replace("genad-", f"genad-{family}-", 1)
    if family not in PROGRESSIVE_FAMILIES:  # fail before reading any data
        raise UserInputError(f"family must be one of {PROGRESSIVE_FAMILIES}, got {family!r}")
    with user_settings():
        ProgressiveTrainerConfig.from_dict({"seed": seed, **(trainer or {})})
    data = pad_to_power_of_two(load_data(spec, seed))
    configs = resolve_configs(family, model, trainer, data, seed)
    run_id = start_run(spec, data, family, configs, name)
    options = {"checkpoint_dir": checkpoint_dir, "resume_from": resume_from,
               "log_checkpoints": log_checkpoints, "progress": progress}  # fmt: skip
    fitted, history = fit_progressive(family, data, configs, run_id, options)
    stage, alpha = fitted.progress.tolist()
    reached = {"phases_run": len(history), "stage_reached": stage, "alpha_reached": alpha}
    tracking.Run(run_id).log_metrics(reached)
    result = evaluate_and_log(fitted, data, run_id, name, configs[1].seed)
    logger.info("registered %s version %s as challenger: %s", name, result["version"], result)
    return {"model_name": name, "run_id": run_id, "phases_run": len(history),
            "stage_reached": int(stage), **result}  # fmt: skip

"""`train_cyclegan_flow`: train a CycleGAN, log the run to MLflow, register the translator as
`challenger`.

The run logs its parameters, the resolved configuration, per-epoch losses (`epoch_d_a`,
`epoch_d_b`, `epoch_g_adv`, `epoch_cycle`, `epoch_identity`, `epoch_g_total`), a per-epoch
translation grid of one fixed batch of test images (`translations/epoch_001.png`, ...: rows
A | G_AB(A) | G_BA(G_AB(A)) | B | G_BA(B) | G_AB(G_BA(B))), and final metrics on the test
images for the trained model and for the untrained one (its initial weights): cycle errors
and, when the transform T relating the domains is known, the translation errors
|G_AB(x) - T(x)| and |G_BA(y) - T^-1(y)| with the identity map's errors as a baseline
(`generative.cyclegan.evaluation`). When domain B's training images have labels, a domain-B
classifier (a `FeatureNet` trained inside the flow on B's training images and labels, so it
knows what a digit looks like *in domain B*) reports the share of G_AB(test A) it labels as
the digit it came from (`accuracy_ab`), its ceiling on T(test A) (`accuracy_target`) and the
untrained baseline. A diverged run keeps what it logged, is marked FAILED, and fails the flow.

With a `checkpoint_dir` the flow records its MLflow run id there (`run.json`) and the trainer
checkpoints every epoch in its `trainer/` subfolder: a run of the flow with the same folder
after a crash (even kill -9) resumes training from the latest checkpoint and logs into the same
MLflow run.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from anomaly.data.cyclegan_data import CycleData, CycleDataSpec, load_cycle_data
from anomaly.errors import UserInputError, user_settings
from anomaly.packaged.translation import save_translator
from generative.cyclegan import CycleGAN, CycleGANConfig, CycleGANTrainer, CycleGANTrainerConfig
from generative.cyclegan.evaluation import translation_metrics
from generative.cyclegan.transforms import get_transform
from generative.gan.latent import image_grid
from generative.metrics import FeatureNet, FeatureNetConfig, train_feature_net
from generative.training import Callback, ProgressBar
from pipelines import servables, tracking
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
DATA_FIELDS = ("image_shape",)  # set by the data, not by the caller
CLASSIFIER_NET = {"channels": (16, 32), "feature_dim": 64}


class TranslationGridLogger(Callback):
    """After every epoch, log the translations of one fixed batch of test images as a grid
    (`translations/epoch_001.png`, ...), so epochs are comparable."""

    def __init__(self, run_id: str, test_a: torch.Tensor, test_b: torch.Tensor) -> None:
        self.run = tracking.Run(run_id)
        self.a, self.b = test_a[:GRID_COLUMNS], test_b[:GRID_COLUMNS]

    def on_epoch_end(self, trainer: CycleGANTrainer, epoch: int, logs: dict[str, float]) -> None:
        """Translate the fixed batch with the current weights and log the grid."""
        artifact = f"translations/epoch_{epoch + 1:03d}.png"
        self.run.log_image(translation_grid(trainer.model, self.a, self.b), artifact)


def translation_grid(model: CycleGAN, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Rows: A, G_AB(A), G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B)) (one column per image)."""
    fake_b, fake_a = model.translate(a, "a_to_b"), model.translate(b, "b_to_a")
    rows = [a, fake_b, model.translate(fake_b, "b_to_a"), b, fake_a, model.translate(fake_a)]
    return image_grid(torch.cat([row.cpu() for row in rows]), len(a))


@task(**io_task_options(2, 2), cache_policy=NONE)
def load_data(spec: CycleDataSpec, seed: int) -> CycleData:
    """Read the data (retried: it may be downloaded) and cut them into the two domains."""
    return load_cycle_data(spec, seed=seed)


def trainer_config(values: dict[str, Any] | None, seed: int) -> CycleGANTrainerConfig:
    """CycleGANTrainerConfig from a dict (seed = `seed` unless given); unknown keys refused."""
    with user_settings():
        return CycleGANTrainerConfig.from_dict({"seed": seed, **(values or {})})


def resolve_configs(
    cyclegan: dict[str, Any] | None, trainer: dict[str, Any] | None, data: CycleData, seed: int
) -> tuple[CycleGANConfig, CycleGANTrainerConfig]:
    """The CycleGAN config (image_shape from the data) and the trainer config. Raises
    ValueError on unknown or data-owned keys."""
    values = dict(cyclegan or {})
    owned = sorted(set(values) & set(DATA_FIELDS))
    if owned:
        raise UserInputError(f"{owned} are set from the data; remove them from the CycleGAN config")
    values["image_shape"] = data.image_shape
    with user_settings():
        return CycleGANConfig.from_dict(values), trainer_config(trainer, seed)


def resolved_config(
    configs: tuple[CycleGANConfig, CycleGANTrainerConfig], data: CycleData, spec: CycleDataSpec
) -> dict[str, Any]:
    """Everything needed to rebuild the run: both configs, the data, versions."""
    model_config, train_config = configs
    return {
        "cyclegan": model_config.to_dict(),
        "trainer": train_config.to_dict(),
        "data": {**dataclasses.asdict(spec), "digest": data.digest, "rows_a": len(data.train_a),
                 "rows_b": len(data.train_b), "test": data.test_source},
        "torch": torch.__version__,
        "numpy": np.__version__,
    }  # fmt: skip


@task(cache_policy=NONE)
def start_run(
    spec: CycleDataSpec,
    data: CycleData,
    configs: tuple[CycleGANConfig, CycleGANTrainerConfig],
    name: str,
) -> str:
    """Create the MLflow run: tags, parameters, the data, the resolved configuration."""
    model_config, train_config = configs
    tags = {"genad.model_name": name, "genad.flow": "train-cyclegan"}
    with tracking.new_run(TRAIN_EXPERIMENT, f"train-{name}", tags) as run:
        run.log_params({f"data.{k}": v for k, v in dataclasses.asdict(spec).items()})
        run.log_params(
            {"data.rows_a": len(data.train_a), "data.rows_b": len(data.train_b),
             "data.digest": data.digest, "data.test": data.test_source}
        )  # fmt: skip
        run.log_configs(
            {"cyclegan": model_config, "trainer": train_config},
            resolved_config(configs, data, spec),
        )
    return run.run_id


@task(cache_policy=NONE)
def fit_cyclegan(
    data: CycleData,
    configs: tuple[CycleGANConfig, CycleGANTrainerConfig],
    run_id: str,
    progress: bool,
    checkpoint_dir: str | None = None,
) -> tuple[CycleGAN, CycleGAN, list[dict[str, float]]]:
    """Train (initial weights drawn from the trainer's seed), logging every epoch's losses and
    translation grid, resuming from the latest checkpoint in `checkpoint_dir`/trainer when
    there is one; returns (trained, untrained copy, history)."""
    model_config, train_config = configs
    torch.manual_seed(train_config.seed)
    model = CycleGAN(model_config)
    untrained = copy.deepcopy(model).eval()
    test_a, test_b = data.tensors("test_a"), data.tensors("test_b")
    callbacks: list[Callback] = [
        MlflowEpochLogger(run_id),
        TranslationGridLogger(run_id, test_a, test_b),
    ]
    if progress:
        callbacks.append(ProgressBar("training CycleGAN"))
    folder = None if checkpoint_dir is None else Path(checkpoint_dir) / TRAINER_FOLDER
    trainer = CycleGANTrainer(model, train_config, callbacks, checkpoint_dir=folder)
    history = fit_tracked(trainer, run_id, data.tensors("train_a"), data.tensors("train_b"))
    return model.cpu(), untrained, history


def domain_classifier(
    data: CycleData, *, epochs: int, rows: int | None, seed: int
) -> FeatureNet | None:
    """A FeatureNet trained on (up to `rows` of) domain B's training images and labels; None
    when B has no labels or A's test images none to compare with."""
    if data.train_b_labels is None or data.test_a_labels is None or epochs < 1:
        return None
    X, y = data.train_b, data.train_b_labels
    if rows is not None and rows < len(X):
        keep = np.sort(np.random.default_rng(seed).choice(len(X), rows, replace=False))
        X, y = X[keep], y[keep]
    classes = int(max(y.max(), data.test_a_labels.max())) + 1
    config = FeatureNetConfig(input_shape=data.image_shape, num_classes=max(classes, 2),
                              **CLASSIFIER_NET)  # fmt: skip
    return train_feature_net(X, y, config, epochs=epochs, seed=seed)


def evaluation_metrics(
    trained: CycleGAN, untrained: CycleGAN, data: CycleData, classifier: FeatureNet | None
) -> dict[str, float]:
    """The trained model's metrics, and the untrained model's with the suffix `_untrained`."""
    options = {
        "transform": None if data.transform is None else get_transform(data.transform),
        "classify_b": None if classifier is None else classifier.predict,
        "labels_a": None if data.test_a_labels is None else torch.from_numpy(data.test_a_labels),
    }
    test_a, test_b = data.tensors("test_a"), data.tensors("test_b")
    metrics = translation_metrics(trained, test_a, test_b, **options)
    baseline = translation_metrics(untrained, test_a, test_b, **options)
    for key, value in baseline.items():
        if not key.startswith(("identity_map", "accuracy_target")):
            metrics[f"{key}_untrained"] = value
    return metrics


@task(cache_policy=NONE)
def evaluate_and_log(
    models: tuple[CycleGAN, CycleGAN],
    data: CycleData,
    run_id: str,
    name: str,
    classifier_options: dict[str, Any],
) -> dict[str, Any]:
    """Final metrics into the run; the translator logged as a pyfunc model and registered
    as `challenger`."""
    trained, untrained = models
    classifier = domain_classifier(data, **classifier_options)
    metrics = evaluation_metrics(trained, untrained, data, classifier)
    with tempfile.TemporaryDirectory(prefix="genad-cyclegan-") as scratch:
        info = {"dataset": data.name, "transform": data.transform, "digest": data.digest,
                "run_id": run_id}  # fmt: skip
        folder = save_translator(trained, Path(scratch) / "translator", info=info)
        run = tracking.Run(run_id)
        run.log_metrics(metrics)
        run.log_params({f"classifier.{k}": v for k, v in classifier_options.items()})
        run.log_dict(metrics, "evaluation/translation.json")
        version = servables.publish("translator", folder, name, run_id)
    return {**metrics, "version": version}


def default_name(spec: CycleDataSpec) -> str:
    """`genad-cyclegan-<dataset>-<transform>` or `genad-cyclegan-<domain a>-<domain b>`."""
    if spec.dataset is not None:
        parts = [spec.dataset, str(spec.transform).replace("_", "-")]
    else:
        parts = [spec.domain_a, spec.domain_b]
    stems = [default_model_name(str(p)).removeprefix("genad-") for p in parts]
    return "genad-cyclegan-" + "-".join(stems)


@flow(name="train-cyclegan", log_prints=True)
def train_cyclegan_flow(
    dataset: str | None = None,
    transform: str | None = None,
    cyclegan: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    *,
    domain_a: str | None = None,
    domain_b: str | None = None,
    model_name: str | None = None,
    max_rows: int | None = None,
    test_rows: int = 500,
    holdout_fraction: float = 0.2,
    classifier_epochs: int = 2,
    classifier_rows: int | None = 10_000,
    seed: int = 0,
    progress: bool = False,
    checkpoint_dir: str | None = None,
) -> dict[str, Any]:
    """Train a CycleGAN between two image domains, log it and register it as `challenger`.

    Domains: `dataset` and `transform` (A = one half of the training images, B = T of the
    other half; e.g. "mnist" and "invert_rot90"), or `domain_a` and `domain_b` (two data
    sets, optionally with the `transform` that relates them). `cyclegan` holds
    CycleGANConfig fields, `trainer` CycleGANTrainerConfig fields. `max_rows` caps the
    training images per domain; `test_rows` the test images. `classifier_epochs` (0 = none)
    and `classifier_rows` set the domain-B classifier. Returns the run id, the registered
    version, the epochs run and the final metrics. `checkpoint_dir`: checkpoint every epoch
    there; a run with the same folder (same data and settings) resumes training and its run.
    """
    logger = get_run_logger()
    with user_settings():
        spec = CycleDataSpec(dataset, transform, domain_a, domain_b, max_rows, test_rows,
                             holdout_fraction)  # fmt: skip
    name = model_name or default_name(spec)
    trainer_config(trainer, seed)  # fail before reading any data
    data = load_data(spec, seed)
    configs = resolve_configs(cyclegan, trainer, data, seed)  # fail before any run is created
    identity = {"model_name": name, "seed": seed, **resolved_config(configs, data, spec)}
    run_id = resumed_or_new_run(
        checkpoint_dir, identity, lambda: start_run(spec, data, configs, name)
    )
    trained, untrained, history = fit_cyclegan(data, configs, run_id, progress, checkpoint_dir)
    tracking.Run(run_id).log_metrics({"epochs_run": len(history)})
    options = {"epochs": classifier_epochs, "rows": classifier_rows, "seed": seed}
    result = evaluate_and_log((trained, untrained), data, run_id, name, options)
    logger.info("registered %s version %s as challenger: %s", name, result["version"], result)
    return {"model_name": name, "run_id": run_id, "epochs_run": len(history), **result}

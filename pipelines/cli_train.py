"""The `genad train` commands (vae, gan, progan, stylegan, cyclegan) and the option helpers they
share with the other commands: JSON options, flags that set config fields, the printed result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from anomaly.detector_params import refuse_renamed
from anomaly.errors import InputNotFoundError, UserInputError

# `genad train gan` flags -> the GANConfig / GANTrainerConfig field they set
GAN_FLAGS = ("loss", "architecture", "latent_dim", "base_channels", "ema_decay", "spectral_norm")
TRAINER_FLAGS = (
    "epochs", "batch_size", "n_critic", "optimizer", "augment", "ada_target", "r1_gamma",
    "lr_decay_start",
)  # fmt: skip
# `genad train cyclegan` flags -> the CycleGANConfig / CycleGANTrainerConfig field they set
CYCLEGAN_FLAGS = ("base_channels", "residual_blocks", "lambda_cycle", "lambda_identity",
                  "history_size")  # fmt: skip
CYCLEGAN_TRAINER_FLAGS = ("epochs", "batch_size", "max_steps", "decay_fraction")


# `genad train progan|stylegan` flags -> the ProgressiveTrainerConfig field they set
SCHEDULE_FLAGS = ("batch_size", "fade_images", "stable_images", "final_images", "lr", "augment",
                  "ada_target", "lr_decay_start")  # fmt: skip
PROGRESSIVE_MODEL_FLAGS = ("loss", "r1_gamma", "channel_base", "max_channels")
# Flags passed on to the training flows as the keyword arguments of the same name
VAE_OPTIONS = ("model_name", "split", "label_column", "validation_fraction", "seed",
               "checkpoint_dir")  # fmt: skip
GAN_OPTIONS = ("model_name", "split", "label_column", "max_rows", "holdout_fraction",
               "reference_rows", "seed", "checkpoint_dir")  # fmt: skip
CYCLEGAN_OPTIONS = ("domain_a", "domain_b", "model_name", "max_rows", "test_rows",
                    "classifier_epochs", "seed", "checkpoint_dir")  # fmt: skip
PROGRESSIVE_OPTIONS = ("model_name", "split", "max_rows", "reference_rows", "seed",
                       "checkpoint_dir", "resume_from", "log_checkpoints")  # fmt: skip


def json_option(value: str | None, flag: str) -> dict[str, Any]:
    """A JSON object given as text or as a .json file; {} when the flag is absent."""
    if not value:
        return {}
    if value.endswith(".json") and not Path(value).is_file():
        raise InputNotFoundError(f"{flag}: no such file: {value}")
    text = Path(value).read_text() if value.endswith(".json") else value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserInputError(f"{flag} is not valid JSON ({error})") from error
    if not isinstance(parsed, dict):
        raise UserInputError(f"{flag} must be a JSON object, got {type(parsed).__name__}")
    return parsed


def flag_settings(args: argparse.Namespace, option: str, flags: tuple[str, ...]) -> dict[str, Any]:
    """Settings: the JSON option `option` (e.g. "gan_config" for --gan-config), then those of
    `flags` that were given."""
    settings = json_option(getattr(args, option), "--" + option.replace("_", "-"))
    settings.update({k: getattr(args, k) for k in flags if getattr(args, k) is not None})
    return settings


def options(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The flags `names` as keyword arguments of the same names."""
    return {name: getattr(args, name) for name in names}


def printed(result: dict[str, Any]) -> int:
    """Print a flow's result as JSON; the exit status 0."""
    print(json.dumps(result, indent=2, default=str))
    return 0


DETECTOR_FLAGS = (
    "epochs",
    "latent_layers",
    "score_method",
    "n_samples",
    "target_fpr",
    "contamination",
    "correction",
    "trim_fraction",
    "refit",
    "refit_folds",
    "teacher_decay",
    "input_mask",
    "scaling",
    "likelihood",
    "min_steps",
    "patience",
)


def detector_config(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    """VAEDetector parameters: defaults, then --config JSON, then the explicit flags. The
    --contamination flag without --target-fpr chooses the contamination rule, so it drops a
    `target_fpr` of the defaults or the config (which would otherwise take precedence)."""
    if getattr(args, "score", None) is not None:
        raise UserInputError("--score was renamed to --score-method (same choices)")
    config = {**defaults, **json_option(args.config, "--config")}
    refuse_renamed("--config", config)
    if getattr(args, "contamination", None) is not None and args.target_fpr is None:
        config.pop("target_fpr", None)
    for key in DETECTOR_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    if isinstance(config.get("hidden_dims"), list):
        config["hidden_dims"] = tuple(config["hidden_dims"])
    return config


def cmd_train(args: argparse.Namespace) -> int:
    """Train a VAE detector, log it to MLflow and register it as `challenger`."""
    from pipelines.train import train_vae_flow

    config = detector_config(args, {"verbose": True})
    return printed(
        train_vae_flow(args.dataset, config, novelty_classes=args.novelty_class,
                       **options(args, VAE_OPTIONS))
    )  # fmt: skip


def lr_of_both_nets(trainer: dict[str, Any], lr: float | None) -> dict[str, Any]:
    """`trainer` with --lr (when given) as the learning rate of the generator(s) and the
    discriminator(s)."""
    if lr is not None:
        trainer.update(lr_generator=lr, lr_discriminator=lr)
    return trainer


def cmd_train_gan(args: argparse.Namespace) -> int:
    """Train a GAN, log it to MLflow and register its generator as `challenger`."""
    from pipelines.train_gan import train_gan_flow

    gan = flag_settings(args, "gan_config", GAN_FLAGS)
    if args.conditional:
        gan["conditional"] = True
    trainer = lr_of_both_nets(flag_settings(args, "trainer_config", TRAINER_FLAGS), args.lr)
    return printed(
        train_gan_flow(args.dataset, gan, trainer, progress=sys.stderr.isatty(),
                       **options(args, GAN_OPTIONS))
    )  # fmt: skip


def cmd_train_cyclegan(args: argparse.Namespace) -> int:
    """Train a CycleGAN between two image domains, log it to MLflow and register it as
    `challenger`."""
    from pipelines.train_cyclegan import train_cyclegan_flow

    model = flag_settings(args, "cyclegan_config", CYCLEGAN_FLAGS)
    trainer = flag_settings(args, "trainer_config", CYCLEGAN_TRAINER_FLAGS)
    trainer = lr_of_both_nets(trainer, args.lr)
    return printed(
        train_cyclegan_flow(args.dataset, args.transform, model, trainer,
                            progress=sys.stderr.isatty(), **options(args, CYCLEGAN_OPTIONS))
    )  # fmt: skip


def progressive_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model and trainer config fields of `genad train progan|stylegan`: the JSON options,
    then the flags given (`--fixed-resolution`, StyleGAN's only, sets progressive=False)."""
    model = flag_settings(args, "model_config", PROGRESSIVE_MODEL_FLAGS)
    trainer = flag_settings(args, "trainer_config", SCHEDULE_FLAGS)
    if getattr(args, "fixed_resolution", False):
        model["progressive"] = False
    if args.budget_s is not None:
        trainer["max_seconds"] = args.budget_s
    return model, trainer


def cmd_train_progressive(args: argparse.Namespace) -> int:
    """Grow a Progressive GAN or StyleGAN, log it to MLflow, register it as `challenger`."""
    from pipelines.train_progressive import train_progressive_flow

    model, trainer = progressive_settings(args)
    return printed(
        train_progressive_flow(args.progressive_family, args.dataset, model, trainer,
                               progress=sys.stderr.isatty(), **options(args, PROGRESSIVE_OPTIONS))
    )  # fmt: skip

"""The `genad` command line: demo, train vae/gan/progan/stylegan/cyclegan, promote, score,
synth, translate,
schedule score, models list.

Every command runs the same Prefect flows and MLflow store as the Python API. Bad input
(a missing file, wrong columns, an unknown model or alias) prints one clear line on stderr and
exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from anomaly.atomic import check_output_folder
from anomaly.data import DatasetFormatError, DatasetNotFoundError, UnknownDatasetError
from anomaly.detector_params import refuse_renamed
from anomaly.scoring import InputColumnsError
from generative.gan import TrainingDivergedError
from pipelines.preflight import EnvironmentNotReadyError, StepFailedError, ensure_prefect_home

USER_ERRORS = (
    FileNotFoundError,
    DatasetFormatError,
    DatasetNotFoundError,
    UnknownDatasetError,
    InputColumnsError,
    LookupError,
    ValueError,
    MlflowException,  # e.g. an unreachable tracking server
)
RUN_FAILURES = (TrainingDivergedError, EnvironmentNotReadyError, StepFailedError)


# `genad train gan` flags -> the GANConfig / GANTrainerConfig field they set
GAN_FLAGS = ("loss", "architecture", "latent_dim", "base_channels", "ema_decay")
TRAINER_FLAGS = ("epochs", "batch_size", "n_critic", "optimizer")
# `genad train cyclegan` flags -> the CycleGANConfig / CycleGANTrainerConfig field they set
CYCLEGAN_FLAGS = ("base_channels", "residual_blocks", "lambda_cycle", "lambda_identity",
                  "history_size")  # fmt: skip
CYCLEGAN_TRAINER_FLAGS = ("epochs", "batch_size", "max_steps", "decay_fraction")


def json_option(value: str | None, flag: str) -> dict[str, Any]:
    """A JSON object given as text or as a .json file; {} when the flag is absent."""
    if not value:
        return {}
    text = Path(value).read_text() if value.endswith(".json") else value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{flag} is not valid JSON ({error})") from error
    if not isinstance(parsed, dict):
        raise ValueError(f"{flag} must be a JSON object, got {type(parsed).__name__}")
    return parsed


def detector_config(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    """VAEDetector parameters: defaults, then --config JSON, then the explicit flags. The
    --contamination flag without --target-fpr chooses the contamination rule, so it drops a
    `target_fpr` of the defaults or the config (which would otherwise take precedence)."""
    if getattr(args, "score", None) is not None:
        raise ValueError("--score was renamed to --score-method (same choices)")
    config = {**defaults, **json_option(args.config, "--config")}
    refuse_renamed("--config", config)
    if getattr(args, "contamination", None) is not None and args.target_fpr is None:
        config.pop("target_fpr", None)
    for key in ("epochs", "score_method", "n_samples", "target_fpr", "contamination", "correction"):
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    if isinstance(config.get("hidden_dims"), list):
        config["hidden_dims"] = tuple(config["hidden_dims"])
    return config


def cmd_demo(args: argparse.Namespace) -> int:
    """Train on one class of Fashion-MNIST, register, promote, batch-score the test set."""
    from pipelines.demo import demo_config, print_report, run_demo

    result = run_demo(
        dataset=args.dataset,
        normal_class=args.normal_class,
        config=detector_config(args, demo_config(args.dataset)),
        workdir=Path(args.workdir),
        model_name=args.model_name,
        seed=args.seed,
    )
    print_report(result, args.dataset, args.normal_class)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a VAE detector, log it to MLflow and register it as `challenger`."""
    from pipelines.train import train_vae_flow

    result = train_vae_flow(
        args.dataset,
        detector_config(args, {"verbose": True}),
        model_name=args.model_name,
        split=args.split,
        label_column=args.label_column,
        novelty_classes=args.novelty_class,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        checkpoint_dir=args.checkpoint_dir,
    )
    print(json.dumps(result, indent=2, default=str))
    return 0


def gan_configs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """GAN and trainer settings: --gan-config / --trainer-config JSON, then the flags."""
    gan = json_option(args.gan_config, "--gan-config")
    trainer = json_option(args.trainer_config, "--trainer-config")
    gan.update({k: getattr(args, k) for k in GAN_FLAGS if getattr(args, k) is not None})
    trainer.update({k: getattr(args, k) for k in TRAINER_FLAGS if getattr(args, k) is not None})
    if args.conditional:
        gan["conditional"] = True
    if args.lr is not None:
        trainer.update(lr_generator=args.lr, lr_discriminator=args.lr)
    return gan, trainer


def cmd_train_gan(args: argparse.Namespace) -> int:
    """Train a GAN, log it to MLflow and register its generator as `challenger`."""
    from pipelines.train_gan import train_gan_flow

    gan, trainer = gan_configs(args)
    result = train_gan_flow(
        args.dataset,
        gan,
        trainer,
        model_name=args.model_name,
        split=args.split,
        label_column=args.label_column,
        max_rows=args.max_rows,
        holdout_fraction=args.holdout_fraction,
        reference_rows=args.reference_rows,
        seed=args.seed,
        progress=sys.stderr.isatty(),
        checkpoint_dir=args.checkpoint_dir,
    )
    print(json.dumps(result, indent=2, default=str))
    return 0


def cyclegan_configs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """CycleGAN and trainer settings: --cyclegan-config / --trainer-config JSON, then flags."""
    model = json_option(args.cyclegan_config, "--cyclegan-config")
    trainer = json_option(args.trainer_config, "--trainer-config")
    model.update({k: getattr(args, k) for k in CYCLEGAN_FLAGS if getattr(args, k) is not None})
    trainer.update(
        {k: getattr(args, k) for k in CYCLEGAN_TRAINER_FLAGS if getattr(args, k) is not None}
    )
    if args.lr is not None:
        trainer.update(lr_generator=args.lr, lr_discriminator=args.lr)
    return model, trainer


def cmd_train_cyclegan(args: argparse.Namespace) -> int:
    """Train a CycleGAN between two image domains, log it to MLflow and register it as
    `challenger`."""
    from pipelines.train_cyclegan import train_cyclegan_flow

    model, trainer = cyclegan_configs(args)
    result = train_cyclegan_flow(
        args.dataset,
        args.transform,
        model,
        trainer,
        domain_a=args.domain_a,
        domain_b=args.domain_b,
        model_name=args.model_name,
        max_rows=args.max_rows,
        test_rows=args.test_rows,
        classifier_epochs=args.classifier_epochs,
        seed=args.seed,
        progress=sys.stderr.isatty(),
    )
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    """Translate images (npz or a PNG folder) with a registered CycleGAN."""
    from pipelines.translate import translate_flow

    if not Path(args.input).expanduser().exists():
        raise FileNotFoundError(f"input not found: {args.input}")
    refuse_missing_output_folder(args)
    result = translate_flow(
        args.model,
        args.input,
        args.output,
        direction=args.direction,
        fmt=args.format,
        progress=sys.stderr.isatty(),
        create_dirs=args.create_dirs,
    )
    print(
        f"translated {result['images']} images ({result['direction']}) with "
        f"{result['model_name']} v{result['model_version']} to {result['output']}; provenance "
        f"{result['output']}.provenance.json"
    )
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Draw samples from a registered generator into npz, a PNG folder or Parquet."""
    from pipelines.synth import synthesize_flow

    refuse_missing_output_folder(args)
    result = synthesize_flow(
        args.model,
        args.n,
        args.classes,
        args.output,
        seed=args.seed,
        truncation=args.truncation,
        fmt=args.format,
        progress=sys.stderr.isatty(),
        mix_seed=args.mix_seed,
        mix_layer=args.mix_layer,
        create_dirs=args.create_dirs,
    )
    counts = ", ".join(f"{label}: {count}" for label, count in result["counts"].items())
    print(
        f"wrote {result['samples']} samples ({counts}) of {result['model_name']} "
        f"v{result['model_version']} to {result['output']}; provenance "
        f"{result['output']}.provenance.json"
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Compare challenger and champion on labelled data; move champion if the gate passes."""
    from pipelines.promote import evaluate_and_promote_flow

    result = evaluate_and_promote_flow(
        args.model_name,
        args.validation,
        split=args.split,
        label_column=args.label_column,
        novelty_classes=args.novelty_class,
        holdout_fraction=None if args.all_rows else args.holdout_fraction,
        seed=args.seed,
        metric=args.metric,
        margin=args.margin,
    )
    print(json.dumps(result, indent=2, default=str))
    return 0


def score_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The batch_score_flow parameters shared by `score` and `schedule score`."""
    return {
        "model_uri": args.model_uri,
        "input": str(Path(args.input).expanduser().resolve()),
        "output": str(Path(args.output).expanduser().resolve()),
        "rows_per_partition": args.rows_per_partition,
        "chunk_rows": args.chunk_rows,
        "flag_rule": args.flag_rule,
        "flag_level": args.flag_level,
        "typicality_group_size": args.typicality_group_size,
        "typicality_level": args.typicality_level,
        "bad_rows": args.bad_rows,
        "create_dirs": args.create_dirs,
    }


def refuse_missing_output_folder(args: argparse.Namespace) -> None:
    """A missing --output folder (a typo, say) is refused here, before any flow starts, unless
    --create-dirs asks the flow to create it."""
    if not args.create_dirs:
        check_output_folder(args.output)


def cmd_score(args: argparse.Namespace) -> int:
    """Batch-score a file with a registered model (optionally on Dask workers)."""
    from pipelines.score import batch_score_flow, dask_batch_score

    if not Path(args.input).expanduser().exists():
        raise FileNotFoundError(f"input not found: {args.input}")
    refuse_missing_output_folder(args)
    parameters = score_parameters(args)
    if args.workers or args.dask_address:
        workers = args.workers or 2
        summary = dask_batch_score(address=args.dask_address, n_workers=workers, **parameters)
    else:
        summary = batch_score_flow(**parameters)
    print(
        f"scored {summary['rows']} rows with {summary['model_name']} "
        f"v{summary['model_version']}: {summary['anomalies']} flagged "
        f"({summary['anomaly_rate']:.2%}); output {summary['output']}"
    )
    if summary.get("reused_partitions"):
        print(f"resumed: {summary['reused_partitions']} partitions scored by an earlier run")
    if summary.get("rejected"):
        print(f"skipped {summary['rejected']} bad cells or lines: {summary['rejected_report']}")
    typicality = summary.get("typicality")
    if typicality and typicality.get("groups"):
        print(
            f"typicality: {typicality['atypical_groups']} of {typicality['groups']} groups of "
            f"{typicality['group_size']} rows atypical at level {typicality['level']} "
            f"(whole input p = {typicality['whole_input_p_value']:.4g}); "
            f"groups {typicality['groups_file']}"
        )
    return 0


def cmd_schedule_score(args: argparse.Namespace) -> int:
    """Serve batch scoring as a Prefect deployment on a cron schedule (needs a Prefect server)."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_URL

    from pipelines.schedule import serve_scoring
    from pipelines.score import check_typicality_options

    try:
        CronSchedule(cron=args.cron, timezone=args.timezone)
    except ValueError as error:
        raise ValueError(f"--cron {args.cron!r} is not a valid cron expression") from error
    if not PREFECT_API_URL.value():
        raise ValueError(
            "schedules run only on a real Prefect server: start one (prefect server start) "
            "and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
        )
    refuse_missing_output_folder(args)
    parameters = score_parameters(args)
    check_typicality_options(parameters["typicality_group_size"], parameters["typicality_level"])
    serve_scoring(args.name, args.cron, parameters, timezone=args.timezone)
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    """Registered models: versions, aliases and the champion's validation metrics."""
    from pipelines import tracking

    rows = tracking.list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no registered models in {tracking.tracking_uri()}")
    for row in rows:
        aliases = ", ".join(f"{a}=v{v}" for a, v in row["aliases"].items()) or "no aliases"
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in row.get("champion_metrics", {}).items())
        print(f"{row['name']}: {row['versions']} versions (latest v{row['latest']}); {aliases}")
        if metrics:
            print(f"    champion: {metrics}")
    return 0


def local_run_settings() -> contextlib.AbstractContextManager:
    """Without a Prefect server (PREFECT_API_URL unset) flows run on a temporary one that no
    automation watches, so flow-run heartbeats are turned off: Prefect 3.8.8 joins its heartbeat
    thread at the next 1-s tick when a flow ends, adding up to 1 s to every run. Runs on a real
    server (schedules, deployments) keep their heartbeats."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        return contextlib.nullcontext()
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `genad` console script."""
    from pipelines.cli_parser import build_parser

    args = build_parser(sys.modules[__name__]).parse_args(argv)
    try:
        ensure_prefect_home()
        with local_run_settings():
            return args.handler(args)
    except USER_ERRORS as error:
        print(f"genad {args.command}: error: {error}", file=sys.stderr)
        return 2
    except RUN_FAILURES as error:  # not bad input, but a run (or machine) that failed
        print(f"genad {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Data-parallel training launched by torchrun: a VAE detector or a GAN on several processes.

    torchrun --standalone --nproc_per_node=2 -m pipelines.train_ddp vae --dataset rows.csv \\
        --label-column label --config '{"epochs": 20}' --model-name genad-rows --out result
    torchrun --standalone --nproc_per_node=2 -m pipelines.train_ddp gan --dataset rows.csv \\
        --label-column label --trainer-config '{"epochs": 20}' --out result

Every rank reads the same data, cuts the same seeded splits and trains its share of each global
batch (`generative.distributed`: NCCL on GPUs, gloo on CPUs). Rank 0 alone creates the MLflow
run, logs the (all-reduced) epoch metrics, evaluates, logs and registers the model as
`challenger` (as the `train-vae` / `train-gan` flows do, without Prefect: the processes are
torchrun's), and writes `<out>/result.json` and the model folder. Without torchrun the same
command trains in one process with the same random draws.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path
from typing import Any

import torch

from anomaly.atomic import atomic_file
from generative.distributed import World, init_from_env, shutdown

DDP_FLOW_TAG = "train-ddp"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: `vae` or `gan`, the data, the settings, the output folder."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.train_ddp", description=__doc__)
    parser.add_argument("family", choices=["vae", "gan"])
    parser.add_argument("--dataset", required=True, help="a catalog name or a data file")
    parser.add_argument("--split", default=None)
    parser.add_argument("--label-column", default=None)
    parser.add_argument("--model-name", default=None, help="registered name (default from data)")
    parser.add_argument("--config", default=None, help="vae: VAEDetector parameters (JSON)")
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--gan-config", default=None, help="gan: GANConfig fields (JSON)")
    parser.add_argument("--trainer-config", default=None, help="gan: GANTrainerConfig (JSON)")
    parser.add_argument("--max-rows", type=int, default=None, help="gan: training rows cap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for result.json and the model")
    parser.add_argument(
        "--no-mlflow", action="store_true", help="gan: only write the model and result.json"
    )
    return parser.parse_args(argv)


def json_object(text: str | None, flag: str) -> dict[str, Any]:
    """A JSON object option (empty when not given)."""
    value = json.loads(text) if text else {}
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object, got {text!r}")
    return value


def train_vae(args: argparse.Namespace, world: World) -> dict[str, Any] | None:
    """Fit a VAEDetector on every rank; rank 0 logs, registers and saves it."""
    from anomaly import VAEDetector
    from anomaly.evaluation import DataSpec
    from pipelines.train import (
        MlflowEpochLogger,
        default_model_name,
        detector_params,
        evaluate_and_log,
        start_run,
    )

    spec = DataSpec(args.dataset, args.split, args.label_column, ())
    name = args.model_name or default_model_name(args.dataset)
    params = detector_params(json_object(args.config, "--config"), args.seed)
    if params.get("free_bits", 0) > 0:
        raise ValueError("free_bits clamps a batch mean: it does not split across processes")
    data = spec.load()
    holdout = data.holdout(args.validation_fraction, args.seed)
    run_id = None
    if world.is_main:
        logged = {**params, "validation_fraction": args.validation_fraction}
        run_id = start_run.fn(spec, data, logged, name)
        tag_run(run_id, world)
    callbacks = [MlflowEpochLogger(run_id)] if run_id else []
    detector = VAEDetector(**params).fit(holdout.X_train, callbacks=callbacks, world=world)
    if not world.is_main:
        return None
    metrics = evaluate_and_log.fn(detector.set_params(verbose=False), holdout, data, run_id, name)
    detector.save(Path(args.out) / "detector")
    return {"model_name": name, "run_id": run_id, "history": detector.history_, **metrics}


def train_gan(args: argparse.Namespace, world: World) -> dict[str, Any] | None:
    """Train a GAN on every rank (G and D each in DDP); rank 0 logs, registers and saves it."""
    from generative.gan import GAN, GANTrainer
    from generative.registry import save_model
    from pipelines.gan_data import GanDataSpec
    from pipelines.train import MlflowEpochLogger, default_model_name
    from pipelines.train_gan import evaluate_and_log, load_data, resolve_configs, start_run

    spec = GanDataSpec(args.dataset, args.split, args.label_column, args.max_rows)
    name = args.model_name or default_model_name(args.dataset).replace("genad-", "genad-gan-", 1)
    data = load_data.fn(spec, args.seed)
    gan_options = json_object(args.gan_config, "--gan-config")
    trainer_options = json_object(args.trainer_config, "--trainer-config")
    configs = resolve_configs(gan_options, trainer_options, data, args.seed)
    tracked = world.is_main and not args.no_mlflow
    run_id = start_run.fn(spec, data, configs, name) if tracked else None
    if run_id:
        tag_run(run_id, world)
    torch.manual_seed(configs[1].seed)  # the same initial weights on every rank
    gan = GAN(configs[0])
    callbacks = [MlflowEpochLogger(run_id)] if run_id else []
    labels = torch.from_numpy(data.train_labels) if configs[0].num_classes else None
    trainer = GANTrainer(gan, configs[1], callbacks, world=world)
    history = trainer.fit(torch.from_numpy(data.train), labels)
    if not world.is_main:
        return None
    gan = gan.cpu()
    save_model(gan, Path(args.out) / "gan")
    result = evaluate_and_log.fn(gan, data, run_id, name, configs[1].seed) if run_id else {}
    return {"model_name": name, "run_id": run_id, "history": history, **result}


def tag_run(run_id: str, world: World) -> None:
    """Mark the run as data-parallel, with the number of processes and the device type."""
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_tag(run_id, "genad.flow", DDP_FLOW_TAG)
    client.log_param(run_id, "ddp.world_size", world.size)
    client.log_param(run_id, "ddp.device", world.device.type)


def write_result(folder: Path, result: dict[str, Any]) -> None:
    """result.json, written to a temporary name and renamed."""
    with atomic_file(folder / "result.json") as staging:
        staging.write_text(json.dumps(result, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    """Run one rank of a torchrun job (or the single process without torchrun)."""
    args = parse_args(argv)
    world = init_from_env()
    train = train_vae if args.family == "vae" else train_gan
    result = train(args, world)  # a failing rank exits; torchrun then stops the others
    if result is not None:
        write_result(Path(args.out), {**result, "world_size": world.size})
    # Free the DDP wrappers (held in reference cycles) while the process group is alive: left
    # to interpreter shutdown, a reducer torn down after the group can abort the process
    # ("terminate called without an active exception", seen once on rank 1 of a GAN run).
    gc.collect()
    shutdown(world)
    return 0


if __name__ == "__main__":
    sys.exit(main())

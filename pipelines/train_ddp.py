"""Data-parallel training launched by torchrun: a VAE detector, a GAN, a CycleGAN, a Progressive
GAN or a StyleGAN on several processes.

    torchrun --standalone --nproc_per_node=2 -m pipelines.train_ddp vae --dataset rows.csv \\
        --label-column label --config '{"epochs": 20}' --model-name genad-rows --out result
    torchrun --standalone --nproc_per_node=2 -m pipelines.train_ddp gan --dataset rows.csv \\
        --label-column label --trainer-config '{"epochs": 20}' --out result
    torchrun --standalone --nproc_per_node=2 -m pipelines.train_ddp cyclegan --dataset mnist \
        --transform invert_rot90 --trainer-config '{"epochs": 5}' --out result
    torchrun --standalone --nproc_per_node=2 -m pipelines.train_ddp stylegan \
        --dataset fashion-mnist --trainer-config '{"stable_images": 20000}' --out result

Every rank reads the same data, cuts the same seeded splits and trains its share of each global
batch (`generative.distributed`: NCCL on GPUs, gloo on CPUs). Rank 0 alone creates the MLflow
run, logs the (all-reduced) epoch metrics, evaluates, logs and registers the model as
`challenger` (as the `train-vae` / `train-gan` / `train-cyclegan` / `train-progressive` flows
do, without Prefect: the processes are torchrun's), and writes `<out>/result.json` and the
model folder (`<out>/<family>`; the VAE's `<out>/detector`). Without torchrun the same command
trains in one process with the same random draws.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from anomaly.atomic import atomic_file
from generative.distributed import World, init_from_env, shutdown

DDP_FLOW_TAG = "train-ddp"
FAMILIES = ("vae", "gan", "cyclegan", "progan", "stylegan")
CLASSIFIER = {"epochs": 2, "rows": 10_000}  # cyclegan: the train-cyclegan flow's defaults


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: the family, the data, the settings, the output folder."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.train_ddp", description=__doc__)
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("--dataset", default=None, help="a catalog name or a data file")
    parser.add_argument("--split", default=None)
    parser.add_argument("--label-column", default=None)
    parser.add_argument("--model-name", default=None, help="registered name (default from data)")
    parser.add_argument("--config", default=None, help="vae: VAEDetector parameters (JSON)")
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--gan-config", default=None, help="the GANs: the model's config (JSON)")
    parser.add_argument("--trainer-config", default=None, help="the GANs: the trainer's (JSON)")
    parser.add_argument("--max-rows", type=int, default=None, help="the GANs: training rows cap")
    parser.add_argument("--transform", default=None, help="cyclegan: B = T of the other half")
    parser.add_argument("--domain-a", default=None, help="cyclegan: domain A's data set")
    parser.add_argument("--domain-b", default=None, help="cyclegan: domain B's data set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for result.json and the model")
    parser.add_argument(
        "--no-mlflow", action="store_true", help="the GANs: only write the model and result.json"
    )
    args = parser.parse_args(argv)
    if args.dataset is None and args.family != "cyclegan":
        parser.error(f"{args.family} needs --dataset")
    return args


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
    params.setdefault("trim_fraction", 0.0)  # a trimmed ELBO ranks a whole batch's rows
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
    from anomaly.data.gan_data import GanDataSpec
    from generative.gan import GAN, GANTrainer
    from pipelines.train import MlflowEpochLogger, default_model_name
    from pipelines.train_gan import load_data, resolve_configs, start_run

    spec = GanDataSpec(args.dataset, args.split, args.label_column, args.max_rows)
    name = args.model_name or default_model_name(args.dataset).replace("genad-", "genad-gan-", 1)
    data = load_data.fn(spec, args.seed)
    configs = resolve_configs(*config_options(args), data, args.seed)
    run_id = open_run(args, world, lambda: start_run.fn(spec, data, configs, name))
    torch.manual_seed(configs[1].seed)  # the same initial weights on every rank
    gan = GAN(configs[0])
    callbacks = [MlflowEpochLogger(run_id)] if run_id else []
    labels = torch.from_numpy(data.train_labels) if configs[0].num_classes else None
    trainer = GANTrainer(gan, configs[1], callbacks, world=world)
    history = trainer.fit(torch.from_numpy(data.train), labels)
    if not world.is_main:
        return None
    return publish_generator(args, (gan, data, configs[1].seed), run_id, name, history)


def train_progressive(args: argparse.Namespace, world: World) -> dict[str, Any] | None:
    """Grow a ProGAN or StyleGAN on every rank; rank 0 logs, registers and saves it."""
    from anomaly.data.gan_data import GanDataSpec
    from generative.progressive.trainer import ProgressiveTrainer
    from generative.registry import build_model
    from pipelines.train import MlflowEpochLogger, default_model_name
    from pipelines.train_gan import load_data
    from pipelines.train_progressive import pad_to_power_of_two, resolve_configs, start_run

    family = args.family
    spec = GanDataSpec(args.dataset, args.split, None, args.max_rows)
    stem = default_model_name(args.dataset)
    name = args.model_name or stem.replace("genad-", f"genad-{family}-", 1)
    data = pad_to_power_of_two(load_data.fn(spec, args.seed))
    configs = resolve_configs(family, *config_options(args), data, args.seed)
    run_id = open_run(args, world, lambda: start_run.fn(spec, data, family, configs, name))
    torch.manual_seed(configs[1].seed)  # the same initial weights on every rank
    model = build_model(family, configs[0])
    callbacks = [MlflowEpochLogger(run_id)] if run_id else []
    trainer = ProgressiveTrainer(model, configs[1], callbacks, world=world)
    history = trainer.fit(torch.from_numpy(data.train))
    if not world.is_main:
        return None
    return publish_generator(args, (model, data, configs[1].seed), run_id, name, history)


def train_cyclegan(args: argparse.Namespace, world: World) -> dict[str, Any] | None:
    """Train a CycleGAN on every rank; rank 0 logs, registers and saves it."""
    from anomaly.data.cyclegan_data import CycleDataSpec
    from generative.cyclegan import CycleGAN, CycleGANTrainer
    from generative.registry import save_model
    from pipelines.train import MlflowEpochLogger
    from pipelines.train_cyclegan import (
        default_name,
        evaluate_and_log,
        load_data,
        resolve_configs,
        start_run,
    )

    spec = CycleDataSpec(args.dataset, args.transform, args.domain_a, args.domain_b,
                         args.max_rows)  # fmt: skip
    name = args.model_name or default_name(spec)
    data = load_data.fn(spec, args.seed)
    configs = resolve_configs(*config_options(args), data, args.seed)
    run_id = open_run(args, world, lambda: start_run.fn(spec, data, configs, name))
    torch.manual_seed(configs[1].seed)  # the same initial weights on every rank
    model = CycleGAN(configs[0])
    untrained = copy.deepcopy(model).eval()
    callbacks = [MlflowEpochLogger(run_id)] if run_id else []
    trainer = CycleGANTrainer(model, configs[1], callbacks, world=world)
    history = trainer.fit(data.tensors("train_a"), data.tensors("train_b"))
    if not world.is_main:
        return None
    model = model.cpu()
    save_model(model, Path(args.out) / "cyclegan")
    options = {**CLASSIFIER, "seed": args.seed}
    result = evaluate_and_log.fn((model, untrained), data, run_id, name, options) if run_id else {}
    return {"model_name": name, "run_id": run_id, "history": history, **result}


def open_run(args: argparse.Namespace, world: World, start: Callable[[], str]) -> str | None:
    """Rank 0 creates the MLflow run with `start` and tags it (None on the other ranks and
    with --no-mlflow)."""
    run_id = start() if world.is_main and not args.no_mlflow else None
    if run_id:
        tag_run(run_id, world)
    return run_id


def publish_generator(
    args: argparse.Namespace, fitted: tuple, run_id: str | None, name: str, history: list
) -> dict[str, Any]:
    """Rank 0's end of a GAN's run: `fitted` = (model, data, seed); the model is saved to
    `<out>/<family>` and, when tracked, evaluated, logged and registered."""
    from generative.registry import save_model
    from pipelines.train_gan import evaluate_and_log

    model, data, seed = fitted
    model = model.cpu()
    save_model(model, Path(args.out) / args.family)
    result = evaluate_and_log.fn(model, data, run_id, name, seed) if run_id else {}
    return {"model_name": name, "run_id": run_id, "history": history, **result}


def config_options(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's and the trainer's settings (--gan-config, --trainer-config) as dicts."""
    return (
        json_object(args.gan_config, "--gan-config"),
        json_object(args.trainer_config, "--trainer-config"),
    )


def tag_run(run_id: str, world: World) -> None:
    """Mark the run as data-parallel, with the number of processes and the device type."""
    from pipelines.tracking import Run

    run = Run(run_id)
    run.set_tags({"genad.flow": DDP_FLOW_TAG})
    run.log_params({"ddp.world_size": world.size, "ddp.device": world.device.type})


def write_result(folder: Path, result: dict[str, Any]) -> None:
    """result.json, written to a temporary name and renamed."""
    with atomic_file(folder / "result.json") as staging:
        staging.write_text(json.dumps(result, indent=2, default=str))


TRAINERS: dict[str, Callable[[argparse.Namespace, World], dict[str, Any] | None]] = {
    "vae": train_vae,
    "gan": train_gan,
    "cyclegan": train_cyclegan,
    "progan": train_progressive,
    "stylegan": train_progressive,
}


def main(argv: list[str] | None = None) -> int:
    """Run one rank of a torchrun job (or the single process without torchrun)."""
    args = parse_args(argv)
    world = init_from_env()
    train = TRAINERS[args.family]
    result = train(args, world)  # a failing rank exits; torchrun then stops the others
    if result is not None:
        write_result(Path(args.out), {**result, "world_size": world.size})
    shutdown(world)  # frees the DDP wrappers first (see `generative.distributed.shutdown`)
    return 0


if __name__ == "__main__":
    sys.exit(main())

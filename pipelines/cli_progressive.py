"""`genad train progan` and `genad train stylegan`: grow a generator from 4x4 and register it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# flag -> the ProgressiveTrainerConfig field it sets
SCHEDULE_FLAGS = ("batch_size", "fade_images", "stable_images", "final_images", "lr")


def add_train_progressive(train: Any) -> None:
    """The `progan` and `stylegan` subcommands of `genad train`."""
    for family, label in (("progan", "a Progressive GAN"), ("stylegan", "a StyleGAN")):
        parser = train.add_parser(
            family, help=f"grow {label} from 4x4 and register its generator as `challenger`"
        )
        parser.add_argument("--dataset", required=True, help="fashion-mnist, mnist or an image npz")
        parser.add_argument("--split", default=None, help="train/test/all for image sets")
        parser.add_argument("--model-name", default=None, help=f"default genad-{family}-<data>")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--max-rows", type=int, default=None, help="train on a seeded subset")
        parser.add_argument("--reference-rows", type=int, default=2000, help="rows for FID/KID")
        parser.add_argument("--model-config", help="config fields as JSON text or a .json file")
        parser.add_argument("--trainer-config", help="ProgressiveTrainerConfig JSON or file")
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--fade-images", type=int, help="real images per fade-in phase")
        parser.add_argument("--stable-images", type=int, help="real images per stable phase")
        parser.add_argument("--final-images", type=int, help="the last stage's stable phase")
        parser.add_argument("--lr", type=float, help="Adam learning rate of both nets")
        parser.add_argument("--budget-s", type=float, help="stop after this many seconds")
        parser.add_argument("--checkpoint-dir", help="keep the per-stage checkpoints here")
        parser.add_argument("--resume-from", help="a stage checkpoint folder to continue from")
        parser.add_argument(
            "--log-checkpoints", action="store_true", help="also log them to the MLflow run"
        )
        parser.set_defaults(handler=cmd_train_progressive, progressive_family=family)


def progressive_configs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model and trainer settings: the JSON options, then the flags."""
    from pipelines.cli import json_option

    model = json_option(args.model_config, "--model-config")
    trainer = json_option(args.trainer_config, "--trainer-config")
    trainer.update({k: getattr(args, k) for k in SCHEDULE_FLAGS if getattr(args, k) is not None})
    if args.budget_s is not None:
        trainer["max_seconds"] = args.budget_s
    return model, trainer


def cmd_train_progressive(args: argparse.Namespace) -> int:
    """Grow a Progressive GAN or StyleGAN, log it to MLflow, register it as `challenger`."""
    from pipelines.train_progressive import train_progressive_flow

    model, trainer = progressive_configs(args)
    result = train_progressive_flow(
        args.progressive_family,
        args.dataset,
        model,
        trainer,
        model_name=args.model_name,
        split=args.split,
        max_rows=args.max_rows,
        reference_rows=args.reference_rows,
        seed=args.seed,
        checkpoint_dir=args.checkpoint_dir,
        resume_from=args.resume_from,
        log_checkpoints=args.log_checkpoints,
        progress=sys.stderr.isatty(),
    )
    print(json.dumps(result, indent=2, default=str))
    return 0

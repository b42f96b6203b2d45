"""Training cost per image of DCGAN, the Progressive GAN and StyleGAN at 32x32, and how much of
it each discriminator regulariser takes (issue 19: "StyleGAN costs ~18x a DCGAN image").

Every row times `--steps` training steps (one D step and one G step each, batch `--batch-size`,
after `--warmup` untimed steps) on this process's CPU clock with `--threads` torch threads and
bf16 autocast, the settings of benchmarks/progressive_quality.py. DCGAN (28x28, non-saturating
loss, its paper settings) runs through `GANTrainer.fit`: a warm-up fit, then fits of 20 and
20 + 10 x `--steps` G steps, whose difference is the cost of the extra steps. The progressive
models are timed at their last stage (32x32, alpha 1), the stage where their time goes, by
calling the trainer's D and G steps; random images stand in for data (cost does not depend on
the pixels).
Recipes (`channel_base` / `max_channels` after the comma): WGAN-GP (gradient penalty on every
D step, the earlier default), the non-saturating loss alone, with R1 on every D step, and with
lazy R1 every 16 D steps (the new default loss), at the earlier widths 2048/128; and the lazy
R1 recipe at 512/64.
Each cost is also given as a ratio to DCGAN's per-image cost measured in the same run.

Usage: .venv/bin/python benchmarks/gan_cost.py --threads 1 [--steps 30] [--write-docs]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch
from bench_common import log, replace_section, set_threads
from gan_common import IMAGE_SHAPE, paper_trainer_config
from provenance import command_line, git_commit

from generative.gan import GAN, GANConfig, GANTrainer
from generative.progressive import ProGAN, ProGANConfig
from generative.progressive.trainer import ProgressiveTrainer, ProgressiveTrainerConfig
from generative.stylegan import StyleGAN, StyleGANConfig

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 32, 32)
WIDE = {"channel_base": 2048, "max_channels": 128}  # the widths before issue 19
NARROW = {"channel_base": 512, "max_channels": 64}
RECIPES = {  # progressive config fields
    "WGAN-GP (every D step), 2048/128": {"loss": "wgan_gp", "r1_gamma": 0.0, **WIDE},
    "non-saturating, no penalty, 2048/128": {"loss": "non_saturating", "r1_gamma": 0.0, **WIDE},
    "non-saturating + R1 every D step, 2048/128": {"r1_gamma": 1.0, "r1_interval": 1, **WIDE},
    "non-saturating + lazy R1 (every 16), 2048/128": {"r1_gamma": 1.0, "r1_interval": 16, **WIDE},
    "non-saturating + lazy R1 (every 16), 512/64": {"r1_gamma": 1.0, "r1_interval": 16, **NARROW},
}
DCGAN_STEPS_PER_STEP = 10  # DCGAN times 10x as many steps as a progressive row
FAMILIES = {"ProGAN": (ProGAN, ProGANConfig), "StyleGAN": (StyleGAN, StyleGANConfig)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    return parser.parse_args()


def dcgan_seconds_per_image(args: argparse.Namespace) -> float:
    """CPU seconds per real image of DCGAN training (the fit's fixed cost removed by timing
    a short and a long run)."""
    images = torch.rand(4096, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(0))
    timings = []
    short, long = 20, 20 + DCGAN_STEPS_PER_STEP * args.steps  # cheap steps: time more of them
    for steps in (short, short, long):  # the first run warms up (discarded)
        torch.manual_seed(0)
        model = GAN(GANConfig(IMAGE_SHAPE, architecture="dcgan", base_channels=64))
        config = paper_trainer_config(
            "non_saturating", steps=steps, batch_size=args.batch_size, seed=0, autocast="bf16"
        )
        start = time.process_time()
        GANTrainer(model, config).fit(images)
        timings.append(time.process_time() - start)
    return (timings[2] - timings[1]) / ((long - short) * args.batch_size)


def progressive_seconds_per_image(family: str, recipe: dict, args: argparse.Namespace) -> float:
    """CPU seconds per real image of one D step and one G step at the last stage."""
    model_class, config_class = FAMILIES[family]
    torch.manual_seed(0)
    model = model_class(config_class(data_shape=SHAPE, **recipe))
    config = ProgressiveTrainerConfig(
        batch_size=args.batch_size, fade_images=1, stable_images=1, device="cpu", autocast="bf16"
    )
    trainer = ProgressiveTrainer(model, config)
    images = torch.rand(256, *SHAPE, generator=torch.Generator().manual_seed(0))
    trainer.fit(images)  # one batch per phase: sets up the optimisers, the order and the RNG
    stage = model.stages - 1
    real = model.to_model_scale(images[: args.batch_size])
    trainer.discriminator_steps = 0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            start = time.process_time()
        trainer.discriminator_step(real, stage, 1.0)
        trainer.generator_step(args.batch_size, stage, 1.0)
    return (time.process_time() - start) / (args.steps * args.batch_size)


def main() -> int:
    args = parse_args()
    set_threads(args.threads, f"{args.steps} timed steps per row, batch {args.batch_size}")
    start = time.perf_counter()
    dcgan = dcgan_seconds_per_image(args)
    log(f"DCGAN: {dcgan * 1e3:.3f} ms per image")
    rows = [{"model": "DCGAN", "recipe": "non-saturating", "ms_per_image": dcgan * 1e3}]
    for family in FAMILIES:
        for name, recipe in RECIPES.items():
            seconds = progressive_seconds_per_image(family, recipe, args)
            rows.append({"model": family, "recipe": name, "ms_per_image": seconds * 1e3})
            log(f"{family} {name}: {seconds * 1e3:.3f} ms per image")
    for row in rows:
        row["ratio_to_dcgan"] = row["ms_per_image"] / (dcgan * 1e3)
    text = report(args, rows, time.perf_counter() - start)
    print(text)
    if args.write_docs:
        replace_section(ROOT / "docs" / "benchmarks.md", text)
    payload = {"command": command_line(), "commit": git_commit(),
               "date": datetime.date.today().isoformat(), "threads": args.threads,
               "rows": rows}  # fmt: skip
    out = ROOT / "docs" / "results" / "gan_cost.json"
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


def report(args: argparse.Namespace, rows: list[dict], wall: float) -> str:
    lines = [
        "## GAN training cost per image: where StyleGAN's time went (issue 19)",
        "",
        f"Command: `{command_line()}` (commit {git_commit()}, "
        f"{datetime.date.today().isoformat()}; {wall / 60:.1f} min; torch threads: "
        f"{args.threads}; bf16 autocast; batch {args.batch_size}; {args.steps} timed D+G "
        "steps per row, process CPU time).",
        "",
        "| model | D regulariser, widths | ms per image | x DCGAN |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['recipe']} | {row['ms_per_image']:.3f} | "
            f"{row['ratio_to_dcgan']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""Small-data GAN recipe ablation: a DCGAN on 500 Fashion-MNIST images, with and without
differentiable augmentation (fixed, and ADA-adapted), and the R1 penalty.

Every variant is the same DCGAN (non-saturating loss, its paper settings from
`gan_common.PAPER_SETTINGS`, batch 64, latent 64, seed 0, bf16 autocast) trained for the same
number of G steps (`--steps`) on the same 500 training images (50 per class, numpy
rng(0)), the regime where D memorises the real set. Quality: FID, KID, precision and recall in
the frozen FeatureNet of benchmarks/gan_quality.py (trained here on the whole training split,
2 epochs, seed 0), `--eval` generated images against as many test images. Seconds are each
variant's training time on `--threads` torch threads.

Usage: .venv/bin/python benchmarks/gan_small_data.py --threads 1 [--steps 2000] [--write-docs]
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
from gan_common import IMAGE_SHAPE, balanced_subset, fashion, paper_trainer_config
from provenance import command_line, git_commit

from generative.gan import GAN, GANConfig, GANTrainer
from generative.metrics import FeatureNetConfig, accuracy, image_quality, train_feature_net

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # GANTrainerConfig fields on top of the paper settings
    "DCGAN": {},
    "+ DiffAugment (color, translation, cutout; p = 1)": {"augment": "color,translation,cutout"},
    "+ ADA (same policy, target 0.6)": {"augment": "color,translation,cutout", "ada_target": 0.6},
    "+ R1 (gamma 1, every 16 D steps)": {"r1_gamma": 1.0},
    "+ DiffAugment + R1": {"augment": "color,translation,cutout", "r1_gamma": 1.0},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--steps", type=int, default=2000, help="G steps per variant")
    parser.add_argument("--per-class", type=int, default=50, help="training images per class")
    parser.add_argument("--eval", type=int, default=5000, help="images per set for metrics")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    return parser.parse_args()


def train_variant(extra: dict, images: torch.Tensor, steps: int) -> tuple[GAN, float, dict]:
    torch.manual_seed(0)
    model = GAN(GANConfig(IMAGE_SHAPE, architecture="dcgan", latent_dim=64))
    base = paper_trainer_config(
        "non_saturating", steps=steps, batch_size=64, seed=0, autocast="bf16"
    )
    config = type(base).from_dict({**base.to_dict(), **extra})
    start = time.perf_counter()
    trainer = GANTrainer(model, config)
    trainer.fit(images)
    return model, time.perf_counter() - start, trainer.history[-1]


def main() -> int:
    args = parse_args()
    set_threads(args.threads, f"{args.steps} G steps per variant")
    start = time.perf_counter()
    train, test = fashion("train"), fashion("test")
    rows = balanced_subset(train[1], args.per_class, seed=0)
    scarce = train[0][rows]
    net = train_feature_net(*train, FeatureNetConfig(IMAGE_SHAPE, num_classes=10), epochs=2,
                            seed=0, device="cpu")  # fmt: skip
    log(f"FeatureNet test accuracy {accuracy(net, *test):.4f}")
    order = torch.randperm(len(test[0]), generator=torch.Generator().manual_seed(0))
    real = test[0][order[: args.eval]]
    results = []
    for name, extra in VARIANTS.items():
        model, seconds, last = train_variant(extra, scarce, args.steps)
        fake = torch.cat([model.sample(1000, seed=s) for s in range(0, args.eval, 1000)])
        quality = image_quality(real, fake[: args.eval], net)
        row = {"variant": name, "settings": extra, "seconds": seconds, **quality,
               "augment_strength": last.get("augment_strength")}  # fmt: skip
        log(f"{name}: {row}")
        results.append(row)
    floor = image_quality(real, train[0][order[: args.eval]], net)
    text = report(args, results, floor, time.perf_counter() - start, len(scarce))
    print(text)
    if args.write_docs:
        replace_section(ROOT / "docs" / "benchmarks.md", text)
    payload = {"command": command_line(), "commit": git_commit(),
               "date": datetime.date.today().isoformat(), "rows": results}  # fmt: skip
    out = ROOT / "docs" / "results" / "gan_small_data.json"
    out.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


def report(args, results: list[dict], floor: dict, wall: float, n_images: int) -> str:
    lines = [
        "## Small-data GAN recipe: augmentation and R1 on 500 images (issue 19, first parts)",
        "",
        f"Command: `{command_line()}` (commit {git_commit()}, "
        f"{datetime.date.today().isoformat()}; {wall / 60:.1f} min; torch threads: "
        f"{args.threads}).",
        "",
        f"DCGAN, non-saturating loss, Adam 2e-4 (0.5, 0.999), batch 64, {args.steps} G steps "
        f"each on the same {n_images} Fashion-MNIST training images ({args.per_class} per "
        f"class); FID/KID/precision/recall in the FeatureNet, {args.eval} samples against "
        f"{args.eval} test images (floor, training images against them: FID "
        f"{floor['fid']:.2f}).",
        "",
        "| variant | FID | KID | precision | recall | train s | final strength |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results:
        strength = row["augment_strength"]
        shown = "-" if strength is None else f"{strength:.2f}"
        lines.append(
            f"| {row['variant']} | {row['fid']:.2f} | {row['kid']:.4f} | "
            f"{row['precision']:.3f} | {row['recall']:.3f} | {row['seconds']:.0f} | {shown} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""Latent arithmetic on a trained DCGAN: does "bright A" - "A" + "B" give bright B's?

Trains an unconditional DCGAN on Fashion-MNIST (non-saturating loss, the DCGAN paper's Adam) for
a fixed number of generator steps and a FeatureNet on the training split, then runs
`pipelines.gan_quality.brightness_analogy` (the analogy `train_gan_flow` logs) for a few seeds.
A control decodes mean(B) + the same noise without the attribute vector, so the table shows
what the vector adds: the share of results the net calls B and their mean pixel value.

    .venv/bin/python benchmarks/gan_arithmetic.py --threads 1 --out .state/bench/gan_arithmetic.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import header_lines, log, write_report
from gan_common import IMAGE_SHAPE, fashion, paper_trainer_config
from PIL import Image

from generative.gan import GAN, GANConfig, GANTrainer
from generative.gan.latent import attribute_analogy_groups, brightness_analogy
from generative.metrics import FeatureNetConfig, accuracy, train_feature_net


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2400, help="generator steps")
    parser.add_argument("--seeds", type=int, default=3, help="analogy seeds")
    parser.add_argument("--out", type=Path, default=Path(".state/bench/gan_arithmetic.md"))
    parser.add_argument("--figure", type=Path, default=None, help="PNG of the seed-0 grid")
    parser.add_argument("--quick", action="store_true", help="a smoke run in seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seeds = 20, 1
    return args


def train(args: argparse.Namespace) -> tuple[GAN, object, float]:
    """The DCGAN and the FeatureNet (its test accuracy too), both seeded."""
    images, labels = fashion("train")
    test = fashion("test")
    rows = slice(2000 if args.quick else None)
    net_config = FeatureNetConfig(IMAGE_SHAPE)
    net = train_feature_net(images[rows], labels[rows], net_config, epochs=2, seed=0)
    torch.manual_seed(0)
    gan = GAN(GANConfig(IMAGE_SHAPE, architecture="dcgan", latent_dim=64))
    config = paper_trainer_config(
        "non_saturating", steps=args.steps, batch_size=64, seed=0, autocast="off"
    )
    GANTrainer(gan, config).fit(images)
    return gan, net, accuracy(net, *test)


def control(gan: GAN, net, seed: int, n: int = 2000) -> dict[str, object]:
    """mean(B) + the analogy's noise, without the attribute vector (the same latents, labels
    and noise as `brightness_analogy` draws for `seed`), and the groups' sizes and brightness."""
    z = gan.sample_latent(n, generator=torch.Generator().manual_seed(seed))
    images = gan.generate(z)
    labels, brightness = net.predict(images), images.flatten(1).mean(1)
    class_a, class_b = torch.bincount(labels, minlength=2).argsort(descending=True)[:2].tolist()
    groups = attribute_analogy_groups(z, labels, brightness, class_a, class_b)
    noise = torch.randn(64, z.shape[1], generator=torch.Generator().manual_seed(seed))
    results = gan.generate(groups[2].mean(0) + 0.25 * noise)
    in_a = labels == class_a
    bright_a = brightness[in_a] >= torch.quantile(brightness[in_a], 0.75)
    return {
        "control_b_share": float((net.predict(results) == class_b).float().mean()),
        "control_brightness": float(results.mean()),
        "b_brightness": float(brightness[labels == class_b].mean()),
        "bright_a_brightness": float(brightness[in_a][bright_a].mean()),
        "sizes": " / ".join(str(len(group)) for group in groups),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    gan, net, net_accuracy = train(args)
    log("trained the DCGAN and the FeatureNet")
    rows = [
        f"- DCGAN (latent 64, base channels 64), non-saturating loss, {args.steps} G steps; "
        f"FeatureNet test accuracy {net_accuracy:.4f}; nothing tuned",
        "- groups from 2000 samples per seed labelled by the FeatureNet; 'bright' = top quarter "
        "of class A's mean pixel value; results = 64 noisy copies (noise sd 0.25)",
        "",
        "| seed | A -> B | group sizes (bright A / A / B) | share called B: analogy | "
        "control mean(B) | mean pixel: analogy | control | B samples | bright A samples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for seed in range(args.seeds):
        metrics, grid = brightness_analogy(gan, net, seed=seed)
        base = control(gan, net, seed)
        gain = metrics["arithmetic.brightness_gain"] + base["b_brightness"]
        rows.append(
            f"| {seed} | {int(metrics['arithmetic.class_a'])} -> "
            f"{int(metrics['arithmetic.class_b'])} | {base['sizes']} | "
            f"{metrics['arithmetic.class_b_share']:.2f} | {base['control_b_share']:.2f} | "
            f"{gain:.3f} | {base['control_brightness']:.3f} | {base['b_brightness']:.3f} | "
            f"{base['bright_a_brightness']:.3f} |"
        )
        if seed == 0 and args.figure is not None:
            Image.fromarray(np.repeat(grid, 3, axis=2)).save(args.figure)
    title = "Latent arithmetic: bright A - A + B"
    write_report(args.out, header_lines(title, time.perf_counter() - start) + rows)


if __name__ == "__main__":
    main()

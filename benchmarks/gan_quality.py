"""Sample quality of five GANs on Fashion-MNIST at an equal CPU budget: FID, KID, precision,
recall, and the classification accuracy score (CAS) of a class-conditional DCGAN.

Models: "GAN (MLP)" (MLP nets, non-saturating loss), "DCGAN" (non-saturating), "LSGAN",
"WGAN" and "WGAN-GP" (the last three on the same DCGAN nets), and "cDCGAN" (class-conditional
DCGAN, non-saturating; CAS needs labelled samples, so CAS is reported for it only). Each trains
on all 60,000 training images with its loss's paper optimizer settings
(`gan_common.PAPER_SETTINGS`) for an equal wall-clock budget: two short timed runs on
throw-away models (n and 3n G steps, n >= 10 grown until the longer takes 2 s) measure the
model's marginal G steps per second and the fixed cost of a fit, and the run is capped at
(`--budget-s` - fixed cost) x that rate G steps (`--steps` fixes one G-step count for all
instead). The achieved G steps and seconds are reported.

Features: there is no Inception net here, so a `FeatureNet` (the metrics package's small CNN,
default config) is trained in this script on the full training split (2 epochs, seed 0) and
frozen; every model is measured with the same features. (The pipelines keep this net in the
MLflow registry; a benchmark should not register models, so it trains its own.) Evaluation:
`--eval` generated images against the first `--eval` rows of a seeded permutation of the test
split. The floor row compares as many training images (another seeded draw) with the same test
rows. CAS: a FeatureNet-architecture classifier trained on `--cas-rows` labelled cDCGAN samples
(balanced over classes), accuracy on the whole test split; the real-data reference trains the
same classifier on a class-balanced real training subset of the same size.

Usage:
    .venv/bin/python benchmarks/gan_quality.py --threads 1 --out .state/bench/gan_quality.md \
        --figure docs/gan_samples.png
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from bench_common import base_parser, header_lines, log, run_benchmark
from gan_common import IMAGE_SHAPE, balanced_subset, fashion, paper_trainer_config, settings_line
from PIL import Image

from generative.gan import GAN, GANConfig, GANTrainer
from generative.metrics import (
    FeatureNet,
    FeatureNetConfig,
    accuracy,
    classification_accuracy_score,
    image_quality,
    train_feature_net,
)


@dataclass(frozen=True)
class Spec:
    """One model of the comparison."""

    name: str
    architecture: str
    loss: str
    num_classes: int = 0


SPECS = (
    Spec("GAN (MLP)", "mlp", "non_saturating"),
    Spec("DCGAN", "dcgan", "non_saturating"),
    Spec("LSGAN", "dcgan", "lsgan"),
    Spec("WGAN", "dcgan", "wgan"),
    Spec("WGAN-GP", "dcgan", "wgan_gp"),
    Spec("cDCGAN", "dcgan", "non_saturating", num_classes=10),
)
CALIBRATION_STEPS = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = base_parser(__doc__)
    parser.add_argument("--budget-s", type=float, default=150.0, help="training seconds/model")
    parser.add_argument("--steps", type=int, default=None, help="fixed G steps (no budget)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--autocast", default="bf16", choices=["bf16", "off"])
    parser.add_argument("--eval", type=int, default=5000, help="images per set for metrics")
    parser.add_argument("--cas-rows", type=int, default=10_000)
    parser.add_argument("--cas-epochs", type=int, default=5)
    parser.add_argument("--feature-epochs", type=int, default=2)
    parser.add_argument("--feature-rows", type=int, default=None, help="FeatureNet rows")
    parser.add_argument("--models", nargs="+", default=[s.name for s in SPECS])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets")
    parser.add_argument("--out", type=Path, default=None, help="markdown report")
    parser.add_argument("--figure", type=Path, default=None, help="PNG grid of samples")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.eval, args.cas_rows, args.cas_epochs = 5, 300, 500, 1
        args.feature_epochs, args.feature_rows = 1, 2000
    return args


def make_gan(spec: Spec, args: argparse.Namespace) -> GAN:
    """A freshly initialised GAN for `spec` (seed 0)."""
    torch.manual_seed(0)
    config = GANConfig(
        IMAGE_SHAPE,
        architecture=spec.architecture,
        latent_dim=args.latent_dim,
        hidden_dims=(256, 512),
        num_classes=spec.num_classes,
        loss=spec.loss,
    )
    return GAN(config)


def fit(model: GAN, spec: Spec, steps: int, data: tuple, args: argparse.Namespace) -> GANTrainer:
    """Train `model` for `steps` G steps with its loss's paper settings."""
    config = paper_trainer_config(
        spec.loss, steps=steps, batch_size=args.batch_size, seed=0, autocast=args.autocast
    )
    trainer = GANTrainer(model, config)
    images, labels = data
    trainer.fit(images, labels if spec.num_classes else None)
    return trainer


def timed_fit(spec: Spec, steps: int, data: tuple, args: argparse.Namespace) -> float:
    """Seconds to train a throw-away model for `steps` G steps."""
    start = time.perf_counter()
    fit(make_gan(spec, args), spec, steps, data, args)
    return time.perf_counter() - start


def budget_steps(spec: Spec, data: tuple, args: argparse.Namespace) -> int:
    """G steps that fit the budget. The marginal rate comes from two timed runs on throw-away
    models, of n and 3n G steps (n grown until the longer run takes >= 2 s), so the fixed cost
    of a fit (data scaling, state copies) is not counted as step time."""
    if args.steps is not None:
        return args.steps
    timed_fit(spec, 2, data, args)  # warm-up
    n = CALIBRATION_STEPS
    while True:
        short, long = timed_fit(spec, n, data, args), timed_fit(spec, 3 * n, data, args)
        if long >= 2.0:
            break
        n *= 4
    fixed = max(0.0, 1.5 * short - 0.5 * long)
    rate = 2 * n / max(long - short, 1e-6)
    log(f"{spec.name}: {rate:.1f} G steps/s, fixed cost {fixed:.1f} s (calibration, n = {n})")
    return max(1, int((args.budget_s - fixed) * rate))


def train_model(spec: Spec, data: tuple, args: argparse.Namespace) -> dict:
    """Calibrate, train and return the model with its step counts and seconds."""
    steps = budget_steps(spec, data, args)
    model = make_gan(spec, args)
    start = time.perf_counter()
    trainer = fit(model, spec, steps, data, args)
    seconds = time.perf_counter() - start
    log(
        f"{spec.name}: {trainer.generator_steps} G / {trainer.discriminator_steps} D steps "
        f"in {seconds:.0f} s; last epoch {trainer.history[-1]}"
    )
    return {"model": model, "g_steps": trainer.generator_steps, "seconds": seconds}


def generate(model: GAN, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n samples (class-balanced labels for a conditional model), in batches."""
    labels = None
    if model.config.num_classes:
        labels = torch.arange(n) % model.config.num_classes
    parts = []
    for start in range(0, n, 1000):
        chunk = None if labels is None else labels[start : start + 1000]
        parts.append(model.sample(min(1000, n - start), chunk, seed=seed + start))
    return torch.cat(parts), labels


def scipy_fid(net: FeatureNet, real: torch.Tensor, fake: torch.Tensor) -> float:
    """Textbook FID with scipy.linalg.sqrtm, a cross-check of `generative.metrics.fid`."""
    a, b = net.features(real).double().numpy(), net.features(fake).double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * root))


def evaluate(net: FeatureNet, real: torch.Tensor, fake: torch.Tensor) -> dict:
    """FID, KID, precision, recall (the metrics package) and the scipy FID check."""
    values = image_quality(real, fake, net)
    values["fid_scipy"] = scipy_fid(net, real, fake)
    return values


def cas(images: torch.Tensor, labels: torch.Tensor, test: tuple, args: argparse.Namespace):
    """Accuracy on the real test split of a classifier trained on (images, labels)."""
    return classification_accuracy_score(
        images, labels, *test, epochs=args.cas_epochs, seed=0, device="cpu"
    )


def feature_net(train: tuple, test: tuple, args: argparse.Namespace) -> tuple[FeatureNet, float]:
    """The frozen FeatureNet of this run and its test accuracy."""
    start = time.perf_counter()
    config = FeatureNetConfig(IMAGE_SHAPE, num_classes=10)
    rows = slice(args.feature_rows)
    net = train_feature_net(
        train[0][rows], train[1][rows], config, epochs=args.feature_epochs, seed=0, device="cpu"
    )
    test_accuracy = accuracy(net, *test)
    log(f"FeatureNet: test accuracy {test_accuracy:.4f} in {time.perf_counter() - start:.0f} s")
    return net, test_accuracy


def real_rows(args: argparse.Namespace, train: tuple, test: tuple) -> dict:
    """The evaluation's real sets: test rows and, for the floor, as many training rows."""
    rng = torch.Generator().manual_seed(0)
    test_rows = torch.randperm(len(test[0]), generator=rng)[: args.eval]
    train_rows = torch.randperm(len(train[0]), generator=rng)[: args.eval]
    return {"test": test[0][test_rows], "train": train[0][train_rows]}


def run_all(args: argparse.Namespace) -> dict:
    """Train every model, then measure each and the real-data floors."""
    train, test = fashion("train"), fashion("test")
    net, net_accuracy = feature_net(train, test, args)
    real = real_rows(args, train, test)
    results = {"feature_accuracy": net_accuracy, "rows": {}, "samples": {}}
    floor = evaluate(net, real["test"], real["train"])
    per_class = args.cas_rows // 10
    floor["cas"] = cas(*[t[balanced_subset(train[1], per_class, 0)] for t in train], test, args)
    results["rows"]["real train (floor)"] = floor
    for spec in [s for s in SPECS if s.name in args.models]:
        trained = train_model(spec, train, args)
        fake, _ = generate(trained["model"], args.eval, seed=1)
        row = {**evaluate(net, real["test"], fake), **trained}
        if spec.num_classes:
            images, labels = generate(trained["model"], args.cas_rows, seed=100_000)
            row["cas"] = cas(images, labels, test, args)
        results["rows"][spec.name] = row
        results["samples"][spec.name] = grid_samples(trained["model"])
        log(f"{spec.name}: " + ", ".join(f"{k}={v:.4g}" for k, v in metric_items(row)))
    return results


def metric_items(row: dict) -> list[tuple[str, float]]:
    """The numeric metrics of one row, for log lines."""
    keys = ("fid", "fid_scipy", "kid", "precision", "recall", "cas")
    return [(k, row[k]) for k in keys if k in row]


def grid_samples(model: GAN) -> torch.Tensor:
    """20 samples for the figure (two of each class for a conditional model)."""
    labels = torch.arange(20) % 10 if model.config.num_classes else None
    return model.sample(20, labels, seed=7)


def draw_figure(samples: dict[str, torch.Tensor], path: Path) -> None:
    """One 2 x 10 block of samples per model, titled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from generative.gan.latent import image_grid

    figure, axes = plt.subplots(len(samples), 1, figsize=(6, 1.45 * len(samples)), squeeze=False)
    for axis, (name, images) in zip(axes[:, 0], samples.items(), strict=True):
        axis.imshow(image_grid(images, nrow=10)[:, :, 0], cmap="gray", vmin=0, vmax=255)
        axis.set_title(name, fontsize=8)
        axis.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    Image.open(path).convert("L").save(path, optimize=True)  # grey: a third of the bytes
    log(f"wrote {path}")


def table(results: dict) -> list[str]:
    """One row per model and the floor."""
    lines = [
        "| model | FID | KID (sd over subsets) | precision | recall | CAS | G steps | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["rows"].items():
        cas_cell = f"{row['cas']:.4f}" if "cas" in row else "n/a (unconditional)"
        steps = f"{row['g_steps']:,}" if "g_steps" in row else "-"
        seconds = f"{row['seconds']:.0f}" if "seconds" in row else "-"
        lines.append(
            f"| {name} | {row['fid']:.2f} | {row['kid']:.3g} ({row['kid_std']:.2g})"
            f" | {row['precision']:.3f} | {row['recall']:.3f} | {cas_cell} | {steps} | "
            f"{seconds} |"
        )
    return lines


def report(results: dict, args: argparse.Namespace, wall: float) -> list[str]:
    """The markdown section."""
    budget = f"{args.steps} G steps each" if args.steps else f"{args.budget_s:.0f} s each"
    check = max(abs(r["fid"] - r["fid_scipy"]) for r in results["rows"].values())
    losses = sorted({s.loss for s in SPECS if s.name in args.models})
    return [
        *header_lines("GAN sample quality on Fashion-MNIST at an equal CPU budget", wall),
        f"- budget: {budget} of training (1 thread), batch {args.batch_size}, latent "
        f"{args.latent_dim}, autocast {args.autocast}; MLP nets 64-256-512-784 (D mirrored); "
        "DCGAN nets base 64 channels; seed 0; no EMA, no truncation",
        "- optimizers (paper settings, nothing tuned): "
        + "; ".join(settings_line(loss) for loss in losses),
        f"- features: FeatureNet (default config) trained here on "
        f"{args.feature_rows or 60_000:,} training images, {args.feature_epochs} epoch(s), "
        f"seed 0; test accuracy {results['feature_accuracy']:.4f}",
        f"- {args.eval} generated vs {args.eval} real test images; floor: {args.eval} real "
        "training images vs the same test images; KID: 100 subsets of 1000; precision/recall "
        "k = 3",
        f"- CAS: {args.cas_rows} balanced labelled images, classifier {args.cas_epochs} epochs, "
        "accuracy on all 10,000 test images; the floor row trains on real training images",
        f"- FID cross-check with scipy.linalg.sqrtm: max |difference| {check:.3g}",
        "",
        *table(results),
    ]


def run_and_draw(args: argparse.Namespace) -> dict:
    """`run_all`, then the figure of samples when asked for."""
    results = run_all(args)
    if args.figure is not None:
        draw_figure(results["samples"], args.figure)
    return results


def main(argv: list[str] | None = None) -> None:
    """Train, evaluate, write the report and the figure."""
    run_benchmark(parse_args(argv), run_and_draw, report)


if __name__ == "__main__":
    main()

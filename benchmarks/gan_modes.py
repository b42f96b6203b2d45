"""Mode coverage of the five GAN losses on 2-D Gaussian mixtures (ring8 and grid25).

For each mixture of `generative.gan.mixtures.MIXTURES`, each loss of `GAN_LOSSES` and each seed,
an MLP GAN (the same nets for every loss: latent `--latent-dim`, hidden `--hidden`, G ReLU, D
LeakyReLU 0.2) is trained by `GANTrainer` on `--train-points` draws of the mixture for exactly
`--steps` generator steps (equal budget in G steps; WGAN and WGAN-GP take 5 critic steps per G
step, as their papers prescribe, so they cost more time). Each loss runs with its paper's
optimizer settings (`gan_common.PAPER_SETTINGS`); nothing else differs between losses and
nothing was tuned per loss. fp32 throughout (bf16 would blur modes of width 0.02).

Scored on `--eval-samples` draws of G (sampling seed 1000 + seed) with `mode_coverage`: modes
covered (a mode holding at least a quarter of its fair share of the high-quality samples) of
n_modes, the share of high-quality samples (within 3 standard deviations of the nearest
centre), and, to show how far off the rest are, the median distance to the nearest centre in
units of the mixture's standard deviation.

Usage:
    .venv/bin/python benchmarks/gan_modes.py --threads 1 --out .state/bench/gan_modes.md \
        --figure docs/gan_modes.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import base_parser, header_lines, log, run_benchmark, table_head
from gan_common import paper_trainer_config, settings_line

from generative.gan import GAN, GAN_LOSSES, GANConfig, GANTrainer, TrainingDivergedError
from generative.gan.mixtures import MIXTURES, Mixture, mode_coverage

Run = dict
TABLE_COLUMNS = (
    "mixture",
    "loss",
    "modes covered",
    "high-quality share",
    "median distance to nearest centre (sd)",
    "G / D steps",
    "seconds per run",
    "diverged",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = base_parser(__doc__)
    parser.add_argument("--mixtures", nargs="+", default=list(MIXTURES))
    parser.add_argument("--losses", nargs="+", default=list(GAN_LOSSES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=12_000, help="G steps per run")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--hidden", nargs="+", type=int, default=[128, 128])
    parser.add_argument("--train-points", type=int, default=128_000)
    parser.add_argument("--eval-samples", type=int, default=2500)
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 steps")
    parser.add_argument("--out", type=Path, default=None, help="markdown report")
    parser.add_argument("--figure", type=Path, default=None, help="PNG of the samples")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.train_points, args.eval_samples = 100, 5000, 500
    return args


def train_one(mixture: Mixture, loss: str, seed: int, args: argparse.Namespace) -> tuple:
    """(trained GAN, trainer, diverged?) for one loss and seed."""
    torch.manual_seed(seed)
    config = GANConfig((2,), latent_dim=args.latent_dim, hidden_dims=tuple(args.hidden), loss=loss)
    model = GAN(config)
    trainer_config = paper_trainer_config(
        loss, steps=args.steps, batch_size=args.batch_size, seed=seed, autocast="off"
    )
    trainer = GANTrainer(model, trainer_config)
    try:
        trainer.fit(mixture.sample(args.train_points, seed=seed))
    except TrainingDivergedError:
        return model, trainer, True
    return model, trainer, False


def run_one(name: str, loss: str, seed: int, args: argparse.Namespace) -> Run:
    """Train and score one (mixture, loss, seed); keeps the samples for the figure."""
    mixture = MIXTURES[name]()
    start = time.perf_counter()
    model, trainer, diverged = train_one(mixture, loss, seed, args)
    seconds = time.perf_counter() - start
    samples = model.sample(args.eval_samples, seed=1000 + seed)
    coverage = mode_coverage(samples, mixture)
    nearest = torch.cdist(samples, mixture.centres).min(dim=1).values
    return {
        "mixture": name,
        "loss": loss,
        "seed": seed,
        "covered": coverage.modes_covered,
        "n_modes": coverage.n_modes,
        "high_quality": coverage.high_quality,
        "median_sigmas": float(nearest.median()) / mixture.std,
        "seconds": seconds,
        "g_steps": trainer.generator_steps,
        "d_steps": trainer.discriminator_steps,
        "diverged": diverged,
        "samples": samples.numpy(),
    }


def progress(run: Run) -> str:
    """One log line per run."""
    flag = " DIVERGED" if run["diverged"] else ""
    return (
        f"{run['mixture']} {run['loss']} seed {run['seed']}: modes {run['covered']}/"
        f"{run['n_modes']}, high quality {run['high_quality']:.3f}, median distance "
        f"{run['median_sigmas']:.1f} sd, {run['g_steps']} G / {run['d_steps']} D steps in "
        f"{run['seconds']:.0f} s{flag}"
    )


def cell(values: list[float], digits: int) -> str:
    """Mean, with the per-seed values in brackets when there are several."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    mean = f"{np.mean(values):.{digits}f}"
    return f"{mean} ({', '.join(f'{v:.{digits}f}' for v in values)})"


def table(runs: list[Run], args: argparse.Namespace) -> list[str]:
    """One row per mixture and loss; means over seeds (per-seed values in brackets)."""
    lines = table_head(TABLE_COLUMNS)
    for name in args.mixtures:
        for loss in args.losses:
            group = [r for r in runs if r["mixture"] == name and r["loss"] == loss]
            covered = cell([r["covered"] for r in group], 0)
            lines.append(
                f"| {name} | {loss} | {covered} / {group[0]['n_modes']} | "
                f"{cell([r['high_quality'] for r in group], 3)} | "
                f"{cell([r['median_sigmas'] for r in group], 1)} | "
                f"{group[0]['g_steps']} / {group[0]['d_steps']} | "
                f"{np.mean([r['seconds'] for r in group]):.0f} | "
                f"{sum(r['diverged'] for r in group)} of {len(group)} |"
            )
    return lines


def draw_figure(runs: list[Run], args: argparse.Namespace, path: Path) -> None:
    """Scatter of the first seed's samples (grey: the mixture's centres), mixtures x losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(args.mixtures), len(args.losses)
    figure, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for i, name in enumerate(args.mixtures):
        centres = MIXTURES[name]().centres.numpy()
        for j, loss in enumerate(args.losses):
            run = next(r for r in runs if r["mixture"] == name and r["loss"] == loss)
            axis = axes[i][j]
            axis.scatter(*centres.T, s=12, c="0.6", marker="x")
            axis.scatter(*run["samples"][:1000].T, s=1, alpha=0.4)
            axis.set_title(f"{name} {loss}\n{run['covered']}/{run['n_modes']} modes", fontsize=8)
            axis.set_xlim(-6, 6)
            axis.set_ylim(-6, 6)
            axis.set_xticks([])
            axis.set_yticks([])
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=70)
    plt.close(figure)
    log(f"wrote {path}")


def report(runs: list[Run], args: argparse.Namespace, wall: float) -> list[str]:
    """The markdown section."""
    return [
        *header_lines("Mode coverage on 2-D mixtures, five losses", wall),
        f"- nets: MLP, latent {args.latent_dim}, hidden {tuple(args.hidden)} (the same for "
        f"every loss); batch {args.batch_size}; {args.steps} G steps per run; "
        f"{args.train_points} training draws of the mixture (seed = run seed); fp32",
        "- optimizers (each loss's paper settings, nothing tuned per loss): "
        + "; ".join(settings_line(loss) for loss in args.losses),
        f"- seeds: {', '.join(map(str, args.seeds))}; scored on {args.eval_samples} samples; "
        "ring8: 8 modes of sd 0.02 on a circle of radius 2; grid25: 5 x 5 modes of sd 0.05, "
        "spacing 2",
        "",
        *table(runs, args),
    ]


def run_all(args: argparse.Namespace) -> list[Run]:
    """Every mixture x loss x seed, logged as it ends; then the figure when asked for."""
    runs = []
    for name in args.mixtures:
        for loss in args.losses:
            for seed in args.seeds:
                runs.append(run_one(name, loss, seed, args))
                log(progress(runs[-1]))
    if args.figure is not None:
        draw_figure(runs, args, args.figure)
    return runs


def main(argv: list[str] | None = None) -> None:
    """Run every mixture x loss x seed and write the report (and figure)."""
    run_benchmark(parse_args(argv), run_all, report)


if __name__ == "__main__":
    main()

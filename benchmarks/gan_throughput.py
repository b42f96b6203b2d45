"""DCGAN training throughput: `GANTrainer` against a bare hand-written PyTorch loop.

Both train the same nets (copies of one `GAN(GANConfig((1, 28, 28), architecture="dcgan"))`,
so identical initial weights) on the same Fashion-MNIST training images with the same
non-saturating loss, the same Adam optimizers (lr 2e-4, betas (0.5, 0.999)), batch size and
number of steps, and the same algorithm: per step one D update on a real minibatch and fresh
fakes, then one G update on fresh latents with D frozen, drawn from one seeded generator in the
same order. The bare loop has nothing else: no loss bookkeeping, finiteness checks, callbacks
or checkpoints. In fp32 the two end with bitwise-equal weights (checked and reported), so they
did the same work and the ratio of rates is the trainer's overhead (target <= 5%).

Timed: the whole `GANTrainer.fit` call (data scaling, optimizer creation, state copies,
training) against the bare loop including its data scaling and optimizer creation. Each
variant (trainer / bare x fp32 / bf16 autocast) is warmed up once, then `--repeats` rounds run
every variant once, alternating the trainer/bare order between rounds, so load from other
processes hits both alike. Reported: median images/s (real images through D per second) by
wall clock and by process CPU time (`time.process_time`, which leaves out time spent waiting
for a core on a shared machine), and the median of the per-round paired ratios. `--profile`
adds cProfile's top functions of one trainer run and one bare run (stdout only).

Usage:
    .venv/bin/python benchmarks/gan_throughput.py --threads 1 --out .state/bench/gan_throughput.md
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_common import base_parser, header_lines, log, run_benchmark
from gan_common import IMAGE_SHAPE, fashion

from generative.gan import GAN, GANConfig, GANTrainer, GANTrainerConfig

VARIANTS = (("trainer", "off"), ("bare", "off"), ("trainer", "bf16"), ("bare", "bf16"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = base_parser(__doc__)
    parser.add_argument("--steps", type=int, default=100, help="G (= D) steps per timed run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9, help="alternating timed rounds")
    parser.add_argument("--base-channels", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="print cProfile top functions")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 steps, 1 round")
    parser.add_argument("--out", type=Path, default=None, help="markdown report")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 10, 1
    return args


def initial_gan(args: argparse.Namespace) -> GAN:
    """The one seeded DCGAN every run starts from (copied, never trained itself)."""
    torch.manual_seed(0)
    config = GANConfig(
        IMAGE_SHAPE,
        architecture="dcgan",
        latent_dim=args.latent_dim,
        base_channels=args.base_channels,
        loss="non_saturating",
    )
    return GAN(config)


def run_trainer(initial: GAN, images: torch.Tensor, args: argparse.Namespace, autocast: str):
    """Train a copy of `initial` with GANTrainer for exactly `args.steps` steps."""
    model = copy.deepcopy(initial)
    config = GANTrainerConfig(
        epochs=1,
        batch_size=args.batch_size,
        max_generator_steps=args.steps,
        seed=0,
        device="cpu",
        autocast=autocast,
    )
    GANTrainer(model, config).fit(images)
    return model.generator, model.discriminator


def run_bare(initial: GAN, images: torch.Tensor, args: argparse.Namespace, autocast: str):
    """The same training as `run_trainer`, written as a plain PyTorch loop."""
    generator = copy.deepcopy(initial.generator).train()
    discriminator = copy.deepcopy(initial.discriminator).train()
    torch.manual_seed(0)
    rng = torch.Generator().manual_seed(0)
    data = images * 2.0 - 1.0
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast == "bf16")
    batches = torch.randperm(len(data), generator=rng).split(args.batch_size)
    for index in batches[: args.steps]:
        z = torch.randn(len(index), args.latent_dim, generator=rng)
        with cast:
            with torch.no_grad():
                fake = generator(z)
            d_loss = F.softplus(-discriminator(data[index]).float()).mean()
            d_loss = d_loss + F.softplus(discriminator(fake).float()).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        z = torch.randn(len(index), args.latent_dim, generator=rng)
        discriminator.requires_grad_(False)
        with cast:
            g_loss = F.softplus(-discriminator(generator(z)).float()).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        discriminator.requires_grad_(True)
    return generator, discriminator


RUNNERS: dict[str, Callable] = {"trainer": run_trainer, "bare": run_bare}


def max_weight_difference(a: tuple, b: tuple) -> float:
    """Largest |difference| over all parameters and buffers of two (G, D) pairs."""
    largest = 0.0
    for net_a, net_b in zip(a, b, strict=True):
        for x, y in zip(net_a.state_dict().values(), net_b.state_dict().values(), strict=True):
            largest = max(largest, float((x.float() - y.float()).abs().max()))
    return largest


def timed(runner: Callable, *run_args) -> tuple[tuple[float, float], tuple]:
    """((wall seconds, process CPU seconds), result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = runner(*run_args)
    return (time.perf_counter() - wall, time.process_time() - cpu), result


def measure(initial: GAN, images: torch.Tensor, args: argparse.Namespace) -> dict:
    """Warm-up, then `repeats` alternating rounds; (wall, CPU) seconds per variant and the
    weight checks."""
    seconds: dict[tuple[str, str], list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    checks: dict[str, float] = {}
    for precision in ("off", "bf16"):
        _, a = timed(run_trainer, initial, images, args, precision)
        _, b = timed(run_bare, initial, images, args, precision)
        checks[precision] = max_weight_difference(a, b)
        log(f"warm-up {precision}: max |trainer - bare| weight {checks[precision]:.2e}")
    for round_index in range(args.repeats):
        for precision in ("off", "bf16"):
            order = ("trainer", "bare") if round_index % 2 == 0 else ("bare", "trainer")
            for kind in order:
                elapsed, _ = timed(RUNNERS[kind], initial, images, args, precision)
                seconds[(kind, precision)].append(elapsed)
                wall, cpu = (args.steps * args.batch_size / e for e in elapsed)
                log(
                    f"round {round_index + 1} {kind:7s} {precision:4s} {wall:5.0f} images/s "
                    f"(wall), {cpu:5.0f} images/s (CPU time)"
                )
    return {"seconds": seconds, "checks": checks}


def profile_runs(initial: GAN, images: torch.Tensor, args: argparse.Namespace) -> None:
    """cProfile one fp32 trainer run and one bare run; print the top functions by own time."""
    for kind in ("trainer", "bare"):
        profiler = cProfile.Profile()
        profiler.enable()
        RUNNERS[kind](initial, images, args, "off")
        profiler.disable()
        print(f"\n=== cProfile: {kind}, fp32 ===", flush=True)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def rate_table(result: dict, args: argparse.Namespace) -> list[str]:
    """Median images/s per variant and the paired trainer / bare ratios, by wall clock and by
    process CPU time (which leaves out time spent waiting for a core)."""
    seconds = result["seconds"]
    images = args.steps * args.batch_size
    lines = [
        "| autocast | clock | trainer images/s | bare images/s | trainer / bare rate "
        "(median of rounds) | range over rounds | trainer overhead | target <= 5% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for precision in ("off", "bf16"):
        for column, clock in enumerate(("wall", "CPU")):
            trainer = np.asarray(seconds[("trainer", precision)])[:, column]
            bare = np.asarray(seconds[("bare", precision)])[:, column]
            ratios = bare / trainer
            overhead = 1.0 / float(np.median(ratios)) - 1.0
            lines.append(
                f"| {'fp32' if precision == 'off' else 'bf16'} | {clock} | "
                f"{images / np.median(trainer):,.0f} | {images / np.median(bare):,.0f} | "
                f"{np.median(ratios):.3f} | {ratios.min():.3f}-{ratios.max():.3f} | "
                f"{overhead:+.1%} | {'PASS' if overhead <= 0.05 else 'FAIL'} |"
            )
    return lines


def speedup_line(result: dict) -> str:
    """bf16 autocast against fp32, for each kind of loop (median CPU seconds)."""
    seconds = result["seconds"]
    parts = []
    for kind in ("trainer", "bare"):
        fp32 = np.median(np.asarray(seconds[(kind, "off")])[:, 1])
        bf16 = np.median(np.asarray(seconds[(kind, "bf16")])[:, 1])
        parts.append(f"{kind} {fp32 / bf16:.2f}x")
    return "bf16 autocast speed-up over fp32 (median CPU seconds): " + ", ".join(parts) + "."


def report(result: dict, args: argparse.Namespace, wall: float) -> list[str]:
    """The markdown section."""
    checks = result["checks"]
    return [
        *header_lines("DCGAN training throughput: GANTrainer vs a bare PyTorch loop", wall),
        f"- nets: DCGAN (latent {args.latent_dim}, base channels {args.base_channels}), "
        f"non-saturating loss, Adam 2e-4 (0.5, 0.999); batch {args.batch_size}; "
        f"{args.steps} D and {args.steps} G steps per timed run; Fashion-MNIST training "
        f"images 0-{args.steps * args.batch_size - 1}",
        f"- {args.repeats} timed rounds after one warm-up per variant; the trainer/bare order "
        "alternates between rounds; ratio = bare seconds / trainer seconds per round",
        f"- same work: max |trainer - bare| over all weights after the warm-up runs: "
        f"fp32 {checks['off']:.1e}, bf16 {checks['bf16']:.1e}",
        "",
        *rate_table(result, args),
        "",
        speedup_line(result),
    ]


def measure_all(args: argparse.Namespace) -> dict:
    """The timed rounds on the first steps x batch-size training images, and the profile
    when asked for."""
    images = fashion("train")[0][: args.steps * args.batch_size]
    initial = initial_gan(args)
    result = measure(initial, images, args)
    if args.profile:
        profile_runs(initial, images, args)
    return result


def main(argv: list[str] | None = None) -> None:
    """Measure, optionally profile, and write the report."""
    run_benchmark(parse_args(argv), measure_all, report)


if __name__ == "__main__":
    main()

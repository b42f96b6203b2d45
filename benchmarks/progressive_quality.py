"""DCGAN, Progressive GAN and StyleGAN on Fashion-MNIST at 32x32 at an equal CPU-time budget:
FID, KID, precision and recall in the domain feature space; StyleGAN's truncation, noise and
style-mixing properties; sample grids and z / w interpolations for docs/.

Data: the 60,000 training images padded from 28x28 to 32x32 with 2 zero pixels per side.
Every model gets `--budget-s` seconds of this process's CPU time (`time.process_time`, so
other jobs on a busy machine do not eat into it). DCGAN (non-saturating loss, the paper's Adam
settings unless `--dcgan-lr`; width `--dcgan-base`) trains until the trainer's process clock
reads `--budget-s`; `--dcgan-lr-decay` / `--lr-decay` let the DCGAN's / the progressive
models' learning rates fall linearly to 0 over the budget's last part.
The progressive models (`--loss` and `--r1-gamma`, by default the library's: non-saturating
with lazy R1; drift 1e-3, Adam (`--lr`, `--betas`; the library's 6e-3, (0, 0.99)), n_critic 1;
widths from `--channel-base` / `--max-channels`, by default the library's) grow
4x4 -> 32x32 with `--fade-images` / `--stable-images` per phase and an unbounded 32x32 stable
phase that the trainer's `max_seconds` (clock "process") ends. All three keep an EMA of G
(`--ema-decay`); the EMA G is the main row, the raw G is reported beside it.

Evaluation: a `FeatureNet` trained here on the training split (as in `gan_quality.py`);
`--eval` generated images, cropped back to the centre 28x28, against `--eval` rows of a seeded
permutation of the test split; the floor compares as many training rows with the same test
rows. Nothing is chosen on the test split.

Usage:
    .venv/bin/python benchmarks/progressive_quality.py --threads 1 \
        --out .state/bench/progressive_quality.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_common import base_parser, header_lines, log, run_benchmark, write_report
from ema_shadows import EMAShadows
from gan_common import IMAGE_SHAPE, fashion, paper_trainer_config, settings_line
from provenance import command_line, git_commit
from stylegan_properties import (
    draw_interpolations,
    interpolations,
    metric_cells,
    plt_module,
    properties,
    save_grey,
    stylegan_sections,
)

from generative.gan import GAN, GANConfig, GANTrainer
from generative.metrics import (
    FeatureNet,
    FeatureNetConfig,
    accuracy,
    image_quality,
    train_feature_net,
)
from generative.progressive import ProGAN, ProGANConfig
from generative.progressive.config import DEFAULT_LOSS
from generative.progressive.trainer import ProgressiveTrainer, ProgressiveTrainerConfig
from generative.stylegan import StyleGAN, StyleGANConfig
from generative.training import Callback

SHAPE = (1, 32, 32)
MODELS = ("DCGAN", "ProGAN", "StyleGAN")
PSIS = (1.0, 0.7, 0.5)
CROSSOVERS = (2, 4, 6)

NOTES = [
    "- how the schedule was chosen: before the run, a probe of a few training steps per stage "
    "(bf16, one thread, batch 64, random images) gave ProGAN about 1600 / 385 / 100 / 28 and "
    "StyleGAN 1240 / 325 / 87 / 27 images per CPU s at 4 / 8 / 16 / 32; 3,000-image fade-ins "
    "and 6,000-image stable phases end StyleGAN's 32x32 fade-in at about 250 s, half of a "
    "480 s budget, leaving the other half for the 32x32 stable phase. Both progressive models "
    "use the same schedule. No choice here (schedule, EMA decay, budget) looked at the test "
    "split or at any metric",
    "- EMA decay: the papers' 0.999 has a half-life of 693 G steps, longer than a progressive "
    "model's whole run at this budget (about 500 G steps, 150 at 32x32), so its EMA would "
    "still be mostly the initial weights. 0.99 (half-life 69 G steps, 4.4k images) is used "
    "for all three models, chosen from that arithmetic; the raw G is reported beside it",
    "- the progressive trainer reads its clock after every D step, so the budgets end on time; "
    "its EMA decay ramps up as min(decay, (1 + t) / (10 + t)) after t G steps",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = base_parser(__doc__)
    parser.add_argument("--budget-s", type=float, default=480.0, help="CPU seconds per model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=128)
    parser.add_argument("--autocast", default="bf16", choices=["bf16", "off"])
    parser.add_argument("--fade-images", type=int, default=3000)
    parser.add_argument("--stable-images", type=int, default=6000)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument(
        "--extra-ema", type=float, nargs="*", default=[], help="more EMA decays, same run"
    )
    parser.add_argument(
        "--lr", type=float, default=ProgressiveTrainerConfig.lr, help="the progressive models' lr"
    )
    parser.add_argument(
        "--betas", nargs=2, type=float, default=list(ProgressiveTrainerConfig.betas), help="betas"
    )
    parser.add_argument(
        "--dcgan-lr", type=float, default=None, help="DCGAN's lr for G and D (default: paper's)"
    )
    parser.add_argument(
        "--dcgan-base", type=int, default=64, help="DCGAN's base channels (G's last, D's first)"
    )
    parser.add_argument(
        "--lr-decay",
        type=float,
        default=None,
        help="the progressive models' lr falls linearly to 0 after this fraction of the budget",
    )
    parser.add_argument(
        "--dcgan-lr-decay",
        type=float,
        default=None,
        help="DCGAN's lrs fall linearly to 0 after this fraction of the budget (default: constant)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="the models' initialisation and training order"
    )
    parser.add_argument("--eval", type=int, default=2000, help="images per set for metrics")
    parser.add_argument("--latents", type=int, default=64, help="latents for the properties")
    parser.add_argument("--feature-epochs", type=int, default=2)
    parser.add_argument("--feature-rows", type=int, default=None, help="FeatureNet rows")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--loss", default=DEFAULT_LOSS, help="the progressive models' loss")
    parser.add_argument("--r1-gamma", type=float, default=None, help="default: the loss's")
    parser.add_argument("--channel-base", type=int, default=ProGANConfig.channel_base)
    parser.add_argument("--max-channels", type=int, default=ProGANConfig.max_channels)
    parser.add_argument("--mapping-layers", type=int, default=StyleGANConfig.mapping_layers)
    parser.add_argument("--style-mixing", type=float, default=StyleGANConfig.style_mixing_prob)
    parser.add_argument(
        "--fixed-resolution",
        action="store_true",
        help="StyleGAN trains at 32x32 from the start (no progressive growing)",
    )
    parser.add_argument("--augment", default="", help="DiffAugment policy of the progressive D")
    parser.add_argument("--ada-target", type=float, default=None, help="ADA's target (e.g. 0.6)")
    parser.add_argument("--json", type=Path, default=None, help="rows in gan_quality.json's form")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets")
    parser.add_argument("--out", type=Path, default=Path(".state/bench/progressive_quality.md"))
    parser.add_argument("--samples", type=Path, default=Path("docs/progressive_samples.png"))
    parser.add_argument("--interp", type=Path, default=Path("docs/stylegan_interpolation.png"))
    args = parser.parse_args(argv)
    if args.quick:
        args.budget_s, args.eval, args.latents = 10.0, 300, 16
        args.fade_images, args.stable_images = 128, 256
        args.feature_epochs, args.feature_rows = 1, 2000
    return args


def pad(images: torch.Tensor) -> torch.Tensor:
    """28x28 -> 32x32 with 2 zero pixels on each side."""
    return F.pad(images, (2, 2, 2, 2))


def crop(images: torch.Tensor) -> torch.Tensor:
    """32x32 -> the centre 28x28 (the FeatureNet's input)."""
    return images[..., 2:30, 2:30]


def make_model(name: str, args: argparse.Namespace) -> torch.nn.Module:
    """A freshly initialised model (seed `--seed`)."""
    torch.manual_seed(args.seed)
    nets = {"latent_dim": args.latent_dim, "ema_decay": args.ema_decay}
    if name == "DCGAN":
        config = GANConfig(SHAPE, architecture="dcgan", base_channels=args.dcgan_base, **nets)
        return GAN(config)
    common = {"channel_base": args.channel_base, "max_channels": args.max_channels,
              "loss": args.loss, "r1_gamma": args.r1_gamma, "drift": 1e-3}  # fmt: skip
    if name == "ProGAN":
        return ProGAN(ProGANConfig(data_shape=SHAPE, **common, **nets))
    return StyleGAN(
        StyleGANConfig(
            data_shape=SHAPE, w_dim=128, mapping_layers=args.mapping_layers,
            style_mixing_prob=args.style_mixing,
            progressive=not args.fixed_resolution, **common, **nets,
        )
    )  # fmt: skip


def fit_dcgan(model: GAN, images: torch.Tensor, args) -> GANTrainer:
    """Train DCGAN for `--budget-s` CPU seconds (the trainer reads the process clock after every
    step, as the progressive trainer does) with the non-saturating loss's paper settings (the lr
    `--dcgan-lr` when given)."""
    config = paper_trainer_config(
        "non_saturating",
        steps=None,
        batch_size=args.batch_size,
        seed=args.seed,
        autocast=args.autocast,
    )
    config = dataclasses.replace(
        config, max_seconds=args.budget_s, clock="process", lr_decay_start=args.dcgan_lr_decay
    )
    if args.dcgan_lr is not None:
        config = dataclasses.replace(
            config, lr_generator=args.dcgan_lr, lr_discriminator=args.dcgan_lr
        )
    trainer = GANTrainer(model, config)
    trainer.fit(images)
    return trainer


def cpu_seconds(function, *arguments) -> tuple[object, float]:
    """function(*arguments) and the process CPU seconds it took."""
    start = time.process_time()
    result = function(*arguments)
    return result, time.process_time() - start


class PhaseClock(Callback):
    """Records the process CPU seconds of every progressive phase."""

    def on_train_begin(self, trainer) -> None:
        self.last, self.seconds = time.process_time(), []

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        now = time.process_time()
        self.seconds.append(now - self.last)
        self.last = now
        log(f"  phase {epoch}: {logs} in {self.seconds[-1]:.1f} CPU s")


def train_model(name: str, images: torch.Tensor, args: argparse.Namespace) -> dict:
    """Train one model on the budget; the model with its counts and CPU seconds."""
    model = make_model(name, args)
    row = {"model": model, "params": [count(model.generator), count(model.discriminator)]}
    row["shadows"] = EMAShadows(model, args.extra_ema)
    if name == "DCGAN":
        trainer, seconds = cpu_seconds(fit_dcgan, model, images, args)
        row.update(stage="32x32 (no growth)", images=trainer.discriminator_steps * args.batch_size)
    else:
        config = ProgressiveTrainerConfig(
            batch_size=args.batch_size, lr=args.lr, betas=tuple(args.betas),
            fade_images=args.fade_images, stable_images=args.stable_images,
            final_images=10**9, n_critic=1, seed=args.seed, device="cpu", autocast=args.autocast,
            max_seconds=args.budget_s, clock="process", augment=args.augment,
            ada_target=args.ada_target, lr_decay_start=args.lr_decay,
        )  # fmt: skip
        clock = PhaseClock()
        trainer = ProgressiveTrainer(model, config, [clock])
        _, seconds = cpu_seconds(trainer.fit, images)
        last = trainer.history[-1]
        reached = f"{last['resolution']}x{last['resolution']}"
        if trainer.schedule[len(trainer.history) - 1].kind == "fade" and last["alpha"] < 1:
            reached += f" fade-in, alpha {last['alpha']:.2f}"
        row.update(stage=reached, images=sum(int(h["images"]) for h in trainer.history))
        kinds = [phase.kind for phase in trainer.schedule[: len(trainer.history)]]
        row["phases"] = list(zip(kinds, trainer.history, clock.seconds, strict=True))
    row.update(seconds=seconds, g_steps=trainer.generator_steps)
    log(f"{name}: {row['g_steps']} G steps, {row['images']} images, {seconds:.0f} CPU s")
    return row


def count(net: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in net.parameters())


def samples(model, n: int, seed: int, *, raw: bool = False, psi: float | None = None):
    """n samples (32x32, [0, 1]) in batches; `raw` uses G instead of its EMA."""
    ema = model.generator_ema
    if raw:
        model.generator_ema = None  # sampling_generator() falls back to G
    try:
        parts = [
            model.sample(min(500, n - start), seed=seed + start, truncation=psi)
            for start in range(0, n, 500)
        ]
    finally:
        model.generator_ema = ema
    return torch.cat(parts)


def evaluate(net: FeatureNet, real: torch.Tensor, fake: torch.Tensor) -> dict:
    """FID, KID, precision and recall of the centre 28x28 of `fake` against `real`."""
    return image_quality(real, crop(fake), net)


def feature_net(train: tuple, test: tuple, args: argparse.Namespace) -> tuple[FeatureNet, float]:
    """The frozen FeatureNet of this run and its test accuracy."""
    rows = slice(args.feature_rows)
    config = FeatureNetConfig(IMAGE_SHAPE, num_classes=10)
    net = train_feature_net(
        train[0][rows], train[1][rows], config, epochs=args.feature_epochs, seed=0, device="cpu"
    )
    return net, accuracy(net, *test)


def run_all(args: argparse.Namespace, start: float) -> dict:
    """Train every model, evaluate, and write the report after each model."""
    train, test = fashion("train"), fashion("test")
    net, net_accuracy = feature_net(train, test, args)
    log(f"FeatureNet: test accuracy {net_accuracy:.4f}")
    rng = torch.Generator().manual_seed(0)
    real = test[0][torch.randperm(len(test[0]), generator=rng)[: args.eval]]
    floor_rows = torch.randperm(len(train[0]), generator=rng)[: args.eval]
    floor = evaluate(net, real, pad(train[0][floor_rows]))
    results = {"feature_accuracy": net_accuracy, "floor": floor, "rows": {}, "grids": {}}
    images = pad(train[0])
    for name in args.models:
        row = train_model(name, images, args)
        model = row.pop("model")
        row["ema"] = evaluate(net, real, samples(model, args.eval, seed=1))
        row["raw"] = evaluate(net, real, samples(model, args.eval, seed=1, raw=True))
        row["extra_ema"] = extra_ema_metrics(row.pop("shadows"), net, real, args.eval)
        log(f"{name}: EMA {row['ema']}, raw G {row['raw']}")
        results["rows"][name] = row
        results["grids"][name] = samples(model, 24, seed=7)
        if name == "StyleGAN":
            results["truncation"] = {
                psi: evaluate(net, real, samples(model, args.eval, seed=1, psi=psi)) for psi in PSIS
            }
            results["properties"] = properties(model, args.latents)
            draw_interpolations(interpolations(model), args.interp)
        write_report(args.out, report(results, args, time.perf_counter() - start))
    return results


def extra_ema_metrics(shadows: EMAShadows, net: FeatureNet, real: torch.Tensor, n: int) -> dict:
    """Metrics of every extra EMA copy's samples (`--extra-ema`), by decay."""
    metrics = {}
    for decay in shadows.copies:
        with shadows.swapped_in(decay):
            metrics[decay] = evaluate(net, real, samples(shadows.model, n, seed=1))
        log(f"EMA {decay:g}: {metrics[decay]}")
    return metrics


def draw_samples(grids: dict[str, torch.Tensor], results: dict, path: Path) -> None:
    """One 2 x 12 block of EMA samples per model, titled with its FID."""
    from generative.gan.latent import image_grid

    plt = plt_module()
    figure, axes = plt.subplots(len(grids), 1, figsize=(6.5, 1.5 * len(grids)), squeeze=False)
    for axis, (name, images) in zip(axes[:, 0], grids.items(), strict=True):
        axis.imshow(image_grid(images, nrow=12)[:, :, 0], cmap="gray", vmin=0, vmax=255)
        axis.set_title(f"{name} (EMA G, FID {results['rows'][name]['ema']['fid']:.1f})", fontsize=8)
        axis.axis("off")
    figure.tight_layout()
    save_grey(figure, path)


def main_table(results: dict) -> list[str]:
    """One row per model and weights, and the floor."""
    lines = [
        "| model | weights | params G / D | CPU s | G steps | images seen | stage reached | FID "
        "| KID (sd) | precision | recall |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["rows"].items():
        g, d = row["params"]
        facts = f"{g / 1e6:.2f}M / {d / 1e6:.2f}M | {row['seconds']:.0f} | {row['g_steps']:,} | "
        facts += f"{row['images']:,} | {row['stage']}"
        lines.append(f"| {name} | EMA G | {facts} | {metric_cells(row['ema'])} |")
        lines.append(f"| {name} | raw G | {facts} | {metric_cells(row['raw'])} |")
        for decay, metrics in row["extra_ema"].items():
            lines.append(f"| {name} | EMA G, decay {decay:g} | {facts} | {metric_cells(metrics)} |")
    lines.append(
        f"| real train (floor) | - | - | - | - | - | - | {metric_cells(results['floor'])} |"
    )
    return lines


def phase_lines(results: dict) -> list[str]:
    """Measured throughput of every progressive phase."""
    lines = []
    for name, row in results["rows"].items():
        if "phases" in row:
            cells = [
                f"{h['resolution']}x{h['resolution']} {kind} {int(h['images']):,} / {s:.1f} "
                f"({h['images'] / max(s, 1e-9):.0f}/s)"
                for kind, h, s in row["phases"]
            ]
            lines.append(f"- {name} phases (images / CPU s): " + "; ".join(cells))
        else:
            rate = row["g_steps"] / max(row["seconds"], 1e-9)
            lines.append(f"- {name}: {rate:.2f} G steps per CPU s (budget read on the clock)")
    return lines


def growing_models(args: argparse.Namespace) -> str:
    """The models of this run that grow progressively (StyleGAN not with --fixed-resolution)."""
    growing = [m for m in ("ProGAN", "StyleGAN") if m in args.models]
    if args.fixed_resolution:
        growing = [m for m in growing if m != "StyleGAN"]
    return " and ".join(growing) or "no model of this run grows"


def report(results: dict, args: argparse.Namespace, wall: float) -> list[str]:
    """The markdown section."""
    title = "DCGAN vs Progressive GAN vs StyleGAN on Fashion-MNIST 32x32 at equal CPU time"
    return [
        *header_lines(title, wall),
        f"- budget: {args.budget_s:.0f} CPU seconds (process clock) of training per model, "
        f"batch {args.batch_size}, latent {args.latent_dim}, autocast {args.autocast}, "
        f"seed {args.seed}, EMA of G with decay {args.ema_decay}",
        f"- DCGAN: base {args.dcgan_base} channels; "
        + settings_line("non_saturating")
        + (f"; lr overridden to {args.dcgan_lr:g}" if args.dcgan_lr is not None else "")
        + (
            f"; lrs decay linearly to 0 from {args.dcgan_lr_decay:g} of the budget"
            if args.dcgan_lr_decay is not None
            else ""
        ),
        f"- ProGAN / StyleGAN: channel_base {args.channel_base}, max {args.max_channels} "
        f"channels, loss {args.loss}, R1 gamma {r1_text(args)} (every 16 D steps), drift "
        f"1e-3, Adam lr {args.lr:g}, betas ({args.betas[0]:g}, {args.betas[1]:g}), n_critic 1; "
        f"StyleGAN: w_dim 128, {args.mapping_layers} mapping layers, style mixing "
        f"{args.style_mixing:g}, "
        + ("fixed 32x32 (no growing)" if args.fixed_resolution else "progressive growing")
        + f"; augmentation {args.augment or 'none'}, ADA target {args.ada_target}"
        + (
            f"; lr decays linearly to 0 from {args.lr_decay:g} of the budget"
            if args.lr_decay is not None
            else ""
        ),
        f"- growth schedule ({growing_models(args)}): {args.fade_images:,} images per fade-in, "
        f"{args.stable_images:,} per stable phase, then 32x32 stable until the budget ends",
        *NOTES,
        *phase_lines(results),
        f"- features: FeatureNet trained on {args.feature_rows or 60_000:,} training images, "
        f"{args.feature_epochs} epoch(s), seed 0; test accuracy {results['feature_accuracy']:.4f}",
        f"- metrics: {args.eval} samples (centre 28x28) vs {args.eval} test images; floor: "
        f"{args.eval} training images; KID 100 subsets of 1000 (MMD^2 of unnormalised "
        "FeatureNet activations: a different scale from Inception KID, so it is shown "
        "unscaled; only ratios between rows mean anything); precision/recall k = 3",
        "",
        *main_table(results),
        *stylegan_sections(results, args),
    ]


def r1_text(args: argparse.Namespace) -> str:
    """R1's weight as run: the option, else the library's default for the loss."""
    from generative.progressive.config import default_r1_gamma

    gamma = default_r1_gamma(args.loss) if args.r1_gamma is None else args.r1_gamma
    return f"{gamma:g}"


def run_and_draw(args: argparse.Namespace) -> dict:
    """`run_all` (its interim reports timed from here), then the sample grids."""
    results = run_all(args, time.perf_counter())
    draw_samples(results["grids"], results, args.samples)
    if args.json is not None:
        write_quality_json(results, args)
    return results


def write_quality_json(results: dict, args: argparse.Namespace) -> None:
    """docs/results/gan_quality.json's form: one row per model (EMA G, psi 1) and per
    StyleGAN truncation."""

    def row(model: str, metrics: dict, psi: float) -> dict:
        return {"model": model, "conditional": False, "budget_cpu_s": args.budget_s,
                "fid": metrics["fid"], "precision": metrics["precision"],
                "recall": metrics["recall"], "truncation": psi,
                "ema_decay": args.ema_decay}  # fmt: skip

    rows = [row(name, r["ema"], 1.0) for name, r in results["rows"].items()]
    for name, r in results["rows"].items():
        rows += [{**row(name, m, 1.0), "ema_decay": d} for d, m in r["extra_ema"].items()]
    truncated = results.get("truncation", {}).items()
    rows += [row("StyleGAN", m, psi) for psi, m in truncated if psi != 1.0]  # psi 1: the EMA row
    payload = {"command": command_line(), "commit": git_commit(),
               "date": datetime.date.today().isoformat(), "threads": args.threads,
               "settings": {"loss": args.loss, "r1_gamma": args.r1_gamma,
                            "channel_base": args.channel_base,
                            "max_channels": args.max_channels, "augment": args.augment,
                            "ada_target": args.ada_target, "dcgan_lr": args.dcgan_lr,
                            "dcgan_lr_decay": args.dcgan_lr_decay, "lr_decay": args.lr_decay,
                            "dcgan_base": args.dcgan_base, "seed": args.seed,
                            "ema_decay": args.ema_decay,
                            "stylegan_fixed_resolution": args.fixed_resolution},
               "rows": rows}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    log(f"wrote {args.json}")


def main(argv: list[str] | None = None) -> None:
    """Train, evaluate, draw and report."""
    run_benchmark(parse_args(argv), run_and_draw, report)


if __name__ == "__main__":
    main()

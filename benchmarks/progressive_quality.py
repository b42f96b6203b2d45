"""DCGAN, Progressive GAN and StyleGAN on Fashion-MNIST at 32x32 at an equal CPU-time budget:
FID, KID, precision and recall in the domain feature space; StyleGAN's truncation, noise and
style-mixing properties; sample grids and z / w interpolations for docs/.

Data: the 60,000 training images padded from 28x28 to 32x32 with 2 zero pixels per side.
Every model gets `--budget-s` seconds of this process's CPU time (`time.process_time`, so
other jobs on a busy machine do not eat into it). DCGAN (non-saturating loss, the paper's Adam
settings) is capped at a G-step count from two timed throw-away runs of n and 3n G steps (the
marginal rate and the fixed cost of a fit, as in `gan_quality.py`, but on the process clock).
The progressive models (WGAN-GP, drift 1e-3, Adam 1e-3, betas (0, 0.99), n_critic 1) grow
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
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from gan_common import (
    IMAGE_SHAPE,
    fashion,
    header_lines,
    log,
    mean_sd,
    paper_trainer_config,
    settings_line,
    write_report,
)
from PIL import Image

from generative.gan import GAN, GANConfig, GANTrainer
from generative.metrics import (
    FeatureNet,
    FeatureNetConfig,
    accuracy,
    image_quality,
    train_feature_net,
)
from generative.progressive import ProGAN, ProGANConfig
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--budget-s", type=float, default=480.0, help="CPU seconds per model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=128)
    parser.add_argument("--autocast", default="bf16", choices=["bf16", "off"])
    parser.add_argument("--fade-images", type=int, default=3000)
    parser.add_argument("--stable-images", type=int, default=6000)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument("--eval", type=int, default=2000, help="images per set for metrics")
    parser.add_argument("--latents", type=int, default=64, help="latents for the properties")
    parser.add_argument("--feature-epochs", type=int, default=2)
    parser.add_argument("--feature-rows", type=int, default=None, help="FeatureNet rows")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
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
    """A freshly initialised model (seed 0)."""
    torch.manual_seed(0)
    nets = {"latent_dim": args.latent_dim, "ema_decay": args.ema_decay}
    if name == "DCGAN":
        config = GANConfig(SHAPE, architecture="dcgan", base_channels=64, **nets)
        return GAN(config)
    common = {"channel_base": 2048, "max_channels": 128, "loss": "wgan_gp", "drift": 1e-3}
    if name == "ProGAN":
        return ProGAN(ProGANConfig(data_shape=SHAPE, **common, **nets))
    return StyleGAN(
        StyleGANConfig(
            data_shape=SHAPE, w_dim=128, mapping_layers=8, style_mixing_prob=0.9,
            progressive=True, **common, **nets,
        )
    )  # fmt: skip


def fit_dcgan(model: GAN, steps: int, images: torch.Tensor, args) -> GANTrainer:
    """Train DCGAN for `steps` G steps with the non-saturating loss's paper settings."""
    config = paper_trainer_config(
        "non_saturating", steps=steps, batch_size=args.batch_size, seed=0, autocast=args.autocast
    )
    trainer = GANTrainer(model, config)
    trainer.fit(images)
    return trainer


def cpu_seconds(function, *arguments) -> tuple[object, float]:
    """function(*arguments) and the process CPU seconds it took."""
    start = time.process_time()
    result = function(*arguments)
    return result, time.process_time() - start


def dcgan_steps(images: torch.Tensor, args: argparse.Namespace) -> tuple[int, str]:
    """G steps that fit the budget: the marginal rate and fixed cost from throw-away runs of
    n and 3n G steps (n grown until the longer takes >= 2 CPU s)."""
    fit_dcgan(make_model("DCGAN", args), 2, images, args)  # warm-up
    n = 10
    while True:
        _, short = cpu_seconds(fit_dcgan, make_model("DCGAN", args), n, images, args)
        _, long = cpu_seconds(fit_dcgan, make_model("DCGAN", args), 3 * n, images, args)
        if long >= 2.0:
            break
        n *= 4
    fixed, rate = max(0.0, 1.5 * short - 0.5 * long), 2 * n / max(long - short, 1e-6)
    note = f"{rate:.2f} G steps per CPU s, fixed cost {fixed:.1f} s (n = {n})"
    log(f"DCGAN calibration: {note}")
    return max(1, int((args.budget_s - fixed) * rate)), note


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
    if name == "DCGAN":
        steps, row["calibration"] = dcgan_steps(images, args)
        trainer, seconds = cpu_seconds(fit_dcgan, model, steps, images, args)
        row.update(stage="32x32 (no growth)", images=trainer.discriminator_steps * args.batch_size)
    else:
        config = ProgressiveTrainerConfig(
            batch_size=args.batch_size, lr=1e-3, betas=(0.0, 0.99),
            fade_images=args.fade_images, stable_images=args.stable_images,
            final_images=10**9, n_critic=1, seed=0, device="cpu", autocast=args.autocast,
            max_seconds=args.budget_s, clock="process",
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


def render(model: StyleGAN, ws: torch.Tensor, noise_mode: str, rng=None) -> torch.Tensor:
    """The EMA synthesis net's images for ws at the stage training reached, at 32x32, [0, 1]."""
    net = model.sampling_generator().eval()
    stage, alpha = int(model.progress[0]), float(model.progress[1])
    with torch.no_grad():
        image = net.synthesis(ws, stage, alpha, noise_mode=noise_mode, rng=rng).float()
    factor = SHAPE[-1] // image.shape[-1]
    image = image.repeat_interleave(factor, -1).repeat_interleave(factor, -2)
    return model.to_data_scale(image)


def styles(model: StyleGAN, z: torch.Tensor, **options) -> torch.Tensor:
    """The EMA generator's (N, num_layers, w_dim) ws for z."""
    with torch.no_grad():
        return model.sampling_generator().eval().styles(z, **options)


def latents(model: StyleGAN, n: int, seed: int) -> torch.Tensor:
    """n seeded z."""
    return model.sample_latent(n, generator=torch.Generator().manual_seed(seed))


def relative_change(a: torch.Tensor, b: torch.Tensor, pool: int = 1) -> np.ndarray:
    """||b - a|| / ||a|| per image, after `pool` x `pool` average pooling."""
    a, b = F.avg_pool2d(a, pool).flatten(1), F.avg_pool2d(b, pool).flatten(1)
    return ((b - a).norm(dim=1) / a.norm(dim=1).clamp_min(1e-8)).numpy()


def pattern(images: torch.Tensor) -> torch.Tensor:
    """The 8x8 low-pass pattern of each image, centred and scaled to unit norm."""
    x = F.avg_pool2d(images, 4).flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)


def properties(model: StyleGAN, n: int) -> dict:
    """Noise vs w (relative changes) and style mixing (pattern correlations) on n latents."""
    z_a, z_b = latents(model, n, 10), latents(model, n, 11)
    ws_a, ws_b = styles(model, z_a), styles(model, z_b)
    base = render(model, ws_a, "random", torch.Generator().manual_seed(1))
    new_noise = render(model, ws_a, "random", torch.Generator().manual_seed(2))
    new_w = render(model, ws_b, "random", torch.Generator().manual_seed(1))
    out = {
        f"{what}, {name}": relative_change(base, other, pool)
        for what, other in (("new noise", new_noise), ("new w", new_w))
        for name, pool in (("raw", 1), ("4x4-pooled", 4))
    }
    image_a, image_b = render(model, ws_a, "const"), render(model, ws_b, "const")
    p_a, p_b = pattern(image_a), pattern(image_b)
    mixing = {"A vs B (unmixed)": ((p_a * p_b).sum(1).numpy(), None)}
    for cut in CROSSOVERS:
        p_mix = pattern(render(model, styles(model, z_a, mix_z=z_b, mix_layer=cut), "const"))
        mixing[f"crossover {cut}"] = ((p_mix * p_a).sum(1).numpy(), (p_mix * p_b).sum(1).numpy())
    return {"noise": out, "mixing": mixing}


def interpolations(model: StyleGAN, pairs: int = 4, steps: int = 10) -> list[tuple]:
    """For each latent pair, (z row, w row) of linear interpolations, constant noise."""
    t = torch.linspace(0, 1, steps)[:, None]
    z0, z1 = latents(model, pairs, 20), latents(model, pairs, 21)
    rows = []
    for k in range(pairs):
        z = torch.lerp(z0[k], z1[k], t)
        w0, w1 = styles(model, z0[k : k + 1])[:, 0], styles(model, z1[k : k + 1])[:, 0]
        ws = torch.lerp(w0, w1, t)[:, None].expand(-1, model.config.num_layers, -1)
        rows.append((render(model, styles(model, z), "const"), render(model, ws, "const")))
    return rows


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


def plt_module():
    """matplotlib's pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grey(figure, path: Path) -> None:
    """Save a figure as a greyscale PNG (a third of the bytes)."""
    plt = plt_module()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    Image.open(path).convert("L").save(path, optimize=True)
    log(f"wrote {path}")


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


def draw_interpolations(rows: list[tuple], path: Path) -> None:
    """Per latent pair, the z interpolation above the w interpolation, labelled."""
    from generative.gan.latent import image_grid

    plt = plt_module()
    figure, axes = plt.subplots(2 * len(rows), 1, figsize=(7, 0.6 * 2 * len(rows)))
    for k, pair in enumerate(rows):
        for j, (space, images) in enumerate(zip(("z", "w"), pair, strict=True)):
            axis = axes[2 * k + j]
            axis.imshow(
                image_grid(images, nrow=len(images))[:, :, 0], cmap="gray", vmin=0, vmax=255
            )
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_ylabel(
                f"pair {k + 1}: {space}", rotation=0, ha="right", va="center", fontsize=8
            )
    figure.suptitle("StyleGAN: linear interpolation in z vs in w (constant noise)", fontsize=9)
    figure.tight_layout()
    save_grey(figure, path)


def metric_cells(m: dict) -> str:
    """FID | KID (sd over subsets) | precision | recall."""
    kid = f"{m['kid']:.3g} ({m['kid_std']:.2g})"
    return f"{m['fid']:.2f} | {kid} | {m['precision']:.3f} | {m['recall']:.3f}"


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
            lines.append(f"- {name} calibration: {row['calibration']}")
    return lines


def stylegan_sections(results: dict, args: argparse.Namespace) -> list[str]:
    """Truncation table and the noise / mixing measurements."""
    if "properties" not in results:
        return []
    lines = ["", "#### StyleGAN truncation (EMA G, psi in w space, all layers)", ""]
    lines += ["| psi | FID | KID (sd) | precision | recall |", "|---|---|---|---|---|"]
    lines += [f"| {psi} | {metric_cells(m)} |" for psi, m in results["truncation"].items()]
    noise, mixing = results["properties"]["noise"], results["properties"]["mixing"]
    lines += ["", f"#### StyleGAN noise vs w ({args.latents} latents, mean ± sd)", "",
              "Relative L2 change ||x' - x|| / ||x|| of the [0, 1] image (raw) and of its 4x4 "
              "average-pooled (8x8 low-pass) version:", "",
              "| change | raw | 4x4-pooled | pooled / raw |", "|---|---|---|---|"]  # fmt: skip
    for what, label in (("new noise", "same w, new noise"), ("new w", "new w, same noise")):
        raw, pooled = noise[f"{what}, raw"], noise[f"{what}, 4x4-pooled"]
        ratio = pooled.mean() / max(raw.mean(), 1e-12)
        lines.append(f"| {label} | {mean_sd(raw)} | {mean_sd(pooled)} | {ratio:.2f} |")
    lines += ["", "#### StyleGAN style mixing (constant noise)", "",
              "Correlation of the centred, normalised 8x8 low-pass pattern of mix(layers < "
              "crossover from A, the rest from B) with A's and with B's (layers 0-1: 4x4, "
              "2-3: 8x8, 4-5: 16x16, 6-7: 32x32):", "",
              "| crossover | corr with A | corr with B |", "|---|---|---|"]  # fmt: skip
    for key, (with_a, with_b) in mixing.items():
        lines.append(f"| {key} | {mean_sd(with_a, signed=True)} | "
                     f"{'-' if with_b is None else mean_sd(with_b, signed=True)} |")  # fmt: skip
    return lines


def report(results: dict, args: argparse.Namespace, wall: float) -> list[str]:
    """The markdown section."""
    title = "DCGAN vs Progressive GAN vs StyleGAN on Fashion-MNIST 32x32 at equal CPU time"
    return [
        *header_lines(title, wall),
        f"- budget: {args.budget_s:.0f} CPU seconds (process clock) of training per model, "
        f"batch {args.batch_size}, latent {args.latent_dim}, autocast {args.autocast}, seed 0, "
        f"EMA of G with decay {args.ema_decay}",
        "- DCGAN: base 64 channels; " + settings_line("non_saturating"),
        "- ProGAN / StyleGAN: channel_base 2048, max 128 channels, WGAN-GP (lambda 10), drift "
        "1e-3, Adam lr 1e-3, betas (0, 0.99), n_critic 1; StyleGAN: w_dim 128, 8 mapping "
        "layers, style mixing 0.9",
        f"- growth schedule: {args.fade_images:,} images per fade-in, {args.stable_images:,} "
        "per stable phase, then 32x32 stable until the budget ends",
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


def main(argv: list[str] | None = None) -> None:
    """Train, evaluate, draw and report."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    log(f"torch threads: {torch.get_num_threads()}")
    start = time.perf_counter()
    results = run_all(args, start)
    draw_samples(results["grids"], results, args.samples)
    write_report(args.out, report(results, args, time.perf_counter() - start))


if __name__ == "__main__":
    main()

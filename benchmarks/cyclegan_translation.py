"""CycleGAN on a translation whose answer is known: MNIST digits (domain A) against digits
under a fixed invertible transform T (domain B), with A and B drawn from disjoint halves of the
training split so that no pair is ever seen.

For each T (default: "invert_rot90", the issue's colour inversion then a quarter turn, and
"invert"): the data are `anomaly.data.cyclegan_data.load_cycle_data` (a seeded permutation of the
60,000 training digits cut in halves: A = first half, B = T(second half)); a CycleGAN with
the default `CycleGANConfig` (ResNet generator k = 16 with 6 residual blocks, 2-layer
PatchGAN, LSGAN, lambda_cycle 10, lambda_identity 0.5, history 50) and the paper's Adam
(2e-4, betas (0.5, 0.999)), batch 16, lr constant for the first half of the steps and then
decaying linearly (the paper's 100 + 100 epochs, scaled), trains for a wall-clock budget:
two short timed runs on a throw-away model (5 and 25 steps) measure the seconds per step, and
training is capped at budget / that many steps. Nothing is tuned.

Evaluation on the first `--eval` digits of a seeded permutation of the test split (never
trained on): mean |G_AB(x) - T(x)| and |G_BA(T(x)) - x| per pixel on the [0, 1] scale, the
cycle errors, for the trained model, for the same model at its initial weights (untrained
baseline) and for the identity map (x itself). Classification: a FeatureNet (default config,
2 epochs) trained on domain B's training images T(x) and their digit labels; its accuracy on
T(x) is the ceiling, then on G_AB(x) trained and untrained, and on x itself. A diagnostic
table gives |G_AB(x) - S(x)| for every known transform S beside |T(x) - S(x)|; digits are
mostly background, so pixel errors separate maps with the same background poorly, and the
classifier's accuracy is the telling measure of whether the digit survived the translation.

Usage:
    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/cyclegan_translation.py \
        --threads 1 --minutes 10 --out .state/bench/cyclegan_translation.md \
        --figure docs/cyclegan_translation.png
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from bench_common import base_parser, header_lines, log, run_benchmark
from gan_common import use_data_dir
from PIL import Image

from anomaly.data.cyclegan_data import CycleData, CycleDataSpec, load_cycle_data
from generative.cyclegan import (
    TRANSFORMS,
    CycleGAN,
    CycleGANConfig,
    CycleGANTrainer,
    CycleGANTrainerConfig,
    get_transform,
)
from generative.cyclegan.evaluation import mean_abs, translation_metrics
from generative.metrics import FeatureNet, FeatureNetConfig, accuracy, train_feature_net

FIGURE_COLUMNS = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = base_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per T")
    parser.add_argument("--transforms", nargs="+", default=["invert_rot90", "invert"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--decay-fraction", type=float, default=0.5)
    parser.add_argument("--eval", type=int, default=2000, help="test digits")
    parser.add_argument("--classifier-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="markdown report")
    parser.add_argument("--figure", type=Path, default=None, help="PNG grid of translations")
    return parser.parse_args(argv)


def trainer_config(args: argparse.Namespace, steps: int) -> CycleGANTrainerConfig:
    """The paper's Adam, capped at `steps` (epochs high enough never to bind)."""
    return CycleGANTrainerConfig(
        epochs=10**6, batch_size=args.batch_size, decay_fraction=args.decay_fraction,
        max_steps=steps, seed=args.seed, device="cpu", autocast="off",
    )  # fmt: skip


def timed_fit(data: CycleData, args: argparse.Namespace, steps: int) -> float:
    """Seconds to train a throw-away model for `steps` steps."""
    model = CycleGAN(CycleGANConfig(image_shape=data.image_shape))
    started = time.perf_counter()
    trainer = CycleGANTrainer(model, trainer_config(args, steps))
    trainer.fit(data.tensors("train_a")[:2000], data.tensors("train_b")[:2000])
    return time.perf_counter() - started


def budget_steps(data: CycleData, args: argparse.Namespace) -> tuple[int, float]:
    """(steps that fit the budget, measured seconds per step)."""
    short, long = timed_fit(data, args, 5), timed_fit(data, args, 25)
    per_step = max(long - short, 1e-3) / 20
    return max(1, int(args.minutes * 60 / per_step)), per_step


def train(data: CycleData, args: argparse.Namespace) -> dict:
    """Train on the data's two halves for the budget; the untrained copy is kept."""
    steps, per_step = budget_steps(data, args)
    log(f"{data.transform}: {per_step:.3f} s/step -> {steps} steps")
    torch.manual_seed(args.seed)
    model = CycleGAN(CycleGANConfig(image_shape=data.image_shape))
    untrained = copy.deepcopy(model).eval()
    started = time.perf_counter()
    history = CycleGANTrainer(model, trainer_config(args, steps)).fit(
        data.tensors("train_a"), data.tensors("train_b")
    )
    seconds = time.perf_counter() - started
    log(f"{data.transform}: trained {steps} steps in {seconds:.0f} s; last epoch {history[-1]}")
    return {"model": model, "untrained": untrained, "steps": steps, "seconds": seconds}


def domain_classifier(data: CycleData, args: argparse.Namespace) -> FeatureNet:
    """A FeatureNet on domain B's training images T(x) with their digit labels."""
    config = FeatureNetConfig(input_shape=data.image_shape, num_classes=10)
    return train_feature_net(
        data.train_b, data.train_b_labels, config, epochs=args.classifier_epochs,
        seed=args.seed, device="cpu",
    )  # fmt: skip


def evaluate(trained: dict, data: CycleData, classifier: FeatureNet) -> dict:
    """Errors and accuracies of the trained model, the untrained one and the identity map."""
    transform = get_transform(data.transform)
    test_a, test_b = data.tensors("test_a"), data.tensors("test_b")
    labels = torch.from_numpy(data.test_a_labels)
    options = {"transform": transform, "classify_b": classifier.predict, "labels_a": labels}
    row = {
        "trained": translation_metrics(trained["model"], test_a, test_b, **options),
        "untrained": translation_metrics(trained["untrained"], test_a, test_b, **options),
        "accuracy_identity": accuracy(classifier, test_a, labels),
        "steps": trained["steps"],
        "seconds": trained["seconds"],
    }
    fake_b, target = trained["model"].translate(test_a), transform(test_a)
    row["nearest"] = {name: mean_abs(fake_b, t(test_a)) for name, t in TRANSFORMS.items()}
    row["nearest"]["identity"] = mean_abs(fake_b, test_a)
    row["reference"] = {name: mean_abs(target, t(test_a)) for name, t in TRANSFORMS.items()}
    row["reference"]["identity"] = mean_abs(target, test_a)
    return row


def figure_rows(trained: dict, data: CycleData) -> torch.Tensor:
    """x, T(x), G_AB(x), G_BA(T(x)) for the first test digits, stacked row by row."""
    x = data.tensors("test_a")[:FIGURE_COLUMNS]
    tx = get_transform(data.transform)(x)
    model = trained["model"]
    return torch.cat([x, tx, model.translate(x), model.translate(tx, "b_to_a")])


def draw_figure(panels: dict[str, torch.Tensor], path: Path) -> None:
    """One block of 4 rows per transform, titled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from generative.gan.latent import image_grid

    figure, axes = plt.subplots(len(panels), 1, figsize=(6, 2.7 * len(panels)), squeeze=False)
    for axis, (name, images) in zip(axes[:, 0], panels.items(), strict=True):
        axis.imshow(image_grid(images, nrow=FIGURE_COLUMNS)[:, :, 0], cmap="gray", vmin=0,
                    vmax=255)  # fmt: skip
        axis.set_title(f"T = {name}; rows: x, T(x), G_AB(x), G_BA(T(x))", fontsize=8)
        axis.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    Image.open(path).convert("L").save(path, optimize=True)
    log(f"wrote {path}")


def table(rows: dict[str, dict]) -> list[str]:
    """The translation table: one row per (transform, model)."""
    lines = [
        "| T | model | \\|G_AB(x) - T(x)\\| | \\|G_BA(T(x)) - x\\| | cycle A | cycle B | "
        "B-classifier accuracy on G_AB(x) | steps | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        for label in ("trained", "untrained"):
            m = row[label]
            steps, seconds = (
                (f"{row['steps']:,}", f"{row['seconds']:.0f}") if label == "trained" else ("0", "-")
            )
            lines.append(
                f"| {name} | CycleGAN {label} | {m['translation_error_ab']:.4f} | "
                f"{m['translation_error_ba']:.4f} | {m['cycle_error_a']:.4f} | "
                f"{m['cycle_error_b']:.4f} | {m['accuracy_ab']:.4f} | {steps} | {seconds} |"
            )
        m = row["trained"]
        lines.append(
            f"| {name} | identity map (x itself) | {m['identity_map_error_ab']:.4f} | "
            f"{m['identity_map_error_ba']:.4f} | 0 | 0 | {row['accuracy_identity']:.4f} | - | - |"
        )
        lines.append(
            f"| {name} | T itself (ceiling) | 0 | 0 | 0 | 0 | {m['accuracy_target']:.4f} | - | - |"
        )
    return lines


def nearest_lines(rows: dict[str, dict]) -> list[str]:
    """Which known map the trained G_AB is closest to, per transform; T(x)'s own distances to
    each map for reference (digits are mostly background, so even wrong maps can be close)."""
    names = [*TRANSFORMS, "identity"]
    lines = [
        "",
        "Diagnostic: mean |G_AB(x) - S(x)| of the trained G_AB for every known map S, and "
        "|T(x) - S(x)| for reference:",
        "",
        "| T | compared | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for name, row in rows.items():
        for label, key in (("G_AB(x)", "nearest"), ("T(x)", "reference")):
            cells = " | ".join(f"{row[key][s]:.4f}" for s in names)
            lines.append(f"| {name} | {label} | {cells} |")
    return lines


def report(rows: dict[str, dict], args: argparse.Namespace, wall: float) -> list[str]:
    """The markdown section."""
    notes = [] if args.figure is None else [f"- figure: `{args.figure}`"]
    return [
        *header_lines("CycleGAN translation on MNIST with a known transform T", wall),
        f"- budget: {args.minutes:g} min of training per T (1 CPU thread), batch "
        f"{args.batch_size}, default CycleGANConfig (ResNet G k = 16, 6 residual blocks; "
        "PatchGAN D, 2 stride-2 layers; LSGAN; lambda_cycle 10, lambda_identity 0.5; history "
        f"50); Adam 2e-4, betas (0.5, 0.999), linear decay over the last "
        f"{args.decay_fraction:g} of the steps; seed {args.seed}; nothing tuned",
        "- data: A = 30,000 MNIST training digits, B = T(the other 30,000) (a seeded "
        f"permutation; no digit in both); evaluation on {args.eval} test digits x (never "
        "trained on), errors per pixel on the [0, 1] scale",
        f"- classifier: a FeatureNet (default config, {args.classifier_epochs} epochs) trained "
        "on domain B's 30,000 training images T(x) with their digit labels; its accuracy on "
        "T(test x) is the ceiling",
        *notes,
        "",
        *table(rows),
        *nearest_lines(rows),
    ]


def run_all(args: argparse.Namespace) -> dict[str, dict]:
    """Train and evaluate one CycleGAN per transform (rows by transform); draw the figure."""
    use_data_dir()
    rows, panels = {}, {}
    for name in args.transforms:
        data = load_cycle_data(CycleDataSpec("mnist", name, test_rows=args.eval), seed=args.seed)
        classifier = domain_classifier(data, args)
        trained = train(data, args)
        rows[name] = evaluate(trained, data, classifier)
        panels[name] = figure_rows(trained, data)
        log(f"{name}: {rows[name]}")
    if args.figure is not None:
        draw_figure(panels, args.figure)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Train one CycleGAN per transform, evaluate, write the report and the figure."""
    run_benchmark(parse_args(argv), run_all, report)


if __name__ == "__main__":
    main()

"""Data augmentation with GAN samples when real data are scarce: a classifier and a detector.

(a) Classifier. Per seed, a class-balanced subset of `--per-class` x 10 Fashion-MNIST training
images (numpy rng(seed)) is all the data there is. A class-conditional DCGAN (non-saturating,
the DCGAN paper's Adam settings) is trained on those images only, for `--gan-steps` G steps.
A classifier of the metrics package's FeatureNet architecture is trained (a) on the real
images alone and (b) on the real images plus `--synthetic-ratio` times as many cDCGAN samples
(balanced labels); both get about `--classifier-steps` minibatch steps of 64 (epochs rounded
up), so they see equal compute. Accuracy on the whole real test split.

(b) Detector. Per normal class in `--classes` and seed, `--normals` training images of that
class (numpy rng(seed)) are the scarce normal data. An unconditional DCGAN with the same
settings is trained on them only. `anomaly.VAEDetector` (its defaults except:
correction="likelihood_ratio", at most `--vae-epochs` epochs with patience 5, IWAE K = `--k`,
bf16 scoring, random_state = seed) is fitted (a) on the normals alone and (b) on the normals
plus `--synthetic-ratio` times as many GAN samples (rounded to 8-bit like the real images);
its background model is trained on the same rows as its VAE. AUROC of the raw IWAE score and
of the likelihood ratio on a fixed stratified test subset (`--test-per-class` rows of every
class; the other nine classes are the anomalies).

Nothing was tuned: every setting above was fixed before the first run, and the test split is
used only for the reported numbers. Mean ± sd over seeds and the paired gain (b) - (a).

Usage:
    .venv/bin/python benchmarks/gan_augmentation.py --threads 1 \
        --out .state/bench/gan_augmentation.md
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import base_parser, header_lines, log, ratio_detector, run_benchmark, table_head
from gan_common import IMAGE_SHAPE, balanced_subset, fashion, mean_sd, paper_trainer_config
from sklearn.metrics import roc_auc_score

from generative.gan import GAN, GANConfig, GANTrainer
from generative.metrics import FeatureNetConfig, accuracy, train_feature_net

TEST_SUBSET_SEED = 12345  # as benchmarks/one_class_novelty.py
CLASSIFIER_BATCH = 64
SCORES = ("iwae", "likelihood_ratio")
GAIN_COLUMNS = ("real only", "real + GAN samples", "gain", "gain per seed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = base_parser(__doc__)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=50, help="(a) real images per class")
    parser.add_argument("--classes", nargs="+", type=int, default=[0, 1], help="(b) normals")
    parser.add_argument("--normals", type=int, default=200, help="(b) real normal images")
    parser.add_argument("--gan-steps", type=int, default=1000, help="G steps of each GAN")
    parser.add_argument("--synthetic-ratio", type=int, default=4)
    parser.add_argument("--classifier-steps", type=int, default=600)
    parser.add_argument("--vae-epochs", type=int, default=30)
    parser.add_argument("--k", type=int, default=20, help="IWAE samples per row")
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--autocast", default="bf16", choices=["bf16", "off"])
    parser.add_argument("--parts", nargs="+", default=["classifier", "detector"])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets")
    parser.add_argument("--out", type=Path, default=None, help="markdown report")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.classes, args.gan_steps, args.classifier_steps = [0], [0], 5, 10
        args.vae_epochs, args.k, args.test_per_class = 1, 2, 20
    return args


def train_gan(images: torch.Tensor, labels: torch.Tensor | None, seed: int, args) -> GAN:
    """A (conditional when labels are given) DCGAN trained on `images` only."""
    torch.manual_seed(seed)
    classes = 0 if labels is None else 10
    model = GAN(GANConfig(IMAGE_SHAPE, architecture="dcgan", num_classes=classes))
    config = paper_trainer_config(
        "non_saturating",
        steps=args.gan_steps,
        batch_size=64,
        seed=seed,
        autocast=args.autocast,
    )
    start = time.perf_counter()
    GANTrainer(model, config).fit(images, labels)
    seconds = time.perf_counter() - start
    log(f"GAN on {len(images)} images: {args.gan_steps} G steps in {seconds:.0f} s")
    return model


def synthesize(model: GAN, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n samples in [0, 1] (balanced labels for a conditional GAN)."""
    labels = torch.arange(n) % 10 if model.config.num_classes else None
    return model.sample(n, labels, seed=seed), labels


def classifier_accuracy(images, labels, test, seed: int, args) -> float:
    """Test accuracy of a FeatureNet-architecture classifier given ~classifier_steps steps."""
    epochs = max(1, math.ceil(args.classifier_steps * CLASSIFIER_BATCH / len(images)))
    net = train_feature_net(
        images,
        labels,
        FeatureNetConfig(IMAGE_SHAPE, num_classes=10),
        epochs=epochs,
        batch_size=CLASSIFIER_BATCH,
        seed=seed,
        device="cpu",
    )
    return accuracy(net, *test)


def classifier_run(train: tuple, test: tuple, seed: int, args) -> dict:
    """(a) for one seed: real-only and real + cDCGAN accuracy."""
    rows = balanced_subset(train[1], args.per_class, seed)
    images, labels = train[0][rows], train[1][rows]
    gan = train_gan(images, labels, seed, args)
    fake, fake_labels = synthesize(gan, args.synthetic_ratio * len(images), seed=10_000 + seed)
    real_only = classifier_accuracy(images, labels, test, seed, args)
    mixed = classifier_accuracy(
        torch.cat([images, fake]), torch.cat([labels, fake_labels]), test, seed, args
    )
    log(f"classifier seed {seed}: real {real_only:.4f}, real + synthetic {mixed:.4f}")
    return {"seed": seed, "real": real_only, "augmented": mixed}


def test_subset(labels: torch.Tensor, per_class: int) -> np.ndarray:
    """Sorted test rows, `per_class` of every label, drawn once with rng(TEST_SUBSET_SEED)."""
    rng = np.random.default_rng(TEST_SUBSET_SEED)
    y = labels.numpy()
    rows = [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(rows))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[0, 1] floats to 8-bit images, like the data the detector is meant for."""
    return (images * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def detector_aurocs(normals: np.ndarray, test_X: np.ndarray, is_anomaly, seed: int, args):
    """AUROCs of the raw IWAE score and of the likelihood ratio of a VAEDetector fitted on
    `normals` (the background model is trained on the same rows)."""
    detector = ratio_detector(
        epochs=args.vae_epochs, patience=5, k=args.k, seed=seed, device="cpu"
    ).fit(normals)
    terms = detector.score_terms(test_X)
    scores = {
        "iwae": terms["log_px"],
        "likelihood_ratio": terms["log_px"] - terms["background_log_px"],
    }
    return {name: float(roc_auc_score(is_anomaly, -s)) for name, s in scores.items()}


def detector_run(train: tuple, test: tuple, label: int, seed: int, args) -> list[dict]:
    """(b) for one class and seed: detector AUROCs without and with GAN normals."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(np.flatnonzero(train[1].numpy() == label), args.normals, False))
    normals = train[0][rows]
    gan = train_gan(normals, None, seed, args)
    fake, _ = synthesize(gan, args.synthetic_ratio * len(normals), seed=10_000 + seed)
    subset = test_subset(test[1], args.test_per_class)
    test_X, is_anomaly = to_uint8(test[0][subset]), (test[1][subset] != label).numpy()
    real_only = detector_aurocs(to_uint8(normals), test_X, is_anomaly, seed, args)
    mixed_X = np.concatenate([to_uint8(normals), to_uint8(fake)])
    mixed = detector_aurocs(mixed_X, test_X, is_anomaly, seed, args)
    runs = []
    for score in SCORES:
        runs.append(
            {"class": label, "seed": seed, "score": score}
            | {"real": real_only[score], "augmented": mixed[score]}
        )
        log(
            f"detector class {label} seed {seed} {score}: real {real_only[score]:.4f}, "
            f"real + synthetic {mixed[score]:.4f}"
        )
    return runs


def gain_row(name: str, runs: list[dict]) -> str:
    """One table row: real-only, augmented and paired gain, mean ± sd over seeds."""
    real = np.array([r["real"] for r in runs])
    mixed = np.array([r["augmented"] for r in runs])
    per_seed = ", ".join(f"{m - r:+.3f}" for r, m in zip(real, mixed, strict=True))
    gain = mean_sd(mixed - real, signed=True)
    return f"| {name} | {mean_sd(real)} | {mean_sd(mixed)} | {gain} | {per_seed} |"


def gain_table_head(caption: str, setting: str) -> list[str]:
    """A table's caption, a blank line and the head of its `gain_row` columns."""
    return [caption, "", *table_head([setting, *GAIN_COLUMNS])]


def tables(results: dict, args: argparse.Namespace) -> list[str]:
    """The classifier and detector tables."""
    lines: list[str] = []
    if results["classifier"]:
        lines += gain_table_head(
            f"(a) Test accuracy of the classifier, {10 * args.per_class} real images "
            f"(+ {args.synthetic_ratio * 10 * args.per_class} cDCGAN samples):",
            "setting",
        )
        lines += [gain_row(f"{10 * args.per_class} real", results["classifier"]), ""]
    if results["detector"]:
        lines += gain_table_head(
            f"(b) AUROC of the VAE detector, {args.normals} real normals "
            f"(+ {args.synthetic_ratio * args.normals} DCGAN samples):",
            "normal class, score",
        )
        for score in SCORES:
            runs = [r for r in results["detector"] if r["score"] == score]
            for label in args.classes:
                lines.append(
                    gain_row(f"{label}, {score}", [r for r in runs if r["class"] == label])
                )
            lines.append(gain_row(f"all, {score}", runs))
    return lines


def report(results: dict, args: argparse.Namespace, wall: float) -> list[str]:
    """The markdown section."""
    return [
        *header_lines("GAN samples as augmentation with scarce real data", wall),
        f"- GANs: DCGAN nets (latent 64, base 64), non-saturating, Adam 2e-4 (0.5, 0.999), "
        f"batch 64, {args.gan_steps} G steps, autocast {args.autocast}, trained only on the "
        "scarce real images of the run; conditional (10 classes) for (a)",
        f"- (a) classifier: FeatureNet architecture (default config), Adam 1e-3, batch 64, "
        f"about {args.classifier_steps} steps for both settings; accuracy on all 10,000 test "
        "images",
        f"- (b) VAEDetector defaults except correction likelihood_ratio, epochs "
        f"{args.vae_epochs}, patience 5, IWAE K = {args.k}, bf16 scoring; scores: raw IWAE "
        "log p(x) and the likelihood ratio (IWAE minus the background model, which is "
        f"trained on the same rows as the VAE); test: {args.test_per_class} rows per class "
        f"(rng({TEST_SUBSET_SEED})), anomaly = other classes; classes "
        f"{', '.join(map(str, args.classes))}",
        f"- seeds {', '.join(map(str, args.seeds))} (subset draw, GAN, classifier and VAE); "
        "mean ± sample sd over seeds (the 'all' rows: over classes x seeds); gain = paired "
        "difference; nothing tuned, the test split "
        "is used only for the reported numbers",
        "",
        *tables(results, args),
    ]


def run_parts(args: argparse.Namespace) -> dict[str, list[dict]]:
    """The runs of the requested parts, per seed (and normal class)."""
    train, test = fashion("train"), fashion("test")
    results: dict[str, list[dict]] = {"classifier": [], "detector": []}
    if "classifier" in args.parts:
        for seed in args.seeds:
            results["classifier"].append(classifier_run(train, test, seed, args))
    if "detector" in args.parts:
        for label in args.classes:
            for seed in args.seeds:
                results["detector"] += detector_run(train, test, label, seed, args)
    return results


def main(argv: list[str] | None = None) -> None:
    """Run the requested parts and write the report."""
    run_benchmark(parse_args(argv), run_parts, report)


if __name__ == "__main__":
    main()

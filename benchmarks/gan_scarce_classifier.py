"""Augmentation with scarce labels: does a class-conditional GAN's output help a classifier
beyond classic augmentation? (issue 19, the image part).

Per `--per-class` n and seed: n Fashion-MNIST training images of each class (numpy rng(seed))
are all the labelled data there is; 20 % of them (stratified) are a validation split, the rest
the training part. Three classifiers of the metrics package's FeatureNet architecture, each
`--classifier-steps` Adam steps (lr 1e-3) of batch 64, seed = seed:
- (a) "real": the training part;
- (b) "classic": the training part with classic augmentation on every batch (horizontal flip
  with probability 1/2, a shift of up to 2 pixels each way by zero-padding and cropping);
- (c) "classic+gan": (b), with a share w of every batch drawn from m synthetic images per class
  (augmented the same way; with `--synthetic-augment none` only the real images of the batch
  are augmented, the GAN's as drawn; with `--synthetic-label-smoothing e` their targets are
  smoothed by e, the real ones' not). The synthetic images come from a conditional DCGAN
  trained on the training part by `pipelines.train_gan.train_gan_flow` (non-saturating loss
  with the DCGAN paper's Adam settings, differentiable augmentation `--gan-augment` inside D's step,
  `--gan-steps` G steps, bf16) and drawn by `pipelines.synth.synthesize_flow` from the
  registered generator: the path of `genad train gan --conditional --augment ...` and
  `genad synth`. w in `--weights` and m in `--counts` are chosen on the validation split
  (the best validation accuracy; ties to the smaller w and m).
- (d) "classic+gan_filtered", with `--filter-keep q` < 1: as (c), but the GAN draws
  max(m) / q images per class and classifier (b) keeps, per class, the max(m) to which it gives
  the highest probability of the class they were drawn for (classifier filtering of synthetic
  data); w and m are chosen on the validation split as for (c).
Accuracy on the whole test split (10,000 images). The flow holds out 2 % of its rows, and at
least 11, for its own quality metrics (it needs 10), so the GAN sees the rest of the training
part (93 % of it at 20 images per class). MLflow's store
is a scratch sqlite under .state/bench-scarce (the environment variable GENAD_SCARCE_WORK names
another folder: processes that train GANs at the same time each need their own).
`--reuse-samples` skips the GAN: each (size, seed) classifies with the samples the last run
without it drew (kept under that folder's data/, checked against the same training images),
so classifier settings can be compared on one draw of samples.

Usage: .venv/bin/python benchmarks/gan_scarce_classifier.py --threads 1 [--write-docs]
"""

# The environment must be set before prefect and mlflow are imported:
# ruff: noqa: E402
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("GENAD_SCARCE_WORK", ROOT / ".state" / "bench-scarce")).resolve()
os.environ.update(
    DO_NOT_TRACK="true",
    MLFLOW_DISABLE_TELEMETRY="true",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_HOME=str(WORK / "prefect-client"),
    MLFLOW_TRACKING_URI=f"sqlite:///{WORK / 'mlflow' / 'mlflow.db'}",
)
os.environ.setdefault("GENAD_DATA_DIR", str(ROOT.parent / "shared" / "data"))

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from bench_common import log, replace_section, set_threads
from gan_common import IMAGE_SHAPE, balanced_subset, fashion
from scarce_report import FILTERED, grid_rows, report, summary_rows, write_rows

from generative.metrics import FeatureNet, FeatureNetConfig, accuracy

BATCH = 64


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--per-class", nargs="+", type=int, default=[20, 100])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--gan-steps", type=int, default=2000)
    parser.add_argument("--gan-augment", default="translation,cutout")
    parser.add_argument("--gan-ema", type=float, default=0.0, help="EMA decay of G (0 = off)")
    parser.add_argument("--gan-lr", type=float, default=2e-4, help="Adam lr of G and D")
    parser.add_argument(
        "--gan-lr-decay", type=float, default=None, help="lrs fall to 0 from this step fraction"
    )
    parser.add_argument("--classifier-steps", type=int, default=600)
    parser.add_argument(
        "--synthetic-augment",
        choices=("classic", "none"),
        default="classic",
        help="classic augmentation on the GAN's samples in (c) and (d) too, or on the real only",
    )
    parser.add_argument(
        "--synthetic-label-smoothing",
        type=float,
        default=0.0,
        help="label smoothing of the GAN's samples' targets in (c) and (d) (real ones: none)",
    )
    parser.add_argument("--weights", nargs="+", type=float, default=[0.25, 0.5])
    parser.add_argument("--counts", nargs="+", type=int, default=[100, 400])
    parser.add_argument(
        "--filter-keep",
        type=float,
        default=1.0,
        help="< 1: also (d), the GAN's samples filtered by classifier (b)",
    )
    parser.add_argument(
        "--reuse-samples",
        action="store_true",
        help="use the samples an earlier run drew for the same size and seed; no GAN training",
    )
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs/results/gan_augmentation.json",
                        help="where the accuracy rows are merged in")  # fmt: skip
    args = parser.parse_args()
    if not 0 < args.filter_keep <= 1:
        parser.error(f"--filter-keep must be in (0, 1], got {args.filter_keep}")
    if not 0 <= args.synthetic_label_smoothing < 1:
        parser.error(
            f"--synthetic-label-smoothing must be in [0, 1), got {args.synthetic_label_smoothing}"
        )
    return args


def classic_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 2 pixels (zero padding), per image."""
    n, side = len(images), images.shape[-1]
    flip = torch.rand(n, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    padded = F.pad(images, (2, 2, 2, 2))
    shifts = torch.randint(0, 5, (n, 2), generator=generator).tolist()
    return torch.stack(
        [padded[i, :, dy : dy + side, dx : dx + side] for i, (dy, dx) in enumerate(shifts)]
    )


def train_classifier(real: tuple, synthetic: tuple | None, weight: float, *, augment: bool,
                     seed: int, steps: int,
                     augment_synthetic: bool = True,
                     synthetic_smoothing: float = 0.0) -> FeatureNet:  # fmt: skip
    """A FeatureNet classifier; a share `weight` of each batch from `synthetic` when given.
    With `augment`, classic augmentation applies to every image of the batch, or to the real
    ones only when `augment_synthetic` is False. The synthetic images' targets are smoothed by
    `synthetic_smoothing` (see `batch_loss`)."""
    torch.manual_seed(seed)
    net = FeatureNet(FeatureNetConfig(IMAGE_SHAPE, num_classes=10))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    n_fake = 0 if synthetic is None else int(round(weight * BATCH))
    net.train()
    for _ in range(steps):
        index = torch.randint(len(real[0]), (BATCH - n_fake,), generator=generator)
        images, labels = real[0][index], real[1][index]
        if n_fake:
            extra = torch.randint(len(synthetic[0]), (n_fake,), generator=generator)
            images = torch.cat([images, synthetic[0][extra]])
            labels = torch.cat([labels, synthetic[1][extra]])
        if augment:
            end = BATCH if augment_synthetic else BATCH - n_fake  # the real images come first
            images = torch.cat([classic_augment(images[:end], generator), images[end:]])
        loss = batch_loss(net(images), labels, n_fake, synthetic_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval()


def batch_loss(logits: torch.Tensor, labels: torch.Tensor, n_fake: int,
               smoothing: float) -> torch.Tensor:  # fmt: skip
    """Mean cross-entropy over the batch, the last `n_fake` rows (the GAN's samples) against
    targets smoothed by `smoothing`: 1 - smoothing + smoothing / K on the drawn class and
    smoothing / K on each other class (K classes). The real rows keep one-hot targets."""
    if not (n_fake and smoothing):
        return F.cross_entropy(logits, labels)
    n_real = len(labels) - n_fake
    real = F.cross_entropy(logits[:n_real], labels[:n_real], reduction="sum")
    fake = F.cross_entropy(
        logits[n_real:], labels[n_real:], reduction="sum", label_smoothing=smoothing
    )
    return (real + fake) / len(labels)


def gan_samples(images: torch.Tensor, labels: torch.Tensor, name: str, seed: int, args):
    """`max(counts)` images per class from a conditional DCGAN trained and sampled by genad's
    flows; (images in [0, 1], labels)."""
    from pipelines.synth import synthesize_flow
    from pipelines.train_gan import train_gan_flow

    folder = WORK / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "train.npz", X=as_bytes(images), y=labels.numpy())
    trainer = {"epochs": 10**6, "max_generator_steps": args.gan_steps, "device": "cpu",
               "autocast": "bf16", "lr_generator": args.gan_lr, "lr_discriminator": args.gan_lr,
               "betas": [0.5, 0.999], "augment": args.gan_augment,
               "lr_decay_start": args.gan_lr_decay}  # fmt: skip
    start = time.perf_counter()
    holdout = max(0.02, 11 / len(images))  # the flow needs >= 10 rows for its metrics
    model = {"conditional": True, "ema_decay": args.gan_ema}
    train_gan_flow(str(folder / "train.npz"), model, trainer, model_name=name,
                   holdout_fraction=holdout, seed=seed)  # fmt: skip
    log(f"{name}: GAN trained in {time.perf_counter() - start:.0f} s")
    out = folder / "samples.npz"
    per_class = math.ceil(max(args.counts) / args.filter_keep)
    synthesize_flow(f"models:/{name}@challenger", per_class, None, str(out), seed=seed)
    return load_samples(out)


def as_bytes(images: torch.Tensor) -> np.ndarray:
    """Images in [0, 1] as the uint8 array the GAN's training file holds."""
    return (images * 255).round().byte().numpy()


def load_samples(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, 1, h, w) in [0, 1], labels) from a samples npz that `genad synth` wrote."""
    with np.load(path) as samples:
        X = torch.from_numpy(np.asarray(samples["X"], np.float32))
        y = torch.from_numpy(np.asarray(samples["y"]).astype(np.int64))
    X = X.reshape(len(X), *IMAGE_SHAPE)
    return (X / 255.0 if X.max() > 1.5 else X), y


def earlier_samples(train: tuple, name: str, args: argparse.Namespace) -> tuple:
    """((images, labels), provenance line) from the samples an earlier run wrote for `name`.
    Refuses samples whose GAN trained on other images or that hold too few per class."""
    folder = WORK / "data" / name
    with np.load(folder / "train.npz") as saved:
        same = np.array_equal(saved["X"], as_bytes(train[0]))
    if not same:
        raise SystemExit(f"--reuse-samples: {folder} holds a GAN trained on other images")
    X, y = load_samples(folder / "samples.npz")
    needed = math.ceil(max(args.counts) / args.filter_keep)
    if min(int((y == c).sum()) for c in range(10)) < needed:
        raise SystemExit(f"--reuse-samples: {folder} has fewer than {needed} samples per class")
    origin = json.loads((folder / "samples.npz.provenance.json").read_text())
    line = f"{origin['model_uri']} v{origin['model_version']}, drawn {origin['created_at']}"
    log(f"{name}: reusing samples of {line}")
    return (X, y), line


@torch.no_grad()
def most_confident(fake: tuple, net: FeatureNet, per_class: int) -> tuple:
    """Per class, the `per_class` synthetic images to which `net` gives the highest probability
    of the class they were drawn for, most confident first."""
    probability = torch.cat([torch.softmax(net(chunk), dim=1) for chunk in fake[0].split(1000)])
    own = probability[torch.arange(len(fake[1])), fake[1]]
    order = torch.argsort(own, descending=True)
    rows = order[first_per_class(fake[1][order], per_class)]
    return fake[0][rows], fake[1][rows]


def split_validation(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, validation rows): 20 % of each class to validation, numpy rng(seed)."""
    rng = np.random.default_rng([seed, 7])
    y = labels.numpy()
    val = np.concatenate([
        rng.choice(np.flatnonzero(y == c), max(1, round(0.2 * (y == c).sum())), replace=False)
        for c in range(10)
    ])  # fmt: skip
    train = np.setdiff1d(np.arange(len(y)), val)
    return torch.from_numpy(train), torch.from_numpy(np.sort(val))


def first_per_class(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the first `count` rows of each class."""
    return torch.cat([torch.nonzero(labels == c).flatten()[:count] for c in range(10)])


def run_one(per_class: int, seed: int, data: dict, args: argparse.Namespace) -> dict:
    """Test accuracy of (a), (b), (c) for one size and seed, and (c)'s choice."""
    rows = balanced_subset(data["train"][1], per_class, seed)
    scarce = (data["train"][0][rows], data["train"][1][rows])
    train_rows, val_rows = split_validation(scarce[1], seed)
    train = (scarce[0][train_rows], scarce[1][train_rows])
    val = (scarce[0][val_rows], scarce[1][val_rows])
    name = f"scarce-{per_class}-{seed}"
    if args.reuse_samples:
        fake, samples_source = earlier_samples(train, name, args)
    else:
        fake, samples_source = gan_samples(*train, name, seed, args), None
    fit = {"seed": seed, "steps": args.classifier_steps}
    test = data["test"]
    classic = train_classifier(train, None, 0, augment=True, **fit)
    fit["augment_synthetic"] = args.synthetic_augment == "classic"
    fit["synthetic_smoothing"] = args.synthetic_label_smoothing
    result = {
        "real": accuracy(train_classifier(train, None, 0, augment=False, **fit), *test),
        "classic": accuracy(classic, *test),
        "samples_from": samples_source,
    }
    net, result["choice"] = best_on_validation(train, fake, (val, test), fit, args)
    result["classic+gan"] = accuracy(net, *test)
    if args.filter_keep < 1:
        kept = most_confident(fake, classic, max(args.counts))
        net, result["choice_filtered"] = best_on_validation(train, kept, (val, test), fit, args)
        result[FILTERED] = accuracy(net, *test)
    log(f"{per_class}/class seed {seed}: {result}")
    return result


def best_on_validation(train: tuple, fake: tuple, splits: tuple, fit: dict, args) -> tuple:
    """(classifier, choice): the (b)-style classifier with m synthetic images per class mixed
    in at weight w, for the (m, w) of `args` with the best accuracy on the validation split
    (`splits` = (validation, test)). The choice also lists every (m, w)'s validation and test
    accuracy, a diagnostic of the choice only: the test split never picks."""
    val, test = splits
    best, grid = (-1.0, None), []
    for count in sorted(args.counts):
        subset = first_per_class(fake[1], count)
        synthetic = (fake[0][subset], fake[1][subset])
        for weight in sorted(args.weights):
            net = train_classifier(train, synthetic, weight, augment=True, **fit)
            score = accuracy(net, *val)
            grid.append({"count": count, "weight": weight, "val": score,
                         "val_nll": mean_nll(net, *val), "test": accuracy(net, *test)})  # fmt: skip
            if score > best[0]:
                best = (score, (count, weight, net))
    count, weight, net = best[1]
    return net, {"count": count, "weight": weight, "val_accuracy": best[0], "grid": grid}


@torch.no_grad()
def mean_nll(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cross-entropy (nats) of a trained classifier on labelled images."""
    return float(F.cross_entropy(net.eval()(images), labels))


def main() -> int:
    args = parse_args()
    smoothing = f"label smoothing of the GAN's samples: {args.synthetic_label_smoothing:g}"
    set_threads(args.threads, f"sizes {args.per_class}, seeds {args.seeds}; {smoothing}")
    start = time.perf_counter()
    data = {"train": fashion("train"), "test": fashion("test")}
    results = {n: [run_one(n, s, data, args) for s in args.seeds] for n in args.per_class}
    rows = summary_rows(results)
    text = report(args, results, time.perf_counter() - start)
    print(text)
    if args.write_docs:
        replace_section(ROOT / "docs" / "benchmarks.md", text)
    write_rows(rows, args.json, grid_rows(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

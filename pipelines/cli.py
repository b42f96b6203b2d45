"""The `genad` command line."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from anomaly import VAEDetector
from anomaly.data import load_dataset
from anomaly.evaluation import novelty_split, ranking_metrics
from anomaly.plots import plot_score_histogram


def demo(args: argparse.Namespace) -> int:
    """Train a VAE detector on the normal rows of a real data set; print AUROC and top anomalies."""
    dataset = load_dataset(args.dataset)
    if dataset.y is None:
        raise SystemExit(f"{args.dataset} has no labels; the demo needs a labelled data set")
    split = novelty_split(dataset.X, dataset.y, seed=args.seed)
    print(
        f"{dataset.name}: {len(dataset.X)} rows, {dataset.X.shape[1:]} features, "
        f"{int(dataset.y.sum())} anomalies; training on {len(split.X_train)} normal rows"
    )
    detector = VAEDetector(
        score=args.score,
        n_samples=args.n_samples,
        epochs=args.epochs,
        target_fpr=args.fpr,
        random_state=args.seed,
        verbose=True,
    )
    started = time.perf_counter()
    detector.fit(split.X_train)
    fitted = time.perf_counter()
    scores = detector.score_samples(split.X_test)
    scored = time.perf_counter()
    metrics = ranking_metrics(split.y_test, -scores)
    flagged = scores < detector.offset_  # what predict() flags, without scoring twice
    normal = split.y_test == 0
    print(
        f"fit {fitted - started:.1f}s ({len(detector.history_)} epochs, "
        f"{detector.active_units_}/{detector.model_.config.latent_dim} active latent units); "
        f"scored {len(scores)} rows by {args.score} K={args.n_samples} in {scored - fitted:.2f}s"
    )
    print(f"AUROC {metrics['auroc']:.4f}  AUPRC {metrics['auprc']:.4f}")
    print(
        f"threshold at target FPR {args.fpr}: flagged {flagged[normal].mean():.3f} of normal and "
        f"{flagged[~normal].mean():.3f} of anomalous test rows"
    )
    print_top(split.test_index, scores, split.y_test, args.top)
    title = f"{dataset.name}: {args.score} K={args.n_samples}, AUROC {metrics['auroc']:.3f}"
    picture = plot_score_histogram(scores, split.y_test, detector.offset_, args.plot, title=title)
    print(f"\nscore histogram: {picture}")
    return 0


def print_top(row_index: np.ndarray, scores: np.ndarray, labels: np.ndarray, top: int) -> None:
    """The `top` lowest-likelihood rows with their data set row number and label."""
    print(f"\nmost anomalous {top} test rows (lowest log p(x)):")
    print(f"{'row':>8} {'log p(x)':>12} {'label':>8}")
    for i in np.argsort(scores)[:top]:
        label = "anomaly" if labels[i] else "normal"
        print(f"{row_index[i]:>8} {scores[i]:>12.2f} {label:>8}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genad", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help=demo.__doc__)
    demo_parser.add_argument("--dataset", default="adbench/satimage-2")
    demo_parser.add_argument("--score", default="iwae", choices=["elbo", "iwae", "prior_mc"])
    demo_parser.add_argument("--n-samples", type=int, default=100)
    demo_parser.add_argument("--epochs", type=int, default=100)
    demo_parser.add_argument("--fpr", type=float, default=0.05)
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.add_argument("--top", type=int, default=10)
    demo_parser.add_argument("--plot", default=".state/demo_scores.png", help="PNG to write")
    demo_parser.set_defaults(handler=demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `genad` console script."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

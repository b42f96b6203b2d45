"""One-class novelty on Fashion-MNIST and MNIST: AUROC of raw and corrected likelihood scores.

For each dataset (Fashion-MNIST, MNIST), each class c (0-9) and each seed (0, 1, 2), a
`VAEDetector(correction="likelihood_ratio", precision="bf16", random_state=seed)` (at most
`--epochs` epochs, early stopping with patience 3, IWAE K = `--k`; everything else at the
detector's defaults) is fitted on all training images of class c. It then scores a fixed
stratified subset of the test set (`--test-per-class` rows of every class, drawn once with
numpy `default_rng(12345)`, the same rows for every run); rows of the other nine classes are
the anomalies. AUROC (anomaly = positive class, ranked by minus the normality score) of:

- elbo: the ELBO (K = 1); iwae: the IWAE bound (K = `--k`); prior_mc: the prior Monte Carlo
  estimate (K = `--prior-k`) -- three estimates of log p(x);
- likelihood_ratio: iwae - log p_bg(x) (the local autoregressive background model);
- complexity: iwae + ln(2) * L(x), L(x) the PNG code length in bits;
- ratio_plus_complexity: the two corrected scores, each standardised on the detector's own
  calibration rows (training images of the class it held out of the fit), summed: the score
  `benchmarks/ood_scores.py` chose on Fashion-MNIST proxies, with no one-class test class;
- background_alone: log p_bg(x); compressor_alone: L(x) (longer code = more normal).

Reported per dataset: the mean over classes x seeds, the spread over classes and over seeds,
the worst and best class, the per-class means, and wall times. Every (dataset, class, seed,
score, auroc) is also written to a CSV next to `--out` (same stem), rewritten after each run.

Usage:
    .venv/bin/python benchmarks/one_class_novelty.py --threads 2 \
        --out docs/benchmarks_one_class_novelty.md
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import DEFAULT_DATA_DIR, ratio_detector, set_threads, table_head
from provenance import git_commit
from sklearn.metrics import roc_auc_score

from anomaly.data import load_dataset
from anomaly.detector import VAEDetector
from generative.training import resolve_device

SUBSET_SEED = 12345
SCORES = (
    "elbo",
    "iwae",
    "prior_mc",
    "likelihood_ratio",
    "complexity",
    "ratio_plus_complexity",
    "background_alone",
    "compressor_alone",
)
TIMINGS = ("fit", "iwae_terms", "elbo", "prior_mc")
CSV_FIELDS = ("dataset", "class", "seed", "score", "auroc")
TIME_COLUMNS = (
    "dataset",
    "runs ok",
    "fit s",
    "IWAE + background + PNG s",
    "ELBO s",
    "prior MC s",
    "epochs (min-max)",
    "active units",
)
Run = dict[str, Any]
# The training images of one class are clean: docs/detector.md's settings for clean rows (no
# trimmed ELBO, no refit), fixed before any run with them.
CLEAN_DATA = {"trim_fraction": 0.0, "refit": False}


# --- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["fashion-mnist", "mnist"])
    parser.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8, help="most VAE epochs (early stops)")
    parser.add_argument("--k", type=int, default=20, help="IWAE samples per row")
    parser.add_argument("--prior-k", type=int, default=100, help="prior MC samples per row")
    parser.add_argument("--test-per-class", type=int, default=200, help="test rows per class")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--detector-params", type=json.loads, default=dict(CLEAN_DATA),
        help="more VAEDetector parameters (JSON); default: the clean-data settings",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="markdown file (CSV beside it)")
    return parser.parse_args(argv)


# --- data --------------------------------------------------------------------------------------
def test_subset(y: np.ndarray, per_class: int) -> np.ndarray:
    """Sorted indices of `per_class` rows of every label of y (all rows of a smaller class)."""
    rng = np.random.default_rng(SUBSET_SEED)
    chosen = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        chosen.append(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
    return np.sort(np.concatenate(chosen))


def load_sets(name: str, per_class: int) -> dict[str, np.ndarray]:
    """Training images and labels, and the fixed stratified test subset, of one image set."""
    train, test = load_dataset(name, split="train"), load_dataset(name, split="test")
    y_test = np.asarray(test.y).astype(int)
    rows = test_subset(y_test, per_class)
    return {
        "X_train": np.asarray(train.X),
        "y_train": np.asarray(train.y).astype(int),
        "X_test": np.asarray(test.X)[rows],
        "y_test": y_test[rows],
    }


# --- one run -----------------------------------------------------------------------------------
def make_detector(args: argparse.Namespace, seed: int) -> VAEDetector:
    """The detector of every run: likelihood-ratio correction, bf16 scoring, early stopping."""
    return ratio_detector(
        epochs=args.epochs, patience=3, k=args.k, seed=seed, **args.detector_params
    )


@contextmanager
def temporary_params(detector: VAEDetector, **params: Any) -> Iterator[VAEDetector]:
    """Set `params` on the detector for the block, then restore the previous values."""
    previous = {key: detector.get_params()[key] for key in params}
    detector.set_params(**params)
    try:
        yield detector
    finally:
        detector.set_params(**previous)


def timed_log_px(detector: VAEDetector, X: np.ndarray, score: str, k: int) -> tuple:
    """(log p(x) by `score` with K = k, seconds). correction="none" makes score_samples the
    raw log p(x), so the background model and compressor are not recomputed."""
    start = time.perf_counter()
    with temporary_params(detector, score_method=score, n_samples=k, correction="none"):
        log_px = detector.score_samples(X)
    return log_px, time.perf_counter() - start


def corrected_scores(detector: VAEDetector, X: np.ndarray) -> dict[str, np.ndarray]:
    """The likelihood ratio and the complexity-corrected score of each row of X."""
    terms = detector.score_terms(X)  # IWAE log p(x), background log p(x), PNG bits
    log_px, bits = terms["log_px"], terms["compressor_bits"]
    return {
        "iwae": log_px,
        "likelihood_ratio": log_px - terms["background_log_px"],
        "complexity": log_px + math.log(2.0) * bits,
        "background_alone": terms["background_log_px"],
        "compressor_alone": bits,
    }


def standardised_sum(scores: dict, held: dict, names: tuple[str, ...]) -> np.ndarray:
    """Sum of the named scores, each standardised by its mean and sd on the held-out normal
    rows (`held`: the same scores of the detector's calibration rows, never the test set)."""
    return sum((scores[n] - held[n].mean()) / held[n].std() for n in names)


def all_scores(
    detector: VAEDetector, X: np.ndarray, held_out: np.ndarray, args: argparse.Namespace
) -> tuple:
    """({score name: normality per row, higher = more normal}, {step: seconds}); `held_out`:
    normal images the detector did not train on, which scale the summed score."""
    start = time.perf_counter()
    scores = corrected_scores(detector, X)
    seconds = {"iwae_terms": time.perf_counter() - start}
    held = corrected_scores(detector, held_out)
    pair = ("likelihood_ratio", "complexity")
    scores["ratio_plus_complexity"] = standardised_sum(scores, held, pair)
    scores["elbo"], seconds["elbo"] = timed_log_px(detector, X, "elbo", 1)
    scores["prior_mc"], seconds["prior_mc"] = timed_log_px(detector, X, "prior_mc", args.prior_k)
    return scores, seconds


def auroc(is_anomaly: np.ndarray, normality: np.ndarray) -> float:
    """AUROC of the anomalies ranked by minus the normality score; NaN if a score is not
    finite (counted in the report)."""
    if not np.all(np.isfinite(normality)):
        return float("nan")
    return float(roc_auc_score(is_anomaly, -normality))


def run_one(data: dict, name: str, label: int, seed: int, args: argparse.Namespace) -> Run:
    """Fit on class `label`, score the test subset; AUROCs, seconds and diagnostics."""
    run: Run = {"dataset": name, "class": label, "seed": seed, "auroc": {}, "seconds": {}}
    try:
        start = time.perf_counter()
        normal = data["X_train"][data["y_train"] == label]
        detector = make_detector(args, seed).fit(normal)
        run["seconds"]["fit"] = time.perf_counter() - start
        _, _, calibration_rows = detector._split(len(normal))  # the rows fit held out
        scores, seconds = all_scores(detector, data["X_test"], normal[calibration_rows], args)
    except Exception as error:  # noqa: BLE001 - the benchmark reports every failure
        run["error"] = " ".join(f"{type(error).__name__}: {error}".split())
        traceback.print_exc()
        return run
    run["seconds"].update(seconds)
    is_anomaly = (data["y_test"] != label).astype(int)
    run["auroc"] = {score: auroc(is_anomaly, scores[score]) for score in SCORES}
    run["epochs"] = len(detector.history_)
    run["active"] = f"{detector.active_units_}/{detector.model_.config.latent_dim}"
    run["n_train"] = int((data["y_train"] == label).sum())
    return run


def progress_line(run: Run) -> str:
    """One log line per run."""
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    head = f"[{stamp}] {run['dataset']} class={run['class']} seed={run['seed']}:"
    if "error" in run:
        return f"{head} ERROR {run['error'][:200]}"
    secs = " ".join(f"{step}={run['seconds'][step]:.1f}s" for step in TIMINGS)
    aurocs = " ".join(f"{score}={run['auroc'][score]:.3f}" for score in SCORES)
    return (
        f"{head} n_train={run['n_train']} epochs={run['epochs']} active={run['active']} "
        f"| {secs} | AUROC {aurocs}"
    )


def run_all(args: argparse.Namespace, csv_path: Path | None) -> list[Run]:
    """Every dataset x class x seed; the raw CSV is rewritten after each run."""
    runs: list[Run] = []
    for name in args.datasets:
        data = load_sets(name, args.test_per_class)
        for label in args.classes:
            for seed in args.seeds:
                runs.append(run_one(data, name, label, seed, args))
                print(progress_line(runs[-1]), flush=True)
                if csv_path is not None:
                    write_atomic(csv_path, csv_text(runs))
    return runs


# --- output files ------------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file in the same folder, then rename it onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(temp, 0o644)  # mkstemp creates 0600; a report is for everyone to read
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def csv_text(runs: list[Run]) -> str:
    """One CSV row per (dataset, class, seed, score); failed runs have no rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for run in runs:
        for score, value in run["auroc"].items():
            writer.writerow([run["dataset"], run["class"], run["seed"], score, f"{value:.6f}"])
    return buffer.getvalue()


# --- aggregation -------------------------------------------------------------------------------
def auroc_grid(runs: list[Run], name: str, score: str, args: argparse.Namespace) -> np.ndarray:
    """AUROC of one score as a (class, seed) array; NaN where a run failed."""
    grid = np.full((len(args.classes), len(args.seeds)), np.nan)
    for run in runs:
        if run["dataset"] == name and score in run["auroc"]:
            grid[args.classes.index(run["class"]), args.seeds.index(run["seed"])] = run["auroc"][
                score
            ]
    return grid


def sample_sd(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1) of the finite values; NaN with fewer than two."""
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def summary_row(grid: np.ndarray) -> dict[str, float]:
    """Mean, sd over classes (of the per-class means), mean over classes of the sd over
    seeds, worst and best per-class mean, and the number of finite runs."""
    if not np.isfinite(grid).any():
        nan = float("nan")
        return {"mean": nan, "sd_classes": nan, "sd_seeds": nan, "min": nan, "max": nan, "n": 0}
    class_means = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in grid])
    seed_sds = np.array([sample_sd(row) for row in grid])
    return {
        "mean": float(np.nanmean(grid)),
        "sd_classes": sample_sd(class_means),
        "sd_seeds": float(np.nanmean(seed_sds)) if np.isfinite(seed_sds).any() else float("nan"),
        "min": float(np.nanmin(class_means)),
        "max": float(np.nanmax(class_means)),
        "n": int(np.isfinite(grid).sum()),
    }


def fmt(value: float) -> str:
    """Three decimals, or '-' for NaN."""
    return "-" if not np.isfinite(value) else f"{value:.3f}"


# --- markdown ----------------------------------------------------------------------------------
def summary_table(runs: list[Run], name: str, args: argparse.Namespace) -> list[str]:
    """Rows = scores: mean AUROC over classes x seeds and its spreads."""
    lines = [
        "| score | mean AUROC | sd over classes | sd over seeds | min class | max class | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for score in SCORES:
        row = summary_row(auroc_grid(runs, name, score, args))
        lowest, highest = class_extremes(auroc_grid(runs, name, score, args), args)
        lines.append(
            f"| {score} | **{fmt(row['mean'])}** | {fmt(row['sd_classes'])} | "
            f"{fmt(row['sd_seeds'])} | {fmt(row['min'])} ({lowest}) | "
            f"{fmt(row['max'])} ({highest}) | {row['n']} |"
        )
    return [*lines, ""]


def class_extremes(grid: np.ndarray, args: argparse.Namespace) -> tuple[str, str]:
    """The labels of the classes with the lowest and highest mean AUROC ('-' if none)."""
    means = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in grid])
    if not np.isfinite(means).any():
        return "-", "-"
    return str(args.classes[int(np.nanargmin(means))]), str(args.classes[int(np.nanargmax(means))])


def per_class_table(runs: list[Run], name: str, args: argparse.Namespace) -> list[str]:
    """Rows = classes, columns = scores: mean AUROC over seeds."""
    grids = {score: auroc_grid(runs, name, score, args) for score in SCORES}
    lines = table_head(["class", *SCORES])
    for i, label in enumerate(args.classes):
        cells = []
        for score in SCORES:
            row = grids[score][i]
            cells.append(fmt(float(np.nanmean(row))) if np.isfinite(row).any() else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def time_table(runs: list[Run], args: argparse.Namespace) -> list[str]:
    """Per dataset: mean (max) seconds of the fit and each scoring step, and epochs run."""
    lines = table_head(TIME_COLUMNS)
    for name in args.datasets:
        ok = [r for r in runs if r["dataset"] == name and "error" not in r]
        if not ok:
            lines.append(f"| {name} | 0 | - | - | - | - | - | - |")
            continue
        secs = []
        for step in TIMINGS:
            values = [r["seconds"][step] for r in ok]
            secs.append(f"{np.mean(values):.1f} ({np.max(values):.1f})")
        epochs = [r["epochs"] for r in ok]
        active = ", ".join(sorted({r["active"] for r in ok}))
        lines.append(
            f"| {name} | {len(ok)} | " + " | ".join(secs) + f" | {min(epochs)}-{max(epochs)} | "
            f"{active} |"
        )
    return [*lines, ""]


def header_lines(args: argparse.Namespace, wall: float) -> list[str]:
    """Command line, date, code version, versions, threads and the total wall time."""
    exe = sys.executable
    exe = os.path.relpath(exe) if exe.startswith(os.getcwd()) else exe
    n_runs = len(args.datasets) * len(args.classes) * len(args.seeds)
    return [
        "## One-class novelty: Fashion-MNIST and MNIST, raw and corrected likelihoods",
        "",
        f"Command: `{shlex.join([exe, *sys.argv])}`",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- code (git, at start of the run): {args.commit}",
        f"- torch {torch.__version__}, numpy {np.__version__}, Python "
        f"{platform.python_version()}; device: {resolve_device('auto')}",
        f"- torch.get_num_threads() = {torch.get_num_threads()} (--threads {args.threads}); "
        f"machine: {os.cpu_count()} CPUs, {platform.machine()}",
        f"- datasets: {', '.join(args.datasets)}; classes: {', '.join(map(str, args.classes))}; "
        f"seeds: {', '.join(map(str, args.seeds))}; {n_runs} runs; "
        f"total wall time: {wall / 60:.1f} min",
        "",
    ]


def settings_lines(args: argparse.Namespace) -> list[str]:
    """The detector's parameters and how the scores and AUROCs were computed."""
    params = make_detector(args, seed=0).get_params()
    shown = ", ".join(f"{k}={v!r}" for k, v in params.items() if k not in ("random_state",))
    return [
        f"Detector (random_state = seed): `VAEDetector({shown})`. Fit on all training images "
        f"of the class (the detector holds out {params['validation_fraction']:.0%} of them for "
        f"early stopping and {params['calibration_fraction']:.0%} for calibration). Only "
        f"correction, epochs, patience, n_samples, precision and {sorted(args.detector_params)} "
        "differ from the defaults; the background model and compressor settings are the "
        "defaults.",
        "",
        f"Test rows: {args.test_per_class} per class of the test split (all ten classes), "
        f"drawn once with `numpy.random.default_rng({SUBSET_SEED})`, the same rows for every "
        "run; anomaly = label != trained class (9 of 10 rows).",
        "",
        f"Scores (higher = more normal): elbo (K=1), iwae (K={args.k}), prior_mc "
        f"(K={args.prior_k}) estimate log p(x) in nats; likelihood_ratio = iwae - "
        "background_log_px; complexity = iwae + ln 2 * PNG bits; ratio_plus_complexity = "
        "the sum of those two, each standardised (mean, sd) on the class's calibration rows "
        "(held out of the fit; the sum chosen on Fashion-MNIST proxies by "
        "benchmarks/ood_scores.py); background_alone = "
        "background_log_px; compressor_alone = PNG code length in bits, with the sign "
        "'longer code = more normal' (the sign under which simpler novel images are detected; "
        "its AUROC with the other sign is 1 - this). AUROC = `roc_auc_score(is_anomaly, "
        "-normality)`; a run with a non-finite score gets no AUROC for that score.",
        "",
        "Spread: 'sd over classes' is the sample sd (ddof=1) of the per-class means over "
        "seeds; 'sd over seeds' is the mean over classes of the per-class sample sd over seeds; "
        "min / max class are the lowest / highest per-class mean (class label in brackets).",
        "",
    ]


def error_lines(runs: list[Run]) -> list[str]:
    """Failed runs and runs with a non-finite score."""
    lines = [
        f"- {r['dataset']} class {r['class']} seed {r['seed']}: `{r['error']}`"
        for r in runs
        if "error" in r
    ]
    lines += [
        f"- {r['dataset']} class {r['class']} seed {r['seed']}: non-finite {score} scores"
        for r in runs
        for score, value in r["auroc"].items()
        if not np.isfinite(value)
    ]
    return ["Errors:", "", *lines, ""] if lines else ["No errors, all scores finite.", ""]


def markdown(args: argparse.Namespace, runs: list[Run], wall: float) -> str:
    """The whole markdown section."""
    lines = header_lines(args, wall) + settings_lines(args)
    for name in args.datasets:
        lines += [f"### {name}: AUROC over classes x seeds", ""]
        lines += summary_table(runs, name, args)
        lines += [f"#### {name}: AUROC per class (mean over seeds)", ""]
        lines += per_class_table(runs, name, args)
    lines += ["### Wall seconds per run: mean (max)", ""]
    lines += time_table(runs, args)
    lines += error_lines(runs)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the markdown and write it (and the raw CSV) beside --out."""
    os.environ.setdefault("GENAD_DATA_DIR", DEFAULT_DATA_DIR)
    args = parse_args(argv)
    args.commit = git_commit()  # the code imported now is the code measured
    csv_path = args.out.with_suffix(".csv") if args.out is not None else None
    set_threads(args.threads, f"CSV: {csv_path}")
    start = time.perf_counter()
    runs = run_all(args, csv_path)
    text = markdown(args, runs, time.perf_counter() - start)
    print(text, flush=True)
    if args.out is not None:
        write_atomic(args.out, text + "\n")
        print(f"wrote {args.out} and {csv_path}", flush=True)


if __name__ == "__main__":
    main()

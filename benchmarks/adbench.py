"""ADBench novelty detection: genad's VAEDetector against IsolationForest and PyOD's VAE.

For every ADBench "Classical" set (25, see /work/shared/data/README.md) and every seed, the rows
are split once by `anomaly.evaluation.novelty_split(X, y, seed=seed)` (stratified, 30 % test;
the detectors train on the normal rows of the remaining 70 %), and three detectors are fitted on
that identical split and scored on its test rows:

a. genad `VAEDetector(random_state=seed)` at its defaults (IWAE, K = 100); anomaly score =
   -score_samples (minus the estimated log p(x));
b. scikit-learn `IsolationForest(random_state=seed)` at its defaults; anomaly score =
   -score_samples;
c. PyOD `VAE(random_state=seed, verbose=0)`, otherwise at its defaults; anomaly score =
   decision_function. PyOD standardises the inputs itself by default (`preprocessing=True`:
   training mean and std, (x - mean) / (std + 1e-8)), so nothing is added here.

On the large sets the training rows are subsampled to `--max-train-rows` and the test rows to
`--max-test-rows` (stratified: the anomaly rate is kept); the output says where. The script
reports AUROC and AUPRC (mean and std over seeds), fit + score seconds per method, the means
over sets, and PASS / FAIL for the target "genad's mean AUROC >= IsolationForest's".

Usage:
    .venv/bin/python benchmarks/adbench.py --threads 1 --jobs 2 --out docs/benchmarks_adbench.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from bench_common import save_text, set_threads
from provenance import git_commit
from sklearn.ensemble import IsolationForest

from anomaly.data import list_datasets, load_dataset
from anomaly.detector import VAEDetector
from anomaly.evaluation import novelty_split, ranking_metrics

DEFAULT_DATA_DIR = "/work/shared/data"
METHODS = ("genad", "iforest", "pyod_vae")
LABELS = {"genad": "genad VAEDetector", "iforest": "IsolationForest", "pyod_vae": "PyOD VAE"}
Result = dict[str, Any]


# --- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated split / model seeds")
    parser.add_argument(
        "--datasets", default="all", help="comma-separated ADBench names, or 'all' (default)"
    )
    parser.add_argument("--max-train-rows", type=int, default=10000)
    parser.add_argument("--max-test-rows", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=1, help="datasets run in N processes")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.datasets = dataset_names(args.datasets)
    return args


def dataset_names(spec: str) -> list[str]:
    """'all' -> every ADBench set in the catalog; else the listed names as 'adbench/<name>'."""
    known = [name for name in list_datasets() if name.startswith("adbench/")]
    if spec == "all":
        return known
    by_lower = {name.lower(): name for name in known}
    names = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        key = item.lower() if item.lower().startswith("adbench/") else f"adbench/{item.lower()}"
        if key not in by_lower:
            raise SystemExit(f"unknown ADBench set {item!r}; known: {', '.join(known)}")
        names.append(by_lower[key])
    return names


# --- data --------------------------------------------------------------------------------------
def stratified_rows(y: np.ndarray, n_max: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most n_max rows of y, each class in its original proportion.

    A class present in y keeps at least one row.
    """
    if len(y) <= n_max:
        return np.arange(len(y))
    chosen = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        take = max(1, int(round(n_max * len(rows) / len(y))))
        chosen.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(chosen))


def prepare_split(X: np.ndarray, y: np.ndarray, seed: int, max_train: int, max_test: int) -> dict:
    """The seed's novelty split, then subsampled (stratified) where it exceeds the limits."""
    split = novelty_split(X, y, seed=seed)
    rng = np.random.default_rng([seed, 2024])
    train_rows = stratified_rows(np.zeros(len(split.X_train), int), max_train, rng)
    test_rows = stratified_rows(split.y_test, max_test, rng)
    return {
        "X_train": split.X_train[train_rows],
        "X_test": split.X_test[test_rows],
        "y_test": split.y_test[test_rows],
        "full_train": len(split.X_train),
        "full_test": len(split.X_test),
    }


# --- the three detectors -----------------------------------------------------------------------
def fit_genad(X_train: np.ndarray, X_test: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
    """VAEDetector at its defaults; anomaly score = -log p(x) estimate; diagnostics."""
    detector = VAEDetector(random_state=seed).fit(X_train)
    score = -detector.score_samples(X_test)
    info = {
        "active_units": detector.active_units_,
        "latent_dim": detector.model_.config.latent_dim,
        "epochs": len(detector.history_),
        "nonfinite": int((~np.isfinite(score)).sum()),
    }
    return score, info


def fit_iforest(X_train: np.ndarray, X_test: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
    """IsolationForest at its defaults; anomaly score = -score_samples."""
    forest = IsolationForest(random_state=seed).fit(X_train)
    return -forest.score_samples(X_test), {}


def fit_pyod_vae(X_train: np.ndarray, X_test: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
    """PyOD's VAE at its defaults (seeded, progress bar off); anomaly score = decision_function."""
    from pyod.models.vae import VAE

    model = VAE(random_state=seed, verbose=0).fit(X_train)
    return model.decision_function(X_test), {}


FITTERS: dict[str, Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, dict]]] = {
    "genad": fit_genad,
    "iforest": fit_iforest,
    "pyod_vae": fit_pyod_vae,
}


def run_method(method: str, data: dict, seed: int) -> Result:
    """Fit and score one method on one split; errors are recorded, not raised."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score, info = FITTERS[method](data["X_train"], data["X_test"], seed)
        seconds = time.perf_counter() - start
        return {**ranking_metrics(data["y_test"], score), "seconds": seconds, **info}
    except Exception as error:  # noqa: BLE001 - the benchmark reports every failure
        message = " ".join(f"{type(error).__name__}: {error}".split())
        return {"error": message, "seconds": time.perf_counter() - start}


def run_dataset(name: str, seeds: list[int], max_train: int, max_test: int, threads: int) -> dict:
    """All seeds and methods on one set (the unit of work of a worker process)."""
    torch.set_num_threads(threads)
    data = load_dataset(name)
    X, y = np.asarray(data.X, dtype=np.float64), np.asarray(data.y).astype(int)
    runs = []
    for seed in seeds:
        split = prepare_split(X, y, seed, max_train, max_test)
        results = {method: run_method(method, split, seed) for method in METHODS}
        runs.append({"seed": seed, "results": results, **size_info(split)})
        print(progress_line(name, seed, results), flush=True)
    return {"name": name, "rows": len(X), "features": X.shape[1], "runs": runs}


def size_info(split: dict) -> dict:
    """Row counts of a prepared split: used and before subsampling."""
    return {
        "n_train": len(split["X_train"]),
        "n_test": len(split["X_test"]),
        "n_anomalies": int(split["y_test"].sum()),
        "full_train": split["full_train"],
        "full_test": split["full_test"],
    }


def progress_line(name: str, seed: int, results: dict[str, Result]) -> str:
    """One log line per set and seed."""
    parts = []
    for method, result in results.items():
        if "error" in result:
            parts.append(f"{method}=ERROR({result['error'][:60]})")
        else:
            parts.append(f"{method}={result['auroc']:.3f} ({result['seconds']:.1f}s)")
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    return f"[{stamp}] {name} seed={seed}: " + "  ".join(parts)


def run_all(args: argparse.Namespace) -> list[dict]:
    """Every requested set, serially or in `--jobs` spawned processes (largest sets first)."""
    names = sorted(args.datasets, key=lambda n: -Path(dataset_path(n)).stat().st_size)
    jobs = (args.seeds, args.max_train_rows, args.max_test_rows, args.threads)
    if args.jobs <= 1:
        return [run_dataset(name, *jobs) for name in names]
    results = []
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_dataset, name, *jobs): name for name in names}
        for done, future in enumerate(as_completed(futures), 1):
            results.append(future.result())
            print(f"-- {done}/{len(names)} sets done ({futures[future]})", flush=True)
    return results


def dataset_path(name: str) -> Path:
    """The .npz file behind an 'adbench/<name>' catalog name (for ordering by size)."""
    from anomaly.data.catalog import _adbench_names, data_root

    return data_root() / _adbench_names()[name]


# --- summary -----------------------------------------------------------------------------------
def summarise(dataset: dict, method: str) -> dict:
    """Mean / std over seeds of AUROC, AUPRC and seconds; the errors, if any."""
    results = [run["results"][method] for run in dataset["runs"]]
    good = [r for r in results if "error" not in r]
    summary: dict[str, Any] = {"n_ok": len(good), "n": len(results)}
    summary["errors"] = sorted({r["error"] for r in results if "error" in r})
    summary["seconds"] = float(np.mean([r["seconds"] for r in results]))
    for key in ("auroc", "auprc"):
        values = [r[key] for r in good]
        summary[key] = float(np.mean(values)) if values else None
        summary[f"{key}_std"] = float(np.std(values)) if values else None
    if method == "genad" and good:
        summary["active"] = ",".join(str(r["active_units"]) for r in good)
        summary["latent"] = good[0]["latent_dim"]
        summary["epochs"] = ",".join(str(r["epochs"]) for r in good)
        summary["nonfinite"] = sum(r["nonfinite"] for r in good)
    return summary


def cell(summary: dict, key: str) -> str:
    """'mean ± std' of one metric, marked when some seeds failed, or the error text."""
    if summary[key] is None:
        return "error: " + summary["errors"][0][:90].replace("|", "\\|")
    text = f"{summary[key]:.3f} ± {summary[key + '_std']:.3f}"
    if summary["n_ok"] < summary["n"]:
        text += f" ({summary['n_ok']}/{summary['n']} seeds)"
    return text


def means_over_sets(table: dict[str, dict[str, dict]], sets: list[str]) -> dict[str, dict]:
    """Per method: mean AUROC / AUPRC / seconds over `sets` (sets a method failed on skipped)."""
    out = {}
    for method in METHODS:
        rows = [table[name][method] for name in sets]
        ok = [r for r in rows if r["auroc"] is not None]
        out[method] = {
            "auroc": float(np.mean([r["auroc"] for r in ok])) if ok else float("nan"),
            "auprc": float(np.mean([r["auprc"] for r in ok])) if ok else float("nan"),
            "seconds": float(np.mean([r["seconds"] for r in rows])),
            "n_sets": len(ok),
        }
    return out


# --- markdown ----------------------------------------------------------------------------------
def header_lines(args: argparse.Namespace, wall: float) -> list[str]:
    """Command line, date, versions, threads and the run's wall time."""
    import pyod

    exe = sys.executable
    exe = os.path.relpath(exe) if exe.startswith(os.getcwd()) else exe
    command = shlex.join([exe, *sys.argv])
    return [
        "## ADBench: genad VAEDetector vs IsolationForest vs PyOD VAE",
        "",
        f"Command: `{command}`",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- code (git, at start of the run): {args.commit}",
        f"- torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
        f"pyod {pyod.__version__}, numpy {np.__version__}, Python {platform.python_version()}",
        f"- torch threads per process: {args.threads}; worker processes (--jobs): {args.jobs}; "
        f"machine: {os.cpu_count()} CPUs, {platform.machine()}",
        f"- seeds: {', '.join(map(str, args.seeds))}; sets: {len(args.datasets)}; "
        f"total wall time: {wall / 60:.1f} min",
        "",
    ]


def protocol_lines(args: argparse.Namespace, results: list[dict]) -> list[str]:
    """How the data were split and subsampled, and how each method was run."""
    lines = [
        "Protocol: per seed, `novelty_split(X, y, test_fraction=0.3, seed=seed)` (stratified); "
        "all three methods train on the identical normal training rows and score the identical "
        "test rows. Anomaly scores: genad `-score_samples` (IWAE, K=100), IsolationForest "
        "`-score_samples`, PyOD VAE `decision_function`. Metrics: AUROC and AUPRC (average "
        "precision), mean ± std over seeds. Times are fit + score wall seconds per seed.",
        "",
        "PyOD VAE: `VAE(random_state=seed, verbose=0)`, everything else at PyOD's defaults "
        "(30 epochs, batch 32, encoder 128-64-32, latent 2, dropout 0.2, MSE reconstruction "
        "score). Its default `preprocessing=True` already standardises with the training mean "
        "and std, `(x - mean) / (std + 1e-8)`, like genad's `Standardizer`, so no extra "
        "standardisation was added. (One difference: a feature constant in training is only "
        "centred by genad but divided by 1e-8 by PyOD.)",
        "",
    ]
    return lines + subsample_lines(args, results)


def subsample_lines(args: argparse.Namespace, results: list[dict]) -> list[str]:
    """Which sets were subsampled, from how many rows to how many."""
    lines = []
    for dataset in sorted(results, key=lambda d: d["name"].lower()):
        run = dataset["runs"][0]
        if run["n_train"] < run["full_train"] or run["n_test"] < run["full_test"]:
            lines.append(
                f"- {short(dataset['name'])}: train {run['full_train']} -> {run['n_train']} "
                f"normal rows, test {run['full_test']} -> {run['n_test']} rows "
                f"({run['n_anomalies']} anomalies)"
            )
    if not lines:
        return ["No set was subsampled.", ""]
    intro = (
        f"Subsampled (random, stratified by label, per seed; --max-train-rows "
        f"{args.max_train_rows}, --max-test-rows {args.max_test_rows}); all other sets are "
        "used in full:"
    )
    return [intro, "", *lines, ""]


def short(name: str) -> str:
    """'adbench/breastw' -> 'breastw'."""
    return name.split("/", 1)[1]


def metric_table(table: dict, results: list[dict], means: dict) -> list[str]:
    """Per-set AUROC and AUPRC of the three methods, then the mean over sets."""
    head = "| set | n train / test (anom.) | " + " | ".join(
        f"{LABELS[m]} {k}" for k in ("AUROC", "AUPRC") for m in METHODS
    )
    lines = [head + " |", "|---" * (2 + 2 * len(METHODS)) + "|"]
    for dataset in results:
        run, row = dataset["runs"][0], table[dataset["name"]]
        sizes = f"{run['n_train']} / {run['n_test']} ({run['n_anomalies']})"
        cells = [cell(row[m], k) for k in ("auroc", "auprc") for m in METHODS]
        lines.append(f"| {short(dataset['name'])} | {sizes} | " + " | ".join(cells) + " |")
    mean_cells = [f"**{means[m][k]:.3f}**" for k in ("auroc", "auprc") for m in METHODS]
    lines.append("| **mean over sets** | | " + " | ".join(mean_cells) + " |")
    return [*lines, ""]


def time_table(table: dict, results: list[dict], means: dict) -> list[str]:
    """Per-set seconds of each method and genad's diagnostics."""
    lines = [
        "| set | rows × features | genad s | IsolationForest s | PyOD VAE s | "
        "genad active units per seed, of latent dim | genad epochs per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset in results:
        row = table[dataset["name"]]
        genad = row["genad"]
        active = f"{genad.get('active', '-')} of {genad.get('latent', '-')}"
        secs = " | ".join(f"{row[m]['seconds']:.2f}" for m in METHODS)
        lines.append(
            f"| {short(dataset['name'])} | {dataset['rows']} × {dataset['features']} | {secs} | "
            f"{active} | {genad.get('epochs', '-')} |"
        )
    secs = " | ".join(f"**{means[m]['seconds']:.2f}**" for m in METHODS)
    lines.append(f"| **mean over sets** | | {secs} | | |")
    return [*lines, ""]


def verdict_lines(table: dict, results: list[dict], means: dict) -> list[str]:
    """Wins count, the target's PASS / FAIL and the errors."""
    pairs = [table[d["name"]] for d in results]
    both = [
        r for r in pairs if r["genad"]["auroc"] is not None and r["iforest"]["auroc"] is not None
    ]
    wins = sum(r["genad"]["auroc"] >= r["iforest"]["auroc"] for r in both)
    genad, forest = means["genad"]["auroc"], means["iforest"]["auroc"]
    verdict = "PASS" if genad >= forest else "FAIL"
    lines = [
        f"genad AUROC >= IsolationForest AUROC on **{wins} of {len(both)}** sets (means over "
        "seeds).",
        "",
        f"Target (issue): genad's mean AUROC >= IsolationForest's: {genad:.3f} vs {forest:.3f} "
        f"-> **{verdict}**. Mean over sets a method succeeded on: "
        + ", ".join(f"{LABELS[m]} {means[m]['n_sets']}" for m in METHODS)
        + ".",
        "",
    ]
    errors = [
        f"- {short(d['name'])} / {LABELS[m]}: `{e}`"
        for d in results
        for m in METHODS
        for e in table[d["name"]][m]["errors"]
    ]
    return lines + (["Errors (full text):", "", *errors, ""] if errors else ["No errors.", ""])


TUNING = (
    "What was tuned: nothing was tuned on these sets by the author of this benchmark; every "
    "method runs at its defaults (only the seed, and PyOD's progress bar off, are set). "
    "VAEDetector's defaults were set by the lead a priori; the lead looked at the breastw and "
    "satimage-2 results while developing."
)


def markdown(args: argparse.Namespace, results: list[dict], wall: float) -> str:
    """The whole markdown section."""
    results = sorted(results, key=lambda d: d["name"].lower())
    table = {d["name"]: {m: summarise(d, m) for m in METHODS} for d in results}
    means = means_over_sets(table, [d["name"] for d in results])
    lines = header_lines(args, wall) + protocol_lines(args, results)
    lines += ["### AUROC and AUPRC (mean ± std over seeds)", ""]
    lines += metric_table(table, results, means)
    lines += verdict_lines(table, results, means)
    lines += ["### Fit + score time (seconds, mean over seeds) and genad diagnostics", ""]
    lines += time_table(table, results, means)
    lines += [TUNING, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the markdown and write it to --out."""
    os.environ.setdefault("GENAD_DATA_DIR", DEFAULT_DATA_DIR)
    args = parse_args(argv)
    args.commit = git_commit()  # the code imported now is the code measured
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # inherited by the spawned workers
    set_threads(
        args.threads, f"jobs: {args.jobs}; {len(args.datasets)} sets x {len(args.seeds)} seeds"
    )
    start = time.perf_counter()
    results = run_all(args)
    text = markdown(args, results, time.perf_counter() - start)
    print(text, flush=True)
    if args.out is not None:
        save_text(args.out, text)


if __name__ == "__main__":
    main()

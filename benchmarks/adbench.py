"""ADBench, two protocols: genad's VAEDetector against IsolationForest, ECOD, PyOD VAE and AE.

For every ADBench "Classical" set (25, see ../shared/data/README.md) and every seed, the rows
are split once, stratified, 30 % test (`anomaly.evaluation`), and every detector is fitted on
the identical training rows and scored on the identical test rows. Protocols (`--protocols`):

- novelty: `novelty_split(X, y, seed=seed)`; the detectors train on the normal rows of the
  training part only;
- unsupervised: `unsupervised_split(X, y, seed=seed)`; the detectors train on the whole
  training part, anomalies included (its labels are never shown to a detector; they only
  stratify the subsampling). Its test rows are those of the novelty protocol.

Methods (`--methods`, default all):

- genad: `VAEDetector(random_state=seed)` at its defaults, plus the keyword arguments of
  `--genad-params '{"name": value}'` when given (they are recorded in the outputs); anomaly
  score = -score_samples (minus the estimated log p(x));
- iforest: scikit-learn `IsolationForest(random_state=seed)`; score = -score_samples;
- ecod: PyOD `ECOD()` at its defaults; score = decision_function;
- pyod_vae: PyOD `VAE(random_state=seed, verbose=0)`; score = decision_function;
- pyod_ae: PyOD `AutoEncoder(random_state=seed, verbose=0)`; score = decision_function.
  PyOD standardises its inputs itself (`preprocessing=True`), so nothing is added here.

On the large sets the training rows are subsampled to `--max-train-rows` (stratified by the
training labels: the unsupervised protocol keeps the anomaly rate) and the test rows to
`--max-test-rows` (stratified; the same test rows in both protocols). The unit of work is
(protocol, set, seed, method), run in `--jobs` spawned processes, largest sets first; each
process first fits every method once on 64 random rows, so no unit's seconds include one-time
costs. Each unit's result is cached as one JSON file under `--cache` (see `cache_path`)
and reused by later runs; genad's files are keyed by a hash of its parameters and
`--cache-tag` (default 'auto': the commit plus a hash of the local changes in anomaly/ and
generative/), the baselines' by method, protocol, set, seed and row limits. Errors are
reported, never cached. The report (adbench_report.py) is printed, written to `--out` and, as
JSON, to `--json`.

Usage:
    .venv/bin/python benchmarks/adbench.py --jobs 2 --out .state/bench/adbench.md \
        --json docs/results/adbench.json [--protocols unsupervised] [--methods genad,iforest] \
        [--genad-params '{"epochs": 50}'] [--cache-tag NAME | --no-cache]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import subprocess
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext, suppress
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from adbench_report import atomic_write, markdown, results_json
from bench_common import DEFAULT_DATA_DIR, set_threads
from provenance import command_line, git_commit
from sklearn.ensemble import IsolationForest

from anomaly.data import list_datasets, load_dataset
from anomaly.detector import VAEDetector
from anomaly.evaluation import novelty_split, ranking_metrics, unsupervised_split

METHODS = ("genad", "iforest", "ecod", "pyod_vae", "pyod_ae")  # slowest first within a set
PROTOCOLS = {"novelty": novelty_split, "unsupervised": unsupervised_split}
Result = dict[str, Any]


class Unit(NamedTuple):
    """One piece of work: a method fitted and scored on one protocol's split of a set."""

    protocol: str
    dataset: str
    seed: int
    method: str


# --- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--threads", type=int, default=1, help="torch / OMP threads per process")
    add("--seeds", default="0,1,2", help="comma-separated split / model seeds")
    add("--datasets", default="all", help="comma-separated ADBench names, or 'all'")
    add("--protocols", default="novelty,unsupervised", help="novelty, unsupervised or both")
    add("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    add("--genad-params", default="{}", help="JSON object of extra VAEDetector arguments")
    add("--max-train-rows", type=int, default=10000)
    add("--max-test-rows", type=int, default=20000)
    add("--jobs", type=int, default=1, help="worker processes (spawned)")
    add("--cache", type=Path, default=Path(".state/adbench_cache"), help="result cache folder")
    add("--cache-tag", default="auto", help="genad's cache key besides its parameters")
    add("--no-cache", action="store_true", help="neither read nor write the cache")
    add("--out", type=Path, default=None, help="markdown file to write")
    add("--json", type=Path, default=Path("docs/results/adbench.json"), help="JSON to write")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in split_list(args.seeds)]
    args.datasets = dataset_names(args.datasets)
    args.protocols = checked(split_list(args.protocols), PROTOCOLS, "protocol")
    args.methods = checked(split_list(args.methods), METHODS, "method")
    args.genad_params = json.loads(args.genad_params)
    if not isinstance(args.genad_params, dict):
        raise SystemExit("--genad-params must be a JSON object")
    return args


def split_list(spec: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [item.strip() for item in spec.split(",") if item.strip()]


def checked(items: list[str], known: Any, what: str) -> list[str]:
    """`items` in the order of `known`, or exit naming the unknown one."""
    for item in items:
        if item not in known:
            raise SystemExit(f"unknown {what} {item!r}; known: {', '.join(known)}")
    return [name for name in known if name in items]


def dataset_names(spec: str) -> list[str]:
    """'all' -> every ADBench set in the catalog; else the listed names as 'adbench/<name>'."""
    known = [name for name in list_datasets() if name.startswith("adbench/")]
    if spec == "all":
        return known
    by_lower = {name.lower(): name for name in known}
    names = []
    for item in split_list(spec):
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


@lru_cache(maxsize=2)
def load_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A set's rows (float64) and labels (int); kept for the worker's next unit."""
    data = load_dataset(name)
    return np.asarray(data.X, dtype=np.float64), np.asarray(data.y).astype(int)


def prepare_split(protocol: str, name: str, seed: int, max_train: int, max_test: int) -> dict:
    """The seed's split under `protocol`, then subsampled (stratified) where over the limits.

    Training and test rows are drawn by separate generators, so both protocols keep the same
    test rows."""
    X, y = load_arrays(name)
    split = PROTOCOLS[protocol](X, y, seed=seed)
    y_train = split.y_train if split.y_train is not None else np.zeros(len(split.X_train), int)
    train_rows = stratified_rows(y_train, max_train, np.random.default_rng([seed, 2024]))
    test_rows = stratified_rows(split.y_test, max_test, np.random.default_rng([seed, 2024, 1]))
    sizes = {
        "n_train": len(train_rows),
        "n_train_anomalies": int(y_train[train_rows].sum()),
        "n_test": len(test_rows),
        "n_anomalies": int(split.y_test[test_rows].sum()),
        "full_train": len(split.X_train),
        "full_test": len(split.X_test),
        "rows": len(X),
        "features": X.shape[1],
    }
    X_train, X_test = split.X_train[train_rows], split.X_test[test_rows]
    return {"X_train": X_train, "X_test": X_test, "y_test": split.y_test[test_rows], **sizes}


# --- the detectors: (X_train, X_test, seed, genad params) -> (anomaly score, diagnostics) ------
def fit_genad(X_train: np.ndarray, X_test: np.ndarray, seed: int, params: dict) -> tuple:
    """VAEDetector at its defaults plus `params`; anomaly score = -log p(x) estimate."""
    detector = VAEDetector(random_state=seed, **params).fit(X_train)
    score = -detector.score_samples(X_test)
    model = getattr(detector, "model_", None)
    info = {
        "active_units": getattr(detector, "active_units_", None),
        "latent_dim": getattr(getattr(model, "config", None), "latent_dim", None),
        "epochs": len(getattr(detector, "history_", []) or []),
        "nonfinite": int((~np.isfinite(score)).sum()),
    }
    return score, info


def fit_iforest(X_train: np.ndarray, X_test: np.ndarray, seed: int, params: dict) -> tuple:
    """IsolationForest at its defaults; anomaly score = -score_samples."""
    forest = IsolationForest(random_state=seed).fit(X_train)
    return -forest.score_samples(X_test), {}


def fit_ecod(X_train: np.ndarray, X_test: np.ndarray, seed: int, params: dict) -> tuple:
    """PyOD's ECOD at its defaults (deterministic); anomaly score = decision_function."""
    from pyod.models.ecod import ECOD  # PyOD only where a PyOD method runs (the bench extra)

    return ECOD().fit(X_train).decision_function(X_test), {}


def fit_pyod_vae(X_train: np.ndarray, X_test: np.ndarray, seed: int, params: dict) -> tuple:
    """PyOD's VAE at its defaults (seeded, progress bar off); anomaly score = decision_function."""
    from pyod.models.vae import VAE

    return VAE(random_state=seed, verbose=0).fit(X_train).decision_function(X_test), {}


def fit_pyod_ae(X_train: np.ndarray, X_test: np.ndarray, seed: int, params: dict) -> tuple:
    """PyOD's AutoEncoder at its defaults (seeded, progress bar off); decision_function."""
    from pyod.models.auto_encoder import AutoEncoder

    model = AutoEncoder(random_state=seed, verbose=0).fit(X_train)
    return model.decision_function(X_test), {}


FITTERS: dict[str, Callable[[np.ndarray, np.ndarray, int, dict], tuple]] = {
    "genad": fit_genad,
    "iforest": fit_iforest,
    "ecod": fit_ecod,
    "pyod_vae": fit_pyod_vae,
    "pyod_ae": fit_pyod_ae,
}


def warm_up(threads: int, methods: list[str], params: dict) -> None:
    """Set the process's torch threads and fit each method once on 64 random rows, so that no
    unit's seconds include one-time costs (first torch calls, lazy imports)."""
    torch.set_num_threads(threads)
    X = np.random.default_rng(0).normal(size=(64, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in methods:
            with suppress(Exception):  # the real units report errors
                FITTERS[method](X, X, 0, params)


def run_unit(unit: Unit, max_train: int, max_test: int, threads: int, params: dict) -> Result:
    """Fit and score one unit (in a worker); errors are recorded, not raised."""
    torch.set_num_threads(threads)
    record: Result = {**unit._asdict(), "date": datetime.datetime.now().isoformat("T", "seconds")}
    data = prepare_split(unit.protocol, unit.dataset, unit.seed, max_train, max_test)
    record["sizes"] = {k: v for k, v in data.items() if not k.startswith(("X_", "y_"))}
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score, info = FITTERS[unit.method](data["X_train"], data["X_test"], unit.seed, params)
        seconds = time.perf_counter() - start
        record["result"] = {**ranking_metrics(data["y_test"], score), "seconds": seconds, **info}
    except Exception as error:  # noqa: BLE001 - the benchmark reports every failure
        message = " ".join(f"{type(error).__name__}: {error}".split())
        record["result"] = {"error": message, "seconds": time.perf_counter() - start}
    return record


# --- cache -------------------------------------------------------------------------------------
def params_hash(params: dict) -> str:
    """A short hash of genad's extra parameters ('p' + 8 hex digits; the same for any key order)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return "p" + hashlib.sha256(text.encode()).hexdigest()[:8]


def git_output(*command: str) -> bytes:
    """A git command's stdout (raises when git fails)."""
    return subprocess.run(["git", *command], capture_output=True, check=True, timeout=60).stdout


def code_fingerprint() -> str:
    """The commit plus a hash of the local changes (tracked and untracked) in anomaly/ and
    generative/: genad's default cache tag, so changed code is measured again."""
    try:
        commit = git_output("rev-parse", "--short", "HEAD").decode().strip()
        diff = git_output("diff", "HEAD", "--", "anomaly", "generative")
        others = git_output("ls-files", "--others", "--exclude-standard", "anomaly", "generative")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not diff and not others.strip():
        return commit
    digest = hashlib.sha256(diff)
    for path in sorted(others.decode().split()):
        digest.update(path.encode() + Path(path).read_bytes())
    return f"{commit}-{digest.hexdigest()[:8]}"


def cache_path(args: argparse.Namespace, unit: Unit) -> Path:
    """`CACHE/<protocol>/<set>/<method>_seed<s>_train<max>_test<max>.json`; genad's method part
    is `genad-<params hash>-<cache tag>`."""
    method = unit.method
    if method == "genad":
        method = f"genad-{params_hash(args.genad_params)}-{args.cache_tag}"
    method = re.sub(r"[^A-Za-z0-9_.+-]", "_", method)
    name = f"{method}_seed{unit.seed}_train{args.max_train_rows}_test{args.max_test_rows}.json"
    return args.cache / unit.protocol / unit.dataset.split("/", 1)[1] / name


def cached(args: argparse.Namespace, unit: Unit) -> Result | None:
    """The unit's cached record, or None (no cache, no file, or an unreadable one)."""
    if args.no_cache:
        return None
    try:
        record = json.loads(cache_path(args, unit).read_text())
    except (OSError, ValueError):
        return None
    return {**record, "cached": True}


def plain(value: Any) -> Any:
    """A numpy scalar as a Python one, anything else JSON cannot write as its text."""
    return value.item() if hasattr(value, "item") else str(value)


def store(args: argparse.Namespace, unit: Unit, record: Result) -> None:
    """Write a successful unit's record to the cache (atomically); errors are not kept."""
    if args.no_cache or "error" in record["result"]:
        return
    extra = {"genad_params": args.genad_params, "cache_tag": args.cache_tag}
    body = {**record, **(extra if unit.method == "genad" else {})}
    text = json.dumps(body, indent=1, default=plain)
    atomic_write(cache_path(args, unit), text + "\n")


# --- running -----------------------------------------------------------------------------------
def dataset_work(name: str, max_train: int) -> int:
    """A set's expected cost, for running the largest first: training rows used x (100 +
    features), since the networks' time per batch grows slowly with the width."""
    X, _ = load_arrays(name)
    return min(len(X), max_train) * (100 + X.shape[1])


def all_units(args: argparse.Namespace) -> list[Unit]:
    """Every unit: largest sets first, then seed, protocol and method (slowest first)."""
    names = sorted(args.datasets, key=lambda n: -dataset_work(n, args.max_train_rows))
    load_arrays.cache_clear()
    return [
        Unit(protocol, name, seed, method)
        for name in names
        for seed in args.seeds
        for protocol in args.protocols
        for method in args.methods
    ]


def progress_line(record: Result, done: int, total: int) -> str:
    """One log line per finished unit."""
    result, unit = record["result"], f"{record['protocol']} {record['dataset']}"
    unit += f" seed={record['seed']} {record['method']}"
    if "error" in result:
        text = f"ERROR {result['error'][:100]}"
    else:
        text = f"AUROC {result['auroc']:.3f} AUPRC {result['auprc']:.3f} {result['seconds']:.1f}s"
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    return f"[{stamp}] {done}/{total} {unit}: {text}"


def run_all(args: argparse.Namespace) -> list[Result]:
    """Every unit: from the cache where present, else run (serially or in `--jobs` spawned
    processes) and cached."""
    units = all_units(args)
    hits = {unit: cached(args, unit) for unit in units}
    records = [record for record in hits.values() if record is not None]
    todo = [unit for unit, record in hits.items() if record is None]
    print(f"{len(units)} units: {len(records)} from the cache, {len(todo)} to run", flush=True)
    work = (args.max_train_rows, args.max_test_rows, args.threads, args.genad_params)
    warm = (args.threads, args.methods, args.genad_params)
    spawn = get_context("spawn")
    if todo and args.jobs <= 1:
        warm_up(*warm)
    pool_or_none = (
        ProcessPoolExecutor(args.jobs, mp_context=spawn, initializer=warm_up, initargs=warm)
        if todo and args.jobs > 1
        else nullcontext()
    )
    with pool_or_none as pool:
        if pool is None:
            finished = (run_unit(unit, *work) for unit in todo)
        else:
            futures = [pool.submit(run_unit, unit, *work) for unit in todo]
            finished = (future.result() for future in as_completed(futures))
        for done, record in enumerate(finished, 1):
            store(args, Unit(*(record[key] for key in Unit._fields)), record)
            records.append({**record, "cached": False})
            print(progress_line(record, done, len(todo)), flush=True)
    return records


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the markdown, write it to --out and the JSON to --json."""
    os.environ.setdefault("GENAD_DATA_DIR", DEFAULT_DATA_DIR)
    args = parse_args(argv)
    args.command, args.commit = command_line(), git_commit()  # the code imported now is measured
    args.date = datetime.datetime.now().isoformat(timespec="seconds")
    if args.cache_tag == "auto":
        args.cache_tag = code_fingerprint()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # inherited by the spawned workers
    size = f"{len(args.datasets)} sets x {len(args.seeds)} seeds x {len(args.protocols)} protocols"
    set_threads(args.threads, f"jobs: {args.jobs}; {size} x {len(args.methods)} methods")
    start = time.perf_counter()
    records = run_all(args)
    wall = time.perf_counter() - start
    text = markdown(args, records, wall)
    print(text, flush=True)
    if args.out is not None:
        atomic_write(args.out, text)
    if args.json is not None:
        atomic_write(args.json, json.dumps(results_json(args, records, wall), indent=1) + "\n")


if __name__ == "__main__":
    main()

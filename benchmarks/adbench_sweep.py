"""Sweep of VAEDetector settings on ADBench: what chose genad's robust-training defaults.

Each variant (a name and VAEDetector keyword arguments, as JSON) and IsolationForest are fitted
on the same split of every set and seed: `unsupervised_split` (train on the contaminated
training part) or `novelty_split`, subsampled like benchmarks/adbench.py (at most 10,000
training and 20,000 test rows, stratified, generator seeded by [seed, 2024]). A variant whose
JSON holds "_ensemble": {...} is a `VAEEnsembleDetector` with those parameters and the rest as
`member_params`. Results are cached per (set, seed, protocol, variant, parameters) under
`--cache`, so a sweep adds only what is new. Prints per-set mean AUROC over seeds and, per
variant, the mean AUROC and AUPRC, wins against IsolationForest, the mean per-set seed spread
(std of AUROC over seeds) and the median fit + score seconds.

Usage (one torch thread per process):
    .venv/bin/python benchmarks/adbench_sweep.py --protocol unsupervised \
        --variants '{"trim": {"trim_fraction": 0.1, "refit": false}}' [--datasets wine,glass]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
import warnings
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from adbench import stratified_rows
from bench_common import DEFAULT_DATA_DIR

SPLITS = {"unsupervised": "unsupervised_split", "novelty": "novelty_split"}
LARGE = ("ALOI", "campaign", "celeba", "cover", "donors", "http", "skin", "smtp", "mnist")


def split(name: str, seed: int, protocol: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training rows, test rows, test labels) of one set, seed and protocol."""
    from anomaly import evaluation
    from anomaly.data import load_dataset

    data = load_dataset(name)
    X, y = np.asarray(data.X, np.float64), np.asarray(data.y).astype(int)
    parts = getattr(evaluation, SPLITS[protocol])(X, y, seed=seed)
    rng = np.random.default_rng([seed, 2024])
    y_train = parts.y_train if parts.y_train is not None else np.zeros(len(parts.X_train), int)
    train = stratified_rows(y_train, 10_000, rng)
    test = stratified_rows(parts.y_test, 20_000, rng)
    return parts.X_train[train], parts.X_test[test], parts.y_test[test]


def anomaly_scores(variant: str, params: dict, X_train: np.ndarray, X_test: np.ndarray,
                   seed: int) -> np.ndarray:  # fmt: skip
    """Higher = more anomalous, from IsolationForest or the variant's detector."""
    if variant == "iforest":
        from sklearn.ensemble import IsolationForest

        return -IsolationForest(random_state=seed).fit(X_train).score_samples(X_test)
    from anomaly import VAEDetector, VAEEnsembleDetector

    params = dict(params)
    if "_ensemble" in params:
        ensemble = params.pop("_ensemble")
        detector = VAEEnsembleDetector(random_state=seed, member_params=params, **ensemble)
    else:
        detector = VAEDetector(random_state=seed, **params)
    return -detector.fit(X_train).score_samples(X_test)


def run(task: tuple[str, int, str, str, dict, str]) -> dict[str, Any]:
    """One (set, seed, protocol, variant): AUROC, AUPRC and seconds, cached as JSON."""
    import torch

    from anomaly.evaluation import ranking_metrics

    torch.set_num_threads(1)
    name, seed, protocol, variant, params, cache = task
    key = json.dumps([name, seed, protocol, variant, params], sort_keys=True)
    path = Path(cache) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    X_train, X_test, y_test = split(name, seed, protocol)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = anomaly_scores(variant, params, X_train, X_test, seed)
    seconds = time.perf_counter() - start
    score = np.nan_to_num(score, nan=1e30, posinf=1e30, neginf=-1e30)
    result = {"name": name, "seed": seed, "variant": variant, "seconds": seconds,
              **ranking_metrics(y_test, score)}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps(result))
    path.with_suffix(".tmp").replace(path)
    return result


def report(results: list[dict], names: list[str], variants: list[str]) -> None:
    """Per-set AUROC table, then one summary line per variant."""
    table: dict[str, dict[str, list[dict]]] = {}
    for result in results:
        table.setdefault(result["variant"], {}).setdefault(result["name"], []).append(result)

    def mean(variant: str, name: str, key: str) -> float:
        return float(np.mean([r[key] for r in table[variant][name]]))

    print(f"{'set':14s} " + " ".join(f"{v[:14]:>14s}" for v in variants))
    for name in sorted(names, key=str.lower):
        cells = " ".join(f"{mean(v, name, 'auroc'):14.3f}" for v in variants)
        print(f"{name.split('/')[1][:14]:14s} {cells}")
    for variant in variants:
        auroc = [mean(variant, n, "auroc") for n in names]
        wins = sum(mean(variant, n, "auroc") >= mean("iforest", n, "auroc") for n in names)
        spread = np.mean([np.std([r["auroc"] for r in table[variant][n]]) for n in names])
        seconds = np.median([mean(variant, n, "seconds") for n in names])
        auprc = np.mean([mean(variant, n, "auprc") for n in names])
        print(f"{variant:24s} AUROC {np.mean(auroc):.4f} AUPRC {auprc:.4f} wins "
              f"{wins}/{len(names)} spread {spread:.3f} median_s {seconds:.2f}")  # fmt: skip


def main() -> None:
    """Run the sweep and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=list(SPLITS), default="unsupervised")
    parser.add_argument("--variants", required=True, help="JSON: {name: VAEDetector params}")
    parser.add_argument("--datasets", default="all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache", default=".state/adbench_sweep")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("GENAD_DATA_DIR", DEFAULT_DATA_DIR)
    from anomaly.data import list_datasets

    names = [n for n in list_datasets() if n.startswith("adbench/")]
    if args.datasets != "all":
        wanted = {d.lower() for d in args.datasets.split(",")}
        names = [n for n in names if n.split("/")[1].lower() in wanted]
    names.sort(key=lambda n: n.split("/")[1] not in LARGE)  # the slow ones first
    variants = {"iforest": {}, **json.loads(args.variants)}
    seeds = [int(s) for s in args.seeds.split(",")]
    tasks = [(n, s, args.protocol, v, p, args.cache)
             for n in names for s in seeds for v, p in variants.items()]  # fmt: skip
    with get_context("spawn").Pool(args.jobs) as pool:
        results = pool.map(run, tasks, chunksize=1)
    report(results, names, list(variants))


if __name__ == "__main__":
    main()

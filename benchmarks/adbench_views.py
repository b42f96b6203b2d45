"""Several detector "views" per ADBench set and seed, alone and combined on a common scale.

A view is a name and VAEDetector keyword arguments (JSON); a name that starts with "iforest"
is IsolationForest. Each view is fitted once per (set, seed) on the split and subsample of
`benchmarks/adbench_sweep.py` (`--protocol unsupervised` or `novelty`); its test scores and its
calibration scores (VAEDetector: `calibration_scores_`, the held-out rows it never trained on;
IsolationForest: its training rows) are cached under `--cache` as npz, keyed by the view's
parameters. A combination "a+b" standardises each view's score by the median and MAD
(x 1.4826) of its own calibration scores, so no test label or test row sets the scale, and
adds them. A selection "a|b" scores each (set, seed) by the view whose calibration scores have
the higher mean (model choice by held-out log-likelihood; meaningful only between views whose
scores are log p(x) in the same units, e.g. two decoders on the same scaling). A view whose
parameters hold `"_score_as_gaussian": true` trains with its own decoder (a Student-t) and scores
with a Gaussian of the same location and scale (the robust fit's Gaussian plug-in);
`"_draw": r` refits the same detector with random_state 1000 r + seed (another draw of its
initialisation, batch order and held-out rows) and `"_ensemble": {...}` fits a
VAEEnsembleDetector (`view_scores`). `--json` writes the summary rows.
Prints per-set AUROC (mean over seeds) and, per view, combination and selection, the mean AUROC,
mean AUPRC and the sets where it is at least IsolationForest's; with `--reference`, each row paired
against that one set by set.

Usage (one torch thread per process):
    .venv/bin/python benchmarks/adbench_views.py --protocol unsupervised \
        --views '{"iforest": {}, "gauss": {}, "t": {"likelihood": "student_t"}}' \
        --combine 'gauss+t,gauss|t' --reference gauss
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import warnings
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from adbench import dataset_names
from adbench_sweep import LARGE, split
from sklearn.metrics import average_precision_score, roc_auc_score


def adbench_names(spec: str) -> list[str]:
    """The ADBench sets `spec` names (comma-separated, or "all"), without the "adbench/"."""
    return [name.removeprefix("adbench/") for name in dataset_names(spec)]


def cache_path(cache: str, name: str, seed: int, protocol: str, view: str, params: dict) -> Path:
    key = json.dumps([name, seed, protocol, view, params], sort_keys=True)
    return Path(cache) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def score_as_gaussian(detector) -> None:
    """Make a fitted Student-t detector score with the Gaussian of the same location and scale."""
    import types

    from generative.vae.likelihoods import GaussianLearned, StudentT

    likelihood = detector.model_.likelihood
    if not isinstance(likelihood, StudentT):
        raise SystemExit("_score_as_gaussian needs a view with likelihood='student_t'")
    likelihood.log_prob = types.MethodType(GaussianLearned.log_prob, likelihood)


def fit_view(task: tuple[str, int, str, str, dict, str]) -> str:
    """Fit one view on one (set, seed); cache (test scores, calibration scores, labels)."""
    import torch

    torch.set_num_threads(1)
    name, seed, protocol, view, params, cache = task
    path = cache_path(cache, name, seed, protocol, view, params)
    if path.is_file():
        return str(path)
    X_train, X_test, y_test = split(f"adbench/{name}", seed, protocol)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test, calibration = view_scores(view, params, X_train, X_test, seed)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".tmp"), "wb") as handle:
        np.savez(handle, test=test, calibration=calibration, y=y_test, seconds=seconds)
    path.with_suffix(".tmp").replace(path)
    return str(path)


def view_scores(
    view: str, params: dict, X_train: np.ndarray, X_test: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(test scores, calibration scores) of one view fitted on X_train, higher = more normal.

    Keys of `params` that are not VAEDetector parameters: `"_draw": r` fits with random_state
    1000 r + seed instead of seed (another draw of the same detector: initialisation, batch
    order and held-out rows); `"_ensemble": {...}` fits a VAEEnsembleDetector with those
    parameters and the rest of `params` as its members'; `"_score_as_gaussian": true` (below).
    """
    params = dict(params)
    random_state = 1000 * params.pop("_draw", 0) + seed
    if view.startswith("iforest"):
        from sklearn.ensemble import IsolationForest

        forest = IsolationForest(random_state=random_state).fit(X_train)
        return forest.score_samples(X_test), forest.score_samples(X_train)
    from anomaly import VAEDetector, VAEEnsembleDetector

    as_gaussian = params.pop("_score_as_gaussian", False)
    if "_ensemble" in params:
        ensemble = params.pop("_ensemble")
        detector = VAEEnsembleDetector(random_state=random_state, member_params=params, **ensemble)
        detector.fit(X_train)
    else:
        detector = VAEDetector(random_state=random_state, **params).fit(X_train)
    if as_gaussian:
        score_as_gaussian(detector)
        calibration_rows = detector._split(len(X_train))[2]  # the rows fit held out
        detector.calibration_scores_ = detector.score_samples(X_train[calibration_rows])
    return detector.score_samples(X_test), detector.calibration_scores_


def standardised(test: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """Higher = more normal, in units of the calibration scores' robust spread."""
    test, calibration = (np.nan_to_num(a, nan=-1e30, neginf=-1e30) for a in (test, calibration))
    median = np.median(calibration)
    spread = 1.4826 * np.median(np.abs(calibration - median)) + 1e-12
    return np.clip((test - median) / spread, -1e6, 1e6)


def held_out_mean(fitted: np.lib.npyio.NpzFile) -> float:
    """Mean calibration score (mean held-out log p(x) for a VAE view); NaN counts as -inf."""
    return float(np.mean(np.nan_to_num(fitted["calibration"], nan=-np.inf)))


def metrics(args: argparse.Namespace, views: dict, combos: list[list[str]]) -> dict:
    """{row name: {set: [(AUROC, AUPRC) per seed]}} for the views and the combinations."""
    rows: dict[str, dict[str, list]] = {}
    for name in args.datasets:
        for seed in args.seeds:
            fitted = {
                view: np.load(cache_path(args.cache, name, seed, args.protocol, view, params))
                for view, params in views.items()
            }
            y = next(iter(fitted.values()))["y"]
            scores = {view: -np.nan_to_num(f["test"], nan=-1e30) for view, f in fitted.items()}
            for combo in combos:
                if "|" in combo[0]:  # a selection: the view of highest mean calibration score
                    chosen = max(combo[0].split("|"), key=lambda v: held_out_mean(fitted[v]))
                    scores[combo[0]] = scores[chosen]
                    continue
                parts = [standardised(fitted[v]["test"], fitted[v]["calibration"]) for v in combo]
                scores["+".join(combo)] = -np.sum(parts, axis=0)
            for row, score in scores.items():
                pair = (roc_auc_score(y, score), average_precision_score(y, score))
                rows.setdefault(row, {}).setdefault(name, []).append(pair)
    return rows


def set_means(rows: dict, names: list[str]) -> dict:
    """{row: {set: (AUROC, AUPRC) averaged over the seeds}} of `metrics`' rows."""
    return {r: {n: np.mean(rows[r][n], axis=0) for n in names} for r in rows}


def report(mean: dict, names: list[str]) -> None:
    """Per-set AUROC table, then one summary line per row (`mean` from `set_means`)."""
    rows = list(mean)
    print(f"{'set':14s}" + "".join(f"{r:>16s}" for r in rows))
    for n in names:
        print(f"{n:14s}" + "".join(f"{mean[r][n][0]:16.3f}" for r in rows))
    for r in rows:
        auroc = np.mean([mean[r][n][0] for n in names])
        auprc = np.mean([mean[r][n][1] for n in names])
        line = f"{r:24s} AUROC {auroc:.4f} AUPRC {auprc:.4f}"
        if "iforest" in rows:
            wins = sum(mean[r][n][0] >= mean["iforest"][n][0] for n in names)
            line += f" sets >= iforest {wins}/{len(names)}"
        print(line)


def paired_lines(mean: dict, names: list[str], reference: str) -> list[str]:
    """Each row against `reference`, set by set: the mean AUROC difference, the sets it gains
    or loses by more than 0.005, the difference without the two sets that moved most (so two
    swinging sets cannot carry it), and Wilcoxon's signed-rank p over the per-set differences
    (two-sided; the seeds of a set are averaged first, so a set counts once)."""
    from scipy.stats import wilcoxon

    auroc = {r: np.array([mean[r][n][0] for n in names]) for r in mean}
    lines = [f"paired against {reference} (AUROC, per set; p: Wilcoxon signed-rank over sets)"]
    for row in mean:
        if row == reference:
            continue
        diff = auroc[row] - auroc[reference]
        trimmed = diff[np.argsort(np.abs(diff))[:-2]] if len(diff) > 2 else diff
        p_value = wilcoxon(diff).pvalue if np.any(diff != 0) else 1.0
        lines.append(
            f"{row:24s} diff {diff.mean():+.4f} gains {int(np.sum(diff > 0.005)):2d} "
            f"losses {int(np.sum(diff < -0.005)):2d} without the 2 largest moves "
            f"{trimmed.mean():+.4f} p {p_value:.3f}"
        )
    return lines


def write_json(args: argparse.Namespace, views: dict, mean: dict) -> None:
    """The summary rows (mean AUROC and AUPRC over sets, wins against IsolationForest) with the
    command, commit and date, to `args.json` (written to a temporary file, then renamed)."""
    from provenance import command_line, git_commit

    names = args.datasets
    rows = []
    for row, per_set in mean.items():
        auroc = [per_set[n][0] for n in names]
        wins = None
        if "iforest" in mean and row != "iforest":
            wins = int(sum(per_set[n][0] >= mean["iforest"][n][0] for n in names))
        rows.append({
            "protocol": args.protocol, "view": row, "params": views.get(row),
            "mean_auroc": round(float(np.mean(auroc)), 4),
            "mean_auprc": round(float(np.mean([per_set[n][1] for n in names])), 4),
            "wins_vs_iforest": wins, "n_sets": len(names),
        })  # fmt: skip
    payload = {
        "command": command_line(), "commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "seeds": args.seeds, "rows": rows,
    }  # fmt: skip
    path = Path(args.json)
    path.with_suffix(".tmp").write_text(json.dumps(payload, indent=1) + "\n")
    path.with_suffix(".tmp").replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", choices=("unsupervised", "novelty"), default="unsupervised")
    parser.add_argument("--views", required=True, help="JSON: {name: VAEDetector params}")
    parser.add_argument(
        "--combine", default="", help="comma-separated sums and selections, e.g. gauss+t,gauss|t"
    )
    parser.add_argument("--datasets", default="all", help="comma-separated, or 'all'")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache", default=".state/adbench_views")
    parser.add_argument("--reference", default="", help="a row to compare every other with")
    parser.add_argument("--json", default="", help="write the summary rows to this JSON file")
    args = parser.parse_args()
    views = json.loads(args.views)
    combos = [c.split("+") for c in args.combine.split(",") if c]
    unknown = sorted({v for c in combos for part in c for v in part.split("|")} - set(views))
    if unknown:
        raise SystemExit(f"--combine names views not in --views: {unknown}")
    args.datasets, args.seeds = (
        adbench_names(args.datasets),
        [int(s) for s in args.seeds.split(",")],
    )
    tasks = [(name, seed, args.protocol, view, params, args.cache)
             for name in args.datasets for seed in args.seeds
             for view, params in views.items()]  # fmt: skip
    tasks.sort(key=lambda task: task[0] not in (*LARGE, "InternetAds"))  # long ones first
    with get_context("spawn").Pool(args.jobs) as pool:
        list(pool.imap_unordered(fit_view, tasks))
    mean = set_means(metrics(args, views, combos), args.datasets)
    report(mean, args.datasets)
    if args.json:
        write_json(args, views, mean)
    if args.reference:
        if args.reference not in mean:
            raise SystemExit(f"--reference {args.reference!r} is not a view or combination")
        print("\n".join(paired_lines(mean, args.datasets, args.reference)))


if __name__ == "__main__":
    main()

"""Threshold rules side by side: VAEDetector's `contamination` = c against `target_fpr` = q.

At the same level (c = q = 0.05 and 0.10), what does each rule flag on the rows it was fitted on,
on new normal rows and on anomalies? For each ADBench set and seed, two training protocols:

a. novelty: fit on a random 60 % of the normal rows; test on the other 40 % of the normals and
   on every anomaly;
b. contaminated: fit on a stratified 70 % of all rows (anomalies included, labels unused); test
   on the other 30 %.

Per set x protocol x rule x level x seed the script records the share of the fit rows that
`predict` flags, the false-positive rate on the test normal rows (new data) and the recall on the
test anomalies; then mean and sd over seeds, and over sets the mean of |FPR on new normals - q|
and of (share of fit rows flagged - c).

One `VAEDetector(random_state=seed)` (every other parameter at its default) is fitted per set x
protocol x seed. Neither rule changes the model (the splits, the weights' seed and the training
do not read it), so the four thresholds are set on that one fitted model exactly as `fit` sets
them: `contamination` = np.percentile of the scores of all fit rows at 100 c, `target_fpr` =
`anomaly.thresholds.conformal_offset(calibration_scores_, q)`. The script checks that: the base
fit uses `contamination=0.05` and its own `offset_` must equal the derived one, and on the first
seed a second real fit with `target_fpr=0.10` must give the same calibration scores, the same
`offset_` and the same `predict` flags as the derived threshold.

Usage:
    .venv/bin/python benchmarks/threshold_rules.py --out .state/bench/threshold_rules.md
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import DEFAULT_DATA_DIR, base_parser, save_text, set_threads
from provenance import command_line, git_commit

from anomaly.data import load_dataset
from anomaly.detector import VAEDetector
from anomaly.thresholds import conformal_offset

DEFAULT_SETS = "vertebral,breastw,yeast,satimage-2,mnist"
LEVELS = (0.05, 0.10)
RULES = ("contamination", "target_fpr")
PROTOCOLS = ("novelty", "contaminated")
NOVELTY_FIT_SHARE = 0.6  # share of the normal rows fitted on under the novelty protocol
CONTAMINATED_TEST_SHARE = 0.3  # stratified test share under the contaminated protocol
BASE_LEVEL = LEVELS[0]  # the base fit's contamination, checked against the derived offset
CHECK_LEVEL = LEVELS[-1]  # the level of the second, real target_fpr fit on the first seed
METRICS = ("train_flagged", "fpr", "recall")
Run = dict[str, Any]


# --- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = base_parser(__doc__)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated split / model seeds")
    parser.add_argument("--datasets", default=DEFAULT_SETS, help="comma-separated ADBench names")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    parser.add_argument(
        "--json",
        default="docs/results/threshold_rules.json",
        help="headline numbers (JSON) to write; '' to skip",
    )
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.datasets = [s.strip() for s in args.datasets.split(",") if s.strip()]
    return args


# --- splits ------------------------------------------------------------------------------------
def novelty_rows(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, test rows): a random 60 % of the normals; the other normals + all anomalies."""
    rng = np.random.default_rng([seed, 1])
    normals = rng.permutation(np.flatnonzero(y == 0))
    n_fit = int(round(NOVELTY_FIT_SHARE * len(normals)))
    fit = np.sort(normals[:n_fit])
    test = np.sort(np.concatenate([normals[n_fit:], np.flatnonzero(y == 1)]))
    return fit, test


def contaminated_rows(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, test rows): stratified by label, 70 % / 30 % of each class."""
    rng = np.random.default_rng([seed, 2])
    fit, test = [], []
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(CONTAMINATED_TEST_SHARE * len(rows)))
        test.append(rows[:n_test])
        fit.append(rows[n_test:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(test))


SPLITS = {"novelty": novelty_rows, "contaminated": contaminated_rows}


# --- thresholds --------------------------------------------------------------------------------
def derived_offset(detector: VAEDetector, fit_scores: np.ndarray, rule: str, level: float) -> float:
    """The offset `fit` would set with this rule and level, on the same fitted model."""
    if rule == "contamination":
        return float(np.percentile(fit_scores, 100.0 * level))
    return conformal_offset(detector.calibration_scores_, level)


def with_rule(detector: VAEDetector, rule: str, level: float, offset: float) -> VAEDetector:
    """A shallow copy of the fitted detector (shared networks) with this rule's threshold."""
    other = copy.copy(detector)
    if rule == "contamination":
        other.set_params(contamination=level, target_fpr=None)
    else:
        other.set_params(target_fpr=level)
    other.offset_ = offset
    return other


def flagged(detector: VAEDetector, scores: np.ndarray) -> np.ndarray:
    """`predict`'s flags (True = -1) for rows whose `score_samples` are `scores`."""
    return detector.flags(scores)[1]


def check_target_fit(
    X_fit: np.ndarray, seed: int, base: VAEDetector, fit_scores: np.ndarray, flags: np.ndarray
) -> dict:
    """A real `target_fpr` fit must match the threshold derived from the base fit."""
    real = VAEDetector(random_state=seed, target_fpr=CHECK_LEVEL).fit(X_fit)
    same_calibration = np.array_equal(real.calibration_scores_, base.calibration_scores_)
    same_offset = real.offset_ == derived_offset(base, fit_scores, "target_fpr", CHECK_LEVEL)
    same_flags = np.array_equal(real.predict(X_fit) == -1, flags)
    if not (same_calibration and same_offset and same_flags):
        raise AssertionError(
            f"seed {seed}: a real target_fpr={CHECK_LEVEL} fit differs from the derived "
            f"threshold (calibration {same_calibration}, offset {same_offset}, flags {same_flags})"
        )
    return {"checked_target_fit": True}


# --- one set -----------------------------------------------------------------------------------
def run_protocol(X: np.ndarray, y: np.ndarray, protocol: str, seed: int, check: bool) -> Run:
    """Fit once, then every rule and level: shares flagged on fit rows, test normals, anomalies.

    `check`: also fit a real `target_fpr` detector and compare (see the module docstring).
    """
    fit_rows, test_rows = SPLITS[protocol](y, seed)
    X_fit, X_test, y_test = X[fit_rows], X[test_rows], y[test_rows]
    start = time.perf_counter()
    base = VAEDetector(random_state=seed, contamination=BASE_LEVEL).fit(X_fit)
    fit_seconds = time.perf_counter() - start
    fit_scores, test_scores = base.score_samples(X_fit), base.score_samples(X_test)
    base_offset = derived_offset(base, fit_scores, "contamination", BASE_LEVEL)
    if base_offset != base.offset_:
        raise AssertionError(
            f"seed {seed}: derived contamination offset {base_offset!r} != fit's {base.offset_!r}"
        )
    run: Run = {
        "seed": seed,
        "n_fit": len(fit_rows),
        "n_fit_anomalies": int(y[fit_rows].sum()),
        "n_calibration": len(base.calibration_scores_),
        "n_test_normal": int((y_test == 0).sum()),
        "n_test_anomalies": int((y_test == 1).sum()),
        "epochs": len(base.history_),
        "fit_seconds": fit_seconds,
        "results": {},
    }
    for rule in RULES:
        for level in LEVELS:
            offset = derived_offset(base, fit_scores, rule, level)
            detector = with_rule(base, rule, level, offset)
            on_fit, on_test = flagged(detector, fit_scores), flagged(detector, test_scores)
            run["results"][(rule, level)] = {
                "train_flagged": float(on_fit.mean()),
                "fpr": float(on_test[y_test == 0].mean()),
                "recall": float(on_test[y_test == 1].mean()),
            }
            if check and rule == "target_fpr" and level == CHECK_LEVEL:
                run.update(check_target_fit(X_fit, seed, base, fit_scores, on_fit))
    run["seconds"] = time.perf_counter() - start
    return run


def run_dataset(name: str, seeds: list[int]) -> dict:
    """Both protocols and every seed on one set."""
    data = load_dataset(f"adbench/{name}")
    X, y = np.asarray(data.X, dtype=np.float64), np.asarray(data.y).astype(int)
    runs: dict[str, list[Run]] = {p: [] for p in PROTOCOLS}
    for seed in seeds:
        for protocol in PROTOCOLS:
            run = run_protocol(X, y, protocol, seed, check=seed == seeds[0])
            runs[protocol].append(run)
            print(progress_line(name, protocol, run), flush=True)
    return {
        "name": name,
        "rows": len(X),
        "features": X.shape[1],
        "anomaly_rate": float(y.mean()),
        "runs": runs,
    }


def progress_line(name: str, protocol: str, run: Run) -> str:
    """One log line per set, protocol and seed."""
    parts = [
        f"{rule[:4]}@{level:.2f}: fit {r['train_flagged']:.3f} fpr {r['fpr']:.3f} "
        f"rec {r['recall']:.3f}"
        for (rule, level), r in run["results"].items()
    ]
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    return (
        f"[{stamp}] {name} {protocol} seed={run['seed']} ({run['seconds']:.1f}s, "
        f"{run['epochs']} epochs): " + "; ".join(parts)
    )


# --- summary -----------------------------------------------------------------------------------
def summary_rows(results: list[dict]) -> list[dict]:
    """One row per set x protocol x rule x level: mean and sd over seeds of each metric."""
    rows = []
    for dataset in results:
        for protocol in PROTOCOLS:
            runs = dataset["runs"][protocol]
            first = runs[0]
            for rule in RULES:
                for level in LEVELS:
                    row: dict[str, Any] = {
                        "dataset": dataset["name"],
                        "protocol": protocol,
                        "rule": rule,
                        "level": level,
                        "n_seeds": len(runs),
                        "n_fit": first["n_fit"],
                        "n_fit_anomalies": first["n_fit_anomalies"],
                        "n_calibration": first["n_calibration"],
                        "n_test_normal": first["n_test_normal"],
                        "n_test_anomalies": first["n_test_anomalies"],
                        "conformal_rate": conformal_rate(first["n_calibration"], level)
                        if rule == "target_fpr"
                        else None,
                    }
                    for metric in METRICS:
                        values = [r["results"][(rule, level)][metric] for r in runs]
                        row[metric] = float(np.mean(values))
                        row[f"{metric}_sd"] = float(np.std(values, ddof=1)) if len(runs) > 1 else 0
                        row[f"{metric}_per_seed"] = values
                    row["fpr_minus_level"] = row["fpr"] - level
                    row["train_flagged_minus_level"] = row["train_flagged"] - level
                    rows.append(row)
    return rows


def conformal_rate(n_calibration: int, level: float) -> float:
    """k / (n + 1), k = floor(level (n + 1)): the rate at which `target_fpr` flags a new
    normal row (<= level; below it when n is small)."""
    return math.floor(level * (n_calibration + 1) + 1e-9) / (n_calibration + 1)


def over_sets(rows: list[dict]) -> list[dict]:
    """Per protocol x rule x level, over sets (each set's seed means): mean |FPR - q|, mean
    (FPR - q), max FPR, mean (fit rows flagged - c), mean recall; and how many set x seed runs
    had FPR above the level."""
    out = []
    for protocol in PROTOCOLS:
        for rule in RULES:
            for level in LEVELS:
                chosen = [
                    r
                    for r in rows
                    if r["protocol"] == protocol and r["rule"] == rule and r["level"] == level
                ]
                per_seed = [v for r in chosen for v in r["fpr_per_seed"]]
                out.append(
                    {
                        "protocol": protocol,
                        "rule": rule,
                        "level": level,
                        "n_sets": len(chosen),
                        "abs_fpr_minus_level": float(
                            np.mean([abs(r["fpr"] - level) for r in chosen])
                        ),
                        "fpr_minus_level": float(np.mean([r["fpr"] - level for r in chosen])),
                        "max_set_fpr": float(max(r["fpr"] for r in chosen)),
                        "runs_fpr_above_level": int(sum(v > level for v in per_seed)),
                        "runs": len(per_seed),
                        "train_flagged_minus_level": float(
                            np.mean([r["train_flagged"] - level for r in chosen])
                        ),
                        "recall": float(np.mean([r["recall"] for r in chosen])),
                    }
                )
    return out


# --- provenance --------------------------------------------------------------------------------
def machine() -> str:
    """CPU count, architecture and (on Linux) the CPU model."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = ", " + line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {platform.machine()}{model}"


# --- markdown ----------------------------------------------------------------------------------
def pm(mean: float, sd: float) -> str:
    """'mean ± sd' with three decimals."""
    return f"{mean:.3f} ± {sd:.3f}"


def header_lines(args: argparse.Namespace, wall: float) -> list[str]:
    """Command line, commit, date, versions, threads, machine and the run's wall time."""
    return [
        "## Threshold rules: contamination vs target_fpr",
        "",
        f"Command: `{args.command}`",
        "",
        f"- date: {args.date}",
        f"- code (git, at start of the run): {args.commit}",
        f"- torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}",
        f"- torch threads: {torch.get_num_threads()}; machine: {args.machine}",
        f"- sets: {', '.join(args.datasets)}; seeds: {', '.join(map(str, args.seeds))}; "
        f"total wall time: {wall / 60:.1f} min",
        "",
    ]


def protocol_lines(results: list[dict]) -> list[str]:
    """How the data were split and what was fitted, and the checks that passed."""
    runs = [r for d in results for p in PROTOCOLS for r in d["runs"][p]]
    checked = sum(bool(r.get("checked_target_fit")) for r in runs)
    lines = [
        "Detector: `VAEDetector(random_state=seed)`, every other parameter at its default "
        "(IWAE K=100, up to 100 epochs with early stopping at patience 10, "
        "validation_fraction 0.1, calibration_fraction 0.2). One model per set x protocol x "
        "seed; the four thresholds (contamination c and target_fpr q at 0.05 and 0.10) are "
        "set on it as `fit` sets them, and the script checks that against real fits (the base "
        f"fit's own contamination={BASE_LEVEL} offset on every run, a second real "
        f"target_fpr={CHECK_LEVEL} fit on the first seed: same calibration scores, offset and "
        f"flags). Checks passed: {len(runs)} of {len(runs)} base fits, {checked} of {checked} "
        "target_fpr fits.",
        "",
        "Protocols: **novelty** fits on a random 60% of the normal rows and tests on the other "
        "normals plus all anomalies; **contaminated** fits on a stratified 70% of all rows "
        "(anomalies included, labels unused) and tests on the other 30%. `fit rows flagged` = "
        "share of the rows given to `fit` (training, validation and calibration rows) that "
        "`predict` flags; `FPR` = share of the test normal rows flagged (new data); `recall` = "
        "share of the test anomalies flagged. Mean ± sd over seeds. `conformal rate` = k/(n+1), "
        "k = floor(q (n+1)), n calibration rows: the probability that target_fpr flags a new "
        "normal row (<= q; below it when n is small).",
        "",
        "| set | rows × features | anomaly rate | novelty: fit / calibration / test normal / "
        "test anomalies | contaminated: fit (anomalies) / calibration / test normal / test "
        "anomalies | epochs per seed (novelty; contaminated) |",
        "|---|---|---|---|---|---|",
    ]
    for d in results:
        nov, con = d["runs"]["novelty"][0], d["runs"]["contaminated"][0]
        epochs = "; ".join(
            ",".join(str(r["epochs"]) for r in d["runs"][p]) for p in ("novelty", "contaminated")
        )
        lines.append(
            f"| {d['name']} | {d['rows']} × {d['features']} | {d['anomaly_rate']:.3f} | "
            f"{nov['n_fit']} / {nov['n_calibration']} / {nov['n_test_normal']} / "
            f"{nov['n_test_anomalies']} | {con['n_fit']} ({con['n_fit_anomalies']}) / "
            f"{con['n_calibration']} / {con['n_test_normal']} / {con['n_test_anomalies']} | "
            f"{epochs} |"
        )
    return [*lines, ""]


def summary_table(summary: list[dict]) -> list[str]:
    """The means over sets: the headline."""
    lines = [
        "| protocol | rule | level | mean FPR − level | mean abs(FPR − level) | max set FPR | "
        "runs with FPR > level | mean (fit rows flagged − level) | mean recall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['protocol']} | {s['rule']} | {s['level']:.2f} | {s['fpr_minus_level']:+.3f} | "
            f"{s['abs_fpr_minus_level']:.3f} | {s['max_set_fpr']:.3f} | "
            f"{s['runs_fpr_above_level']} / {s['runs']} | "
            f"{s['train_flagged_minus_level']:+.3f} | {s['recall']:.3f} |"
        )
    return [*lines, ""]


def detail_table(rows: list[dict], protocol: str) -> list[str]:
    """Per set, rule and level under one protocol."""
    lines = [
        "| set | rule | level | fit rows flagged | FPR on new normals | conformal rate "
        "k/(n+1) | recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["protocol"] != protocol:
            continue
        rate = "-" if r["conformal_rate"] is None else f"{r['conformal_rate']:.3f}"
        lines.append(
            f"| {r['dataset']} | {r['rule']} | {r['level']:.2f} | "
            f"{pm(r['train_flagged'], r['train_flagged_sd'])} | {pm(r['fpr'], r['fpr_sd'])} | "
            f"{rate} | {pm(r['recall'], r['recall_sd'])} |"
        )
    return [*lines, ""]


def markdown(args: argparse.Namespace, results: list[dict], wall: float) -> str:
    """The whole markdown section."""
    rows = summary_rows(results)
    lines = header_lines(args, wall) + protocol_lines(results)
    lines += ["### Mean over sets (each set: mean over seeds)", ""]
    lines += summary_table(over_sets(rows))
    for protocol in PROTOCOLS:
        lines += [f"### Per set: {protocol} protocol (mean ± sd over seeds)", ""]
        lines += detail_table(rows, protocol)
    return "\n".join(lines)


def results_json(args: argparse.Namespace, results: list[dict], wall: float) -> dict:
    """The headline numbers: provenance, one row per set x protocol x rule x level, means."""
    rows = summary_rows(results)
    return {
        "command": args.command,
        "commit": args.commit,
        "date": args.date,
        "torch_threads": torch.get_num_threads(),
        "machine": args.machine,
        "wall_seconds": round(wall, 1),
        "detector": "VAEDetector(random_state=seed), other parameters at their defaults",
        "seeds": args.seeds,
        "rows": rows,
        "over_sets": over_sets(rows),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the markdown, write it to --out and the JSON to --json."""
    os.environ.setdefault("GENAD_DATA_DIR", DEFAULT_DATA_DIR)
    args = parse_args(argv)
    args.command = command_line()
    args.commit = git_commit()  # the code imported now is the code measured
    args.date = datetime.datetime.now().isoformat(timespec="seconds")
    args.machine = machine()
    set_threads(
        args.threads,
        f"{len(args.datasets)} sets x {len(args.seeds)} seeds x {len(PROTOCOLS)} protocols",
    )
    start = time.perf_counter()
    results = [run_dataset(name, args.seeds) for name in args.datasets]
    wall = time.perf_counter() - start
    text = markdown(args, results, wall)
    print(text, flush=True)
    if args.out is not None:
        save_text(args.out, text + "\n")
    if args.json:
        save_text(args.json, json.dumps(results_json(args, results, wall), indent=1) + "\n")


if __name__ == "__main__":
    main()

"""The report of benchmarks/adbench.py: per-protocol markdown, the JSON rows and the goals.

Not a benchmark itself; adbench.py imports it as `adbench_report` (benchmarks run as scripts,
so their folder is on `sys.path`). Input: the unit records of `adbench.run_unit`, each a dict
with protocol, dataset, seed, method, sizes and result (auroc, auprc, seconds, ... or error).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

LABELS = {
    "genad": "genad VAEDetector",
    "iforest": "IsolationForest",
    "ecod": "ECOD",
    "pyod_vae": "PyOD VAE",
    "pyod_ae": "PyOD AutoEncoder",
}
SPLITS = {
    "novelty": "`novelty_split(X, y, test_fraction=0.3, seed=seed)`: the detectors train on the "
    "normal rows of the training part only",
    "unsupervised": "`unsupervised_split(X, y, test_fraction=0.3, seed=seed)`: the detectors "
    "train on the whole training part, anomalies included (unlabelled); test rows as novelty's",
}
GOAL_SETS = 25
Summary = dict[str, Any]


def atomic_write(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, target)


# --- numbers -----------------------------------------------------------------------------------
def summarise(records: list[dict]) -> Summary:
    """One (protocol, set, method): mean / std over seeds of AUROC and AUPRC, mean seconds,
    errors and (genad) diagnostics."""
    results = [r["result"] for r in sorted(records, key=lambda r: r["seed"])]
    good = [r for r in results if "error" not in r]
    summary: Summary = {"n_ok": len(good), "n": len(results)}
    summary["errors"] = sorted({r["error"] for r in results if "error" in r})
    summary["seconds"] = float(np.mean([r["seconds"] for r in (good or results)]))
    for key in ("auroc", "auprc"):
        values = [r[key] for r in good]
        summary[key] = float(np.mean(values)) if values else None
        summary[f"{key}_std"] = float(np.std(values)) if values else None
    if good and "active_units" in good[0]:
        summary["active"] = ",".join(str(r["active_units"]) for r in good)
        summary["latent"] = good[0]["latent_dim"]
        summary["epochs"] = ",".join(str(r["epochs"]) for r in good)
    return summary


def tables(records: list[dict]) -> dict[str, dict[str, dict[str, Summary]]]:
    """protocol -> set -> method -> summary."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["protocol"], record["dataset"], record["method"]), []).append(
            record
        )
    out: dict[str, dict[str, dict[str, Summary]]] = {}
    for (protocol, dataset, method), group in groups.items():
        out.setdefault(protocol, {}).setdefault(dataset, {})[method] = summarise(group)
    return out


def mean_or_nan(values: list[float]) -> float:
    """The mean, or NaN for no values."""
    return float(np.mean(values)) if values else float("nan")


def method_stats(table: dict[str, dict[str, Summary]], method: str) -> dict[str, Any]:
    """Over the sets of one protocol: mean AUROC / AUPRC, wins vs IsolationForest (AUROC >=, per
    set, means over seeds), median fit + score seconds and the mean seed spread of AUROC."""
    rows = [sets[method] for sets in table.values() if method in sets]
    ok = [r for r in rows if r["auroc"] is not None]
    pairs = [
        (s[method]["auroc"], s["iforest"]["auroc"])
        for s in table.values()
        if method in s
        and "iforest" in s
        and None not in (s[method]["auroc"], s["iforest"]["auroc"])
    ]
    seconds = [r["seconds"] for r in rows]
    return {
        "mean_auroc": mean_or_nan([r["auroc"] for r in ok]),
        "mean_auprc": mean_or_nan([r["auprc"] for r in ok]),
        "wins_vs_iforest": None if method == "iforest" else sum(a >= b for a, b in pairs),
        "compared_sets": len(pairs),
        "n_sets": len(ok),
        "median_fit_score_s": float(np.median(seconds)) if seconds else float("nan"),
        "seed_spread_auroc": mean_or_nan([r["auroc_std"] for r in ok]),
    }


def all_stats(table: dict[str, dict[str, Summary]], methods: list[str]) -> dict[str, dict]:
    """`method_stats` of every method."""
    return {method: method_stats(table, method) for method in methods}


def goals(protocol: str, stats: dict[str, dict]) -> list[tuple[str, str, bool]]:
    """(goal, measured, met) for the protocol's targets; empty without genad and iforest."""
    if "genad" not in stats or "iforest" not in stats:
        return []
    genad, forest = stats["genad"], stats["iforest"]
    seconds = genad["median_fit_score_s"]
    speed = ("median genad fit+score seconds <= 20", f"{seconds:.1f} s", seconds <= 20)
    if protocol == "novelty":
        auroc = genad["mean_auroc"]
        return [("genad mean AUROC >= 0.830", f"{auroc:.3f}", auroc >= 0.830), speed]
    target = forest["mean_auroc"] + 0.03
    wins = genad["wins_vs_iforest"]
    return [
        (
            "genad mean AUROC >= IsolationForest's + 0.03",
            f"{genad['mean_auroc']:.3f} vs {target:.3f}",
            genad["mean_auroc"] >= target,
        ),
        (
            f"genad wins (AUROC >=) >= 16 of {GOAL_SETS} sets",
            f"{wins} of {genad['compared_sets']}",
            wins >= 16,
        ),
        (
            "genad mean AUPRC > IsolationForest's",
            f"{genad['mean_auprc']:.3f} vs {forest['mean_auprc']:.3f}",
            genad["mean_auprc"] > forest["mean_auprc"],
        ),
        speed,
    ]


# --- markdown ----------------------------------------------------------------------------------
def short(name: str) -> str:
    """'adbench/breastw' -> 'breastw'."""
    return name.split("/", 1)[1]


def cell(summary: Summary | None, key: str) -> str:
    """'mean ± std' of one metric, marked when some seeds failed, or the error text."""
    if summary is None:
        return "-"
    if summary[key] is None:
        return "error: " + summary["errors"][0][:90].replace("|", "\\|")
    text = f"{summary[key]:.3f} ± {summary[key + '_std']:.3f}"
    if summary["n_ok"] < summary["n"]:
        text += f" ({summary['n_ok']}/{summary['n']} seeds)"
    return text


def package_version(name: str) -> str:
    """The installed version of `name`, or "not installed"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def header_lines(args: argparse.Namespace, records: list[dict], wall: float) -> list[str]:
    """Command line, date, code, versions, threads, seeds, cache use and the run's wall time."""
    import sklearn
    import torch

    from_cache = sum(bool(r.get("cached")) for r in records)
    return [
        "## ADBench: " + " vs ".join(LABELS[m] for m in args.methods),
        "",
        f"Command: `{args.command}`",
        "",
        f"- date: {args.date}; code (git, at start of the run): {args.commit}",
        f"- torch {torch.__version__}, scikit-learn {sklearn.__version__}, pyod "
        f"{package_version('pyod')}, numpy {np.__version__}, Python {platform.python_version()}",
        f"- torch threads per process: {args.threads}; worker processes (--jobs): {args.jobs}; "
        f"machine: {os.cpu_count()} CPUs, {platform.machine()}",
        f"- seeds: {', '.join(map(str, args.seeds))}; sets: {len(args.datasets)}; protocols: "
        f"{', '.join(args.protocols)}; wall time: {wall / 60:.1f} min",
        f"- genad: `VAEDetector(random_state=seed, **{args.genad_params!r})`; cache tag "
        f"`{args.cache_tag}`",
        f"- units (protocol × set × seed × method): {len(records)}, {from_cache} from the cache "
        f"({'off' if args.no_cache else args.cache}); a cached unit's seconds are those of the "
        "run that made it",
        "",
    ]


def subsample_lines(args: argparse.Namespace, records: list[dict], protocol: str) -> list[str]:
    """Which sets were subsampled under `protocol` (first seed), from how many rows to how many."""
    lines, seen = [], set()
    for record in sorted(records, key=lambda r: (r["dataset"].lower(), r["seed"])):
        sizes = record["sizes"]
        if record["protocol"] != protocol or record["dataset"] in seen:
            continue
        seen.add(record["dataset"])
        if sizes["n_train"] < sizes["full_train"] or sizes["n_test"] < sizes["full_test"]:
            lines.append(
                f"- {short(record['dataset'])}: train {sizes['full_train']} -> "
                f"{sizes['n_train']} rows ({sizes['n_train_anomalies']} anomalies), test "
                f"{sizes['full_test']} -> {sizes['n_test']} rows ({sizes['n_anomalies']} anomalies)"
            )
    if not lines:
        return ["No set was subsampled.", ""]
    intro = (
        f"Subsampled (random, stratified by label, per seed; --max-train-rows "
        f"{args.max_train_rows}, --max-test-rows {args.max_test_rows}); the other sets in full:"
    )
    return [intro, "", *lines, ""]


def metric_table(table: dict, methods: list[str], key: str, stats: dict) -> list[str]:
    """Per-set `key` (auroc / auprc) of every method, then the mean over sets."""
    lines = [
        "| set | " + " | ".join(LABELS[m] for m in methods) + " |",
        "|---" * (1 + len(methods)) + "|",
    ]
    for name in sorted(table, key=str.lower):
        cells = [cell(table[name].get(m), key) for m in methods]
        lines.append(f"| {short(name)} | " + " | ".join(cells) + " |")
    means = [f"**{stats[m]['mean_' + key]:.3f}**" for m in methods]
    return [*lines, "| **mean over sets** | " + " | ".join(means) + " |", ""]


def summary_table(stats: dict[str, dict]) -> list[str]:
    """One row per method: the numbers of the JSON rows."""
    lines = [
        "| method | mean AUROC | mean AUPRC | AUROC >= IsolationForest (sets) | "
        "median fit+score s | seed spread (AUROC std, mean over sets) | sets |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, s in stats.items():
        wins = "-" if s["wins_vs_iforest"] is None else f"{s['wins_vs_iforest']} of "
        wins += "" if s["wins_vs_iforest"] is None else str(s["compared_sets"])
        lines.append(
            f"| {LABELS[method]} | {s['mean_auroc']:.3f} | {s['mean_auprc']:.3f} | {wins} | "
            f"{s['median_fit_score_s']:.2f} | {s['seed_spread_auroc']:.3f} | {s['n_sets']} |"
        )
    return [*lines, ""]


def time_table(table: dict, methods: list[str], stats: dict) -> list[str]:
    """Per-set fit + score seconds of each method and genad's diagnostics."""
    lines = [
        "| set | "
        + " | ".join(f"{LABELS[m]} s" for m in methods)
        + " | genad active units per seed, of latent dim | genad epochs per seed |",
        "|---" * (3 + len(methods)) + "|",
    ]
    for name in sorted(table, key=str.lower):
        row, genad = table[name], table[name].get("genad", {})
        secs = " | ".join(f"{row[m]['seconds']:.2f}" if m in row else "-" for m in methods)
        active = f"{genad.get('active', '-')} of {genad.get('latent', '-')}"
        lines.append(f"| {short(name)} | {secs} | {active} | {genad.get('epochs', '-')} |")
    medians = " | ".join(f"**{stats[m]['median_fit_score_s']:.2f}**" for m in methods)
    return [*lines, f"| **median over sets** | {medians} | | |", ""]


def verdict_lines(protocol: str, table: dict, stats: dict[str, dict]) -> list[str]:
    """The goals' PASS / FAIL, genad's time ratio to IsolationForest and the errors."""
    lines = []
    if "genad" in stats and "iforest" in stats:
        ratio = stats["genad"]["median_fit_score_s"] / stats["iforest"]["median_fit_score_s"]
        lines += [f"genad median fit+score seconds / IsolationForest's: {ratio:.1f}×", ""]
    checks = goals(protocol, stats)
    if checks:
        lines += [f"Goals ({protocol}; the goals are defined on all {GOAL_SETS} sets):", ""]
        lines += [f"- {g}: {v} -> **{'PASS' if ok else 'FAIL'}**" for g, v, ok in checks]
        lines.append("")
    errors = [
        f"- {short(name)} / {LABELS[m]}: `{e}`"
        for name in sorted(table, key=str.lower)
        for m, s in table[name].items()
        for e in s["errors"]
    ]
    return lines + (["Errors (full text):", "", *errors, ""] if errors else ["No errors.", ""])


def protocol_section(args: argparse.Namespace, records: list[dict], protocol: str) -> list[str]:
    """The markdown of one protocol."""
    table = tables(records).get(protocol, {})
    stats = all_stats(table, args.methods)
    lines = [f"### Protocol: {protocol}", "", f"Per seed, {SPLITS[protocol]}.", ""]
    lines += subsample_lines(args, records, protocol)
    lines += ["Summary (means over sets of the per-set means over seeds):", ""]
    lines += summary_table(stats)
    lines += verdict_lines(protocol, table, stats)
    for key, title in (("auroc", "AUROC"), ("auprc", "AUPRC (average precision)")):
        lines += [f"#### {protocol}: {title}, mean ± std over seeds", ""]
        lines += metric_table(table, args.methods, key, stats)
    lines += [f"#### {protocol}: fit + score seconds (mean over seeds), genad diagnostics", ""]
    return lines + time_table(table, args.methods, stats)


def markdown(args: argparse.Namespace, records: list[dict], wall: float) -> str:
    """The whole markdown report: header, then one section per protocol."""
    lines = header_lines(args, records, wall)
    for protocol in args.protocols:
        lines += protocol_section(args, records, protocol)
    return "\n".join(lines) + "\n"


# --- JSON --------------------------------------------------------------------------------------
def finite(value: Any) -> Any:
    """NaN -> None (JSON has no NaN); floats rounded to 4 digits."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


def json_rows(args: argparse.Namespace, records: list[dict]) -> list[dict]:
    """One row per protocol and detector."""
    rows = []
    for protocol in args.protocols:
        stats = all_stats(tables(records).get(protocol, {}), args.methods)
        for method, s in stats.items():
            row = {"protocol": protocol, "detector": method}
            row.update({k: finite(v) for k, v in s.items()})
            if method == "genad":
                row["params"] = args.genad_params
            rows.append(row)
    return rows


def per_set_rows(args: argparse.Namespace, records: list[dict]) -> list[dict]:
    """One row per protocol, set and detector: AUROC / AUPRC mean and std, seconds."""
    keys = ("auroc", "auroc_std", "auprc", "auprc_std", "seconds", "n_ok", "n")
    return [
        {"protocol": p, "dataset": short(name), "detector": m} | {k: finite(s[k]) for k in keys}
        for p, table in tables(records).items()
        for name in sorted(table, key=str.lower)
        for m in args.methods
        if (s := table[name].get(m)) is not None
    ]


def results_json(args: argparse.Namespace, records: list[dict], wall: float) -> dict:
    """Provenance, the headline rows, the goals and the per-set numbers."""
    checks = {
        p: [
            {"goal": g, "measured": v, "met": ok}
            for g, v, ok in goals(p, all_stats(tables(records).get(p, {}), args.methods))
        ]
        for p in args.protocols
    }
    return {
        "command": args.command,
        "commit": args.commit,
        "date": args.date,
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
        "torch_threads": args.threads,
        "jobs": args.jobs,
        "wall_seconds": round(wall, 1),
        "seeds": args.seeds,
        "max_train_rows": args.max_train_rows,
        "max_test_rows": args.max_test_rows,
        "genad_params": args.genad_params,
        "cache_tag": args.cache_tag,
        "units_from_cache": sum(bool(r.get("cached")) for r in records),
        "rows": json_rows(args, records),
        "goals": checks,
        "per_set": per_set_rows(args, records),
    }

"""Tables and JSON rows of `benchmarks/gan_scarce_classifier.py` (issue 19): accuracy per size
and method, (c)'s choice of (m, w), and the diagnostic of every (m, w) on the test split."""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np
from bench_common import save_text
from gan_common import mean_sd
from provenance import command_line, git_commit

METHODS = ("real", "classic", "classic+gan")
FILTERED = "classic+gan_filtered"  # (d), run with --filter-keep < 1


def summary_rows(results: dict) -> list[dict]:
    """gan_augmentation.json's rows for the images: accuracy per size and method."""
    rows = []
    for per_class, runs in results.items():
        for method in methods_run(runs):
            values = [run[method] for run in runs]
            rows.append({"data": "fashion-mnist", "per_class": per_class, "method": method,
                         "metric": "accuracy", "mean": float(np.mean(values)),
                         "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                         "seeds": len(values)})  # fmt: skip
    return rows


def methods_run(runs: list[dict]) -> tuple[str, ...]:
    """(a), (b), (c), and (d) where `--filter-keep` ran it."""
    return METHODS + ((FILTERED,) if FILTERED in runs[0] else ())


def write_rows(rows: list[dict], path: Path, grid: list[dict]) -> None:
    """Merge the image rows into `path` (gan_augmentation.json's form; tabular rows kept),
    with (c) at every (m, w) on the test split under "grid" (a diagnostic)."""
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    kept = [row for row in old if row["metric"] != "accuracy"]
    payload = {"command": command_line(), "commit": git_commit(),
               "date": datetime.date.today().isoformat(), "rows": rows + kept,
               "grid": grid}  # fmt: skip
    save_text(path, json.dumps(payload, indent=2) + "\n")


def grid_rows(results: dict) -> list[dict]:
    """Per size and (m, w): (c)'s test accuracy and its gain over (b), mean and sd over seeds,
    the gain per seed, and how many seeds' validation split chose it."""
    rows = []
    for per_class, runs in results.items():
        chosen = [(run["choice"]["count"], run["choice"]["weight"]) for run in runs]
        for index, point in enumerate(runs[0]["choice"]["grid"]):
            tests = np.array([run["choice"]["grid"][index]["test"] for run in runs])
            gains = tests - np.array([run["classic"] for run in runs])
            rows.append({"per_class": per_class, "count": point["count"],
                         "weight": point["weight"], "accuracy": float(tests.mean()),
                         "gain_over_classic": float(gains.mean()),
                         "gain_sd": float(gains.std(ddof=1)) if len(runs) > 1 else None,
                         "per_seed_gain": [float(g) for g in gains],
                         "chosen": chosen.count((point["count"], point["weight"])),
                         "seeds": len(runs)})  # fmt: skip
    return rows


def report(args: argparse.Namespace, results: dict, wall: float) -> str:
    lines = [
        "## Scarce labels: classic augmentation vs conditional-GAN samples (issue 19)",
        "",
        f"Command: `{command_line()}` (commit {git_commit()}, "
        f"{datetime.date.today().isoformat()}; {wall / 60:.1f} min; torch threads: "
        f"{args.threads}; seeds {args.seeds}; {gan_note(args, results)}; classifiers "
        f"{args.classifier_steps} steps; "
        f"classic augmentation of the GAN's samples: {args.synthetic_augment}; "
        f"label smoothing of the GAN's samples: {args.synthetic_label_smoothing:g}; "
        f"w in {args.weights}, "
        f"m in {args.counts} per class chosen on validation).",
        "",
        "Test accuracy (10,000 images), mean ± sd over seeds; gain = (c) - (b), paired:",
        "",
        "| images per class | (a) real | (b) classic | (c) classic + GAN | gain (c) - (b) | "
        "(c)'s choices (m, w) |",
        "|---|---|---|---|---|---|",
    ]
    filtered = []
    for per_class, runs in results.items():
        cells = [mean_sd([r[m] * 100 for r in runs]) for m in METHODS]
        gain = gain_over_classic(runs, "classic+gan")
        lines.append(f"| {per_class} | " + " | ".join(cells) + f" | {gain} | {choices(runs)} |")
        if FILTERED in runs[0]:
            cell, gain = (
                mean_sd([r[FILTERED] * 100 for r in runs]),
                gain_over_classic(runs, FILTERED),
            )
            filtered.append(f"| {per_class} | {cell} | {gain} | {choices(runs, '_filtered')} |")
    if filtered:
        lines += [
            "",
            f"(d) the GAN's samples filtered by classifier (b), keeping {args.filter_keep:g} of "
            "them per class:",
            "",
            "| images per class | (d) classic + filtered GAN | gain (d) - (b) | (d)'s choices |",
            "|---|---|---|---|",
            *filtered,
        ]
    return "\n".join(lines + grid_table(results)) + "\n"


def grid_table(results: dict) -> list[str]:
    """Every (m, w) of (c) on the test split, mean over seeds: what a perfect choice would
    reach, against what the validation split chose (a diagnostic; the test never picks)."""
    lines = ["", "(c) at every (m, w), test accuracy, mean over seeds (diagnostic):", "",
             "| images per class | m | w | (c) at (m, w) | gain over (b) | chosen on validation |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for row in grid_rows(results):
        sd = "" if row["gain_sd"] is None else f" ± {row['gain_sd'] * 100:.2f}"
        lines.append(f"| {row['per_class']} | {row['count']} | {row['weight']:g} | "
                     f"{row['accuracy'] * 100:.2f} | {row['gain_over_classic'] * 100:+.2f}{sd} | "
                     f"{row['chosen']} of {row['seeds']} |")  # fmt: skip
    return lines


def gan_note(args: argparse.Namespace, results: dict) -> str:
    """The GAN's settings, or with --reuse-samples the earlier runs' samples that were used."""
    if args.reuse_samples:
        sources = [run["samples_from"] for runs in results.values() for run in runs]
        return "GAN samples reused from earlier runs (" + "; ".join(sources) + ")"
    decay = "constant" if args.gan_lr_decay is None else f"decayed from {args.gan_lr_decay:g}"
    return (f"GAN {args.gan_steps} G steps with {args.gan_augment}, EMA {args.gan_ema:g}, "
            f"lr {args.gan_lr:g} {decay}")  # fmt: skip


def gain_over_classic(runs: list[dict], method: str) -> str:
    """`method`'s accuracy minus (b)'s, in points, mean ± sd over the paired seeds."""
    return mean_sd([(r[method] - r["classic"]) * 100 for r in runs], signed=True)


def choices(runs: list[dict], suffix: str = "") -> str:
    """The (m, w) that validation chose, per seed."""
    picked = [r["choice" + suffix] for r in runs]
    return ", ".join(f"({c['count']}, {c['weight']:g})" for c in picked)

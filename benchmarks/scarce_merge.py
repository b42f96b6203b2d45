"""Merge runs of `benchmarks/gan_scarce_classifier.py` made a few seeds at a time (one process
per seed, each with its own GENAD_SCARCE_WORK) into one results file and one table.

Each run's log holds one line per (size, seed), "[time] N/class seed S: {...}", with that seed's
accuracies, and the label smoothing of the GAN's samples it ran with (in its first line, or
in its report for logs written before that line named it; a log cut short before its report
takes the value after a colon: `run.log:0.1`). Runs are grouped by (images per class,
smoothing); (a) and (b) use no GAN samples, so a seed that appears in several groups must
read the same (a) and (b) in each (checked). Output: gan_augmentation.json's rows with the
per-seed values, the paired gains and every (m, w) on the test split ("grid", a diagnostic).

Usage:
    .venv/bin/python benchmarks/scarce_merge.py .state/bench/sc2400_ls1_*.log \
        .state/bench/sc2400_ls0_*.log --json docs/results/gan_augmentation_label_smoothing.json
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import re
from pathlib import Path

import numpy as np
from bench_common import save_text
from provenance import command_line, git_commit
from scarce_report import grid_rows

SEED_LINE = re.compile(r"\] (\d+)/class seed (\d+): (\{.*\})\s*$")
SMOOTHING = re.compile(r"label smoothing of the GAN's samples: ([0-9.eE+-]+)")
COMMAND = re.compile(r"^Command: `(.+?)`", re.MULTILINE)


def read_log(spec: str) -> tuple[float, list[tuple[int, int, dict]], str | None]:
    """(smoothing, [(images per class, seed, that seed's results)], the command its report
    names or None for a run cut short before its report) of one log `spec`."""
    path, _, given = spec.partition(":")
    text = Path(path).read_text(errors="replace")
    found = SMOOTHING.search(text)
    if not (given or found):
        raise SystemExit(f"{path}: no label smoothing in the log; name it as {path}:VALUE")
    smoothing = float(given or found.group(1))
    runs = [
        (int(match[1]), int(match[2]), ast.literal_eval(match[3]))
        for match in map(SEED_LINE.search, text.splitlines())
        if match
    ]
    if not runs:
        raise SystemExit(f"{path}: no '<N>/class seed <S>: {{...}}' line (did the run start?)")
    command = COMMAND.search(text)
    return smoothing, runs, command.group(1) if command else None


def collect(specs: list[str]) -> tuple[dict[tuple[int, float], dict[int, dict]], list[dict]]:
    """({(images per class, smoothing): {seed: results}}, [{log, command}]); SystemExit on a
    repeated seed."""
    groups: dict[tuple[int, float], dict[int, dict]] = {}
    sources = []
    for spec in specs:
        smoothing, runs, command = read_log(spec)
        sources.append({"log": spec, "command": command})
        for per_class, seed, result in runs:
            group = groups.setdefault((per_class, smoothing), {})
            if seed in group:
                raise SystemExit(
                    f"{spec}: {per_class}/class seed {seed} at smoothing {smoothing:g} "
                    "is in two logs; pass one of them"
                )
            group[seed] = result
    return groups, sources


def paired_baselines(groups: dict) -> dict[int, dict[int, dict]]:
    """{images per class: {seed: {"real", "classic"}}}; SystemExit when two runs of one seed
    disagree on (a) or (b), which no GAN setting touches."""
    baselines: dict[int, dict[int, dict]] = {}
    for (per_class, _), runs in sorted(groups.items()):
        for seed, result in runs.items():
            pair = {"real": result["real"], "classic": result["classic"]}
            known = baselines.setdefault(per_class, {}).setdefault(seed, pair)
            if not all(np.isclose(known[k], pair[k], rtol=0, atol=1e-9) for k in pair):
                raise SystemExit(
                    f"{per_class}/class seed {seed}: (a), (b) differ between runs "
                    f"({known} vs {pair}): not the same split or classifier settings"
                )
    return baselines


def row(per_class: int, method: str, smoothing: float | None, values: dict[int, float],
        choices: list | None = None) -> dict:  # fmt: skip
    """One result row: mean, sample sd and the per-seed values (seeds in order)."""
    seeds = sorted(values)
    per_seed = [float(values[s]) for s in seeds]
    return {"data": "fashion-mnist", "per_class": per_class, "method": method,
            "metric": "accuracy", "synthetic_label_smoothing": smoothing,
            "mean": float(np.mean(per_seed)),
            "sd": float(np.std(per_seed, ddof=1)) if len(seeds) > 1 else None,
            "seeds": len(seeds), "seed_ids": seeds, "per_seed": per_seed,
            "choices": choices}  # fmt: skip


def result_rows(groups: dict, baselines: dict) -> list[dict]:
    """(a) and (b) per size over every seed seen; (c) and its paired gain per group."""
    rows = []
    for per_class, seeds in sorted(baselines.items()):
        for method in ("real", "classic"):
            rows.append(row(per_class, method, None, {s: r[method] for s, r in seeds.items()}))
    for (per_class, smoothing), runs in sorted(groups.items()):
        order = sorted(runs)
        choices = [[runs[s]["choice"]["count"], runs[s]["choice"]["weight"]] for s in order]
        rows.append(row(per_class, "classic+gan", smoothing,
                        {s: runs[s]["classic+gan"] for s in order}, choices))  # fmt: skip
        gains = {s: runs[s]["classic+gan"] - runs[s]["classic"] for s in order}
        rows.append(row(per_class, "gain classic+gan - classic", smoothing, gains))
    return rows


def grid(groups: dict) -> list[dict]:
    """Per group and (m, w): `grid_rows`' row (test accuracy, paired gain over (b) per seed,
    how often validation chose it) with the group's smoothing."""
    return [
        {**point, "synthetic_label_smoothing": smoothing}
        for (per_class, smoothing), runs in sorted(groups.items())
        for point in grid_rows({per_class: [runs[seed] for seed in sorted(runs)]})
    ]


def table(rows: list[dict]) -> str:
    """The gains as a markdown table, in points."""
    lines = ["| images per class | GAN targets smoothed by | seeds | (c) | gain (c) - (b) | "
             "per seed |", "|---|---|---|---|---|---|"]  # fmt: skip
    accuracy = {(r["per_class"], r["synthetic_label_smoothing"]): r for r in rows
                if r["method"] == "classic+gan"}  # fmt: skip
    for r in rows:
        if not r["method"].startswith("gain"):
            continue
        c = accuracy[(r["per_class"], r["synthetic_label_smoothing"])]
        sd = "" if r["sd"] is None else f" ± {r['sd'] * 100:.2f}"
        seeds = ", ".join(map(str, r["seed_ids"]))
        per_seed = ", ".join(f"{g * 100:+.2f}" for g in r["per_seed"])
        gain = f"{r['mean'] * 100:+.2f}{sd}"
        lines.append(f"| {r['per_class']} | {r['synthetic_label_smoothing']:g} | {seeds} | "
                     f"{c['mean'] * 100:.2f} | {gain} | {per_seed} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "logs", nargs="+", help="logs of gan_scarce_classifier.py (PATH[:SMOOTHING])"
    )
    parser.add_argument("--json", type=Path, required=True, help="merged results file to write")
    parser.add_argument("--note", default="", help="a sentence kept in the JSON")
    args = parser.parse_args()
    groups, sources = collect(args.logs)
    rows = result_rows(groups, paired_baselines(groups))
    payload = {"command": command_line(), "commit": git_commit(),
               "date": datetime.date.today().isoformat(), "note": args.note,
               "sources": sources,
               "rows": rows, "grid": grid(groups)}  # fmt: skip
    print(table(rows))
    save_text(args.json, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

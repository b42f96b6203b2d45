"""Oversampling the rare class of a table: a class-conditional GAN (trained and sampled through
genad's flows, the path users take) against imbalanced-learn's SMOTE and no oversampling, for a
supervised classifier on labelled ADBench dev sets (issue 19, the tabular part).

Per set and seed: a stratified 70/30 split (seeded), the training part subsampled to at most
`--max-train` rows (stratified). Three training sets for the same classifier
(scikit-learn's HistGradientBoostingClassifier, defaults, random_state = seed):
- "real": the training part as it is;
- "smote": plus SMOTE rows of the rare class (imblearn defaults: k = 5, up to balance);
- "gan_oversampling": plus as many rare-class rows drawn from a conditional GAN. The GAN is
  trained by `pipelines.train_gan.train_gan_flow` on the training part with its labels
  (`conditional`, MLP nets, non-saturating loss, `--gan-steps` G steps, 10 % held out for the
  flow's quality metrics) and sampled by `pipelines.synth.synthesize_flow` from the registered
  generator (`models:/<name>@challenger`, class 1), exactly as `genad train gan --conditional`
  and `genad synth --classes 1` do.
AUPRC (average precision) of the classifier's probability on the test part. MLflow's store is
a scratch sqlite under .state/bench-oversampling. Nothing is tuned: the sets, the classifier,
the GAN's settings and its step count were fixed before the first run.

Usage: .venv/bin/python benchmarks/gan_tabular_oversampling.py --threads 1
"""

# The environment must be set before prefect and mlflow are imported:
# ruff: noqa: E402
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".state" / "bench-oversampling"
os.environ.update(
    DO_NOT_TRACK="true",
    MLFLOW_DISABLE_TELEMETRY="true",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_HOME=str(WORK / "prefect-client"),
    MLFLOW_TRACKING_URI=f"sqlite:///{WORK / 'mlflow' / 'mlflow.db'}",
)
os.environ.setdefault("GENAD_DATA_DIR", str(ROOT.parent / "shared" / "data"))

import argparse
import datetime
import json
import time

import numpy as np
import torch
from bench_common import log, replace_section, set_threads
from provenance import command_line, git_commit

SETS = ("Ionosphere", "Stamps", "WDBC", "yeast", "arrhythmia", "satimage-2", "mnist", "campaign")
METHODS = ("real", "smote", "gan_oversampling")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-train", type=int, default=5000)
    parser.add_argument("--gan-steps", type=int, default=2000, help="G steps of each GAN")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    return parser.parse_args()


def split(name: str, seed: int, max_train: int) -> tuple[np.ndarray, ...]:
    """(X_train, y_train, X_test, y_test) of one set and seed."""
    from sklearn.model_selection import train_test_split

    from anomaly.data import load_dataset

    data = load_dataset(f"adbench/{name}")
    X, y = np.asarray(data.X, np.float64), np.asarray(data.y).astype(int)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=seed
    )
    if len(X_train) > max_train:
        X_train, _, y_train, _ = train_test_split(
            X_train, y_train, train_size=max_train, stratify=y_train, random_state=seed
        )
    return X_train, y_train, X_test, y_test


def smote_rows(X: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """The synthetic rare-class rows SMOTE adds to reach balance."""
    from imblearn.over_sampling import SMOTE

    X_all, _ = SMOTE(random_state=seed).fit_resample(X, y)
    return X_all[len(X) :]


def gan_rows(name: str, X: np.ndarray, y: np.ndarray, seed: int, steps: int) -> np.ndarray:
    """As many rare-class rows as SMOTE adds, from a conditional GAN trained and sampled by
    genad's flows (train gan --conditional, then synth --classes 1)."""
    from pipelines.synth import synthesize_flow
    from pipelines.train_gan import train_gan_flow

    folder = WORK / "data" / f"{name}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "train.npz", X=X, y=y)
    model = f"oversample-{name.lower()}-{seed}"
    trainer = {"epochs": 10**6, "max_generator_steps": steps, "device": "cpu"}
    train_gan_flow(str(folder / "train.npz"), {"conditional": True}, trainer,
                   model_name=model, holdout_fraction=0.1, seed=seed)  # fmt: skip
    n_new = int((y == 0).sum() - (y == 1).sum())
    out = folder / "samples.npz"
    synthesize_flow(f"models:/{model}@challenger", n_new, [1], str(out), seed=seed)
    with np.load(out) as samples:
        return np.asarray(samples["X"], np.float64)


def auprc(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, seed: int):
    """Average precision of the gradient-boosted classifier trained on (X, y)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import average_precision_score

    model = HistGradientBoostingClassifier(random_state=seed).fit(X, y)
    return float(average_precision_score(y_test, model.predict_proba(X_test)[:, 1]))


def run_one(name: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """AUPRC of each method on one set and seed."""
    X, y, X_test, y_test = split(name, seed, args.max_train)
    extra = {"real": np.empty((0, X.shape[1])), "smote": smote_rows(X, y, seed)}
    extra["gan_oversampling"] = gan_rows(name, X, y, seed, args.gan_steps)
    scores = {}
    for method in METHODS:
        rows = extra[method]
        X_fit = np.concatenate([X, rows])
        y_fit = np.concatenate([y, np.ones(len(rows), int)])
        scores[method] = auprc(X_fit, y_fit, X_test, y_test, seed)
    log(f"{name} seed {seed}: " + ", ".join(f"{m} {v:.4f}" for m, v in scores.items()))
    return scores


def main() -> int:
    args = parse_args()
    set_threads(args.threads, f"{len(args.sets)} sets x {len(args.seeds)} seeds")
    torch.manual_seed(0)
    start = time.perf_counter()
    per_set = {name: [run_one(name, seed, args) for seed in args.seeds] for name in args.sets}
    rows = summary_rows(per_set, args)
    text = report(args, per_set, rows, time.perf_counter() - start)
    print(text)
    if args.write_docs:
        replace_section(ROOT / "docs" / "benchmarks.md", text)
    write_rows(rows)
    return 0


def summary_rows(per_set: dict, args: argparse.Namespace) -> list[dict]:
    """gan_augmentation.json's rows: per set and method, mean and sd of AUPRC over seeds; and
    the mean over sets."""
    rows = []
    for name, results in per_set.items():
        for method in METHODS:
            values = [r[method] for r in results]
            rows.append({"data": name, "per_class": None, "method": method, "metric": "auprc",
                         "mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)),
                         "seeds": len(values)})  # fmt: skip
    for method in METHODS:
        means = [row["mean"] for row in rows if row["method"] == method]
        rows.append({"data": "mean over sets", "per_class": None, "method": method,
                     "metric": "auprc", "mean": float(np.mean(means)), "sd": None,
                     "seeds": len(args.seeds)})  # fmt: skip
    return rows


def write_rows(rows: list[dict]) -> None:
    """Merge the tabular rows into docs/results/gan_augmentation.json (the image rows, if any,
    are kept)."""
    path = ROOT / "docs" / "results" / "gan_augmentation.json"
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    kept = [row for row in old if row["metric"] != "auprc"]
    payload = {"command": command_line(), "commit": git_commit(),
               "date": datetime.date.today().isoformat(), "rows": kept + rows}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


def report(args: argparse.Namespace, per_set: dict, rows: list[dict], wall: float) -> str:
    lines = [
        "## Tabular oversampling: conditional GAN vs SMOTE (issue 19)",
        "",
        f"Command: `{command_line()}` (commit {git_commit()}, "
        f"{datetime.date.today().isoformat()}; {wall / 60:.1f} min; torch threads: "
        f"{args.threads}; seeds {args.seeds}; GAN {args.gan_steps} G steps; training part at "
        f"most {args.max_train} rows).",
        "",
        "AUPRC of HistGradientBoostingClassifier on the test part, mean ± sd over seeds:",
        "",
        "| set | rare share | " + " | ".join(METHODS) + " |",
        "|---|---|" + "---|" * len(METHODS),
    ]
    for name in per_set:
        cells = []
        for method in METHODS:
            row = next(r for r in rows if r["data"] == name and r["method"] == method)
            cells.append(f"{row['mean']:.4f} ± {row['sd']:.4f}")
        lines.append(f"| {name} | {rare_share(name):.3f} | " + " | ".join(cells) + " |")
    means = [next(r for r in rows if r["data"] == "mean over sets" and r["method"] == m)
             for m in METHODS]  # fmt: skip
    lines.append("| **mean** | - | " + " | ".join(f"{r['mean']:.4f}" for r in means) + " |")
    return "\n".join(lines) + "\n"


def rare_share(name: str) -> float:
    """The share of the rare class in the whole set."""
    from anomaly.data import load_dataset

    return float(np.mean(np.asarray(load_dataset(f"adbench/{name}").y)))


if __name__ == "__main__":
    sys.exit(main())

"""Fingerprints of seeded outputs through the CLI, to show a refactor changed no behaviour.

Runs, in a fresh temporary MLflow store and work folder, the paths users take with fixed seeds:
the demo on an ADBench set (its scores file), `genad train vae` + `genad score` (the scored
Parquet's data, and its bytes), and `genad train gan|progan|stylegan|cyclegan` for a few steps
followed by `genad synth` / `genad translate` (the sample arrays). Each output is reduced to a
SHA-256 of its arrays, so two commits can be compared row by row:

    python benchmarks/seeded_outputs.py --out .state/bench/before.json     # on the old commit
    python benchmarks/seeded_outputs.py --out .state/bench/after.json      # on the new one
    python benchmarks/seeded_outputs.py --compare .state/bench/before.json .state/bench/after.json

Writes docs/results/seeded_outputs.json when --out is not given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import command_line, git_commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABULAR = "adbench/4_breastw"
IMAGES = "fashion-mnist"
PROGRESSIVE = ["--fade-images", "128", "--stable-images", "128", "--final-images", "128",
               "--batch-size", "32"]  # fmt: skip


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 of the arrays' dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for array in arrays:
        if array.dtype == object:  # strings: their text, not the pointers
            array = np.array([repr(value) for value in array])
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def npz_digest(path: Path) -> str:
    with np.load(path) as data:
        return array_digest(*(data[key] for key in sorted(data.files)))


def parquet_digest(path: Path) -> str:
    frame = pd.read_parquet(path)
    return array_digest(*(frame[column].to_numpy() for column in sorted(frame.columns)))


def genad(*args: str, env: dict[str, str]) -> None:
    """Run one CLI command; raise with its stderr if it fails."""
    command = [str(Path(sys.executable).with_name("genad")), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed:\n{result.stderr[-3000:]}")


def tabular_rows(work: Path, env: dict[str, str]) -> dict[str, str]:
    """The demo's scores, then train + score through the registry."""
    genad("demo", "--dataset", TABULAR, "--epochs", "3", "--workdir", str(work / "demo"),
          "--seed", "0", "--model-name", "fp-demo", env=env)  # fmt: skip
    rows = {"demo scores": parquet_digest(work / "demo" / "scores.parquet")}
    genad("train", "vae", "--dataset", TABULAR, "--seed", "1", "--epochs", "3",
          "--model-name", "fp-vae", env=env)  # fmt: skip
    data = np.load(Path(env["GENAD_DATA_DIR"]) / "adbench" / "4_breastw.npz")
    frame = pd.DataFrame(data["X"], columns=[f"x{i}" for i in range(data["X"].shape[1])])
    frame.to_csv(work / "batch.csv", index=False)
    genad("score", "--model-uri", "models:/fp-vae/1", "--input", str(work / "batch.csv"),
          "--output", str(work / "scores.parquet"), env=env)  # fmt: skip
    rows["score output (columns)"] = parquet_digest(work / "scores.parquet")
    rows["score output (bytes)"] = hashlib.sha256(
        (work / "scores.parquet").read_bytes()
    ).hexdigest()[:16]
    return rows


def generator_rows(work: Path, env: dict[str, str]) -> dict[str, str]:
    """A few seeded steps of each GAN family, then seeded samples through `genad synth`."""
    common = ["--dataset", IMAGES, "--seed", "0", "--max-rows", "256", "--reference-rows", "64"]
    runs = {
        "gan": ["--epochs", "1", "--batch-size", "64", "--base-channels", "8"],
        "progan": PROGRESSIVE,
        "stylegan": PROGRESSIVE,
    }
    rows = {}
    for kind, extra in runs.items():
        name = f"fp-{kind}"
        genad("train", kind, *common, "--model-name", name, *extra, env=env)
        out = work / f"{kind}.npz"
        genad("synth", "--model", f"models:/{name}/1", "--n", "16", "--seed", "3",
              "--output", str(out), env=env)  # fmt: skip
        rows[f"{kind} samples"] = npz_digest(out)
    genad("train", "cyclegan", "--dataset", IMAGES, "--transform", "vflip", "--seed", "0",
          "--max-rows", "64", "--test-rows", "32", "--classifier-epochs", "1",
          "--base-channels", "4", "--residual-blocks", "1", "--max-steps", "4",
          "--batch-size", "8", "--model-name", "fp-cyclegan", env=env)  # fmt: skip
    images = np.load(work / "gan.npz")
    np.savez(work / "to_translate.npz", **{key: images[key] for key in images.files})
    out = work / "translated.npz"
    genad("translate", "--model", "models:/fp-cyclegan/1", "--input",
          str(work / "to_translate.npz"), "--output", str(out), env=env)  # fmt: skip
    rows["cyclegan translation"] = npz_digest(out)
    return rows


def measure() -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="genad-fp-") as folder:
        work = Path(folder)
        env = dict(os.environ)
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        env.setdefault("GENAD_DATA_DIR", str(ROOT.parent / "shared" / "data"))
        env["OMP_NUM_THREADS"] = "1"
        rows = tabular_rows(work, env)
        rows.update(generator_rows(work, env))
        return rows


def compare(before: Path, after: Path) -> int:
    old = json.loads(before.read_text())
    new = json.loads(after.read_text())
    print(f"| output | {old['commit']} | {new['commit']} | same |\n|---|---|---|---|")
    differ = 0
    for name, digest in old["rows"].items():
        other = new["rows"].get(name, "missing")
        differ += other != digest
        print(f"| {name} | {digest} | {other} | {'yes' if other == digest else 'NO'} |")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "results" / "seeded_outputs.json"
    )
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    started = time.perf_counter()
    rows = measure()
    result = {
        "command": command_line(),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

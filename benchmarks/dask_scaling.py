"""Dask scaling: `batch_score_flow` rows/s on a real Dask scheduler with 1 vs 2 workers.

Target (issue 7): 2 workers >= 1.6x the rows/s of 1 worker on this 2-core machine. Model and
input: the platform benchmark's (`benchmarks/platform_bench.py`): the `bench-platform` champion
(ADBench donors, IWAE K=10, trained into .state/bench-mlflow unless already there; another
--n-samples K trains `bench-dask-k<K>` the same way, once) and donors
repeated to --rows rows of Parquet. Every run is one `dask_batch_score` (the flow with one task
per partition on the workers, 1 torch thread each, then the merge), end to end: model download,
planning, scoring, merge, summary, MLflow run. Reference in the same run: the sequential flow in
this process on 1 thread. A real `prefect server` is started first and given to the flow and the
workers (without it every worker starts its own temporary server). Rounds are interleaved:
sequential, 1 worker, 2 workers, repeated. Workers are started as docs/scaling.md says, with
glibc's malloc defaults (`tests/servers.py` DASK_WORKER_CONFIG): with the nanny's
MALLOC_TRIM_THRESHOLD_=65536 a worker scored at half the speed of the sequential run.

Usage: .venv/bin/python benchmarks/dask_scaling.py --out .state/bench/dask_scaling.md
"""

# The environment must be set before prefect and mlflow are imported (platform_bench does it):
# ruff: noqa: E402
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the child-process harness the tests use

import argparse
import os
import statistics
import tempfile
import time

import torch
from platform_bench import (
    CONFIG,
    DATASET,
    MODEL_URI,
    WORK,
    ensure_champion,
    source_rows,
    write_repeated,
)
from prefect.settings import PREFECT_API_URL, temporary_settings
from servers import VENV_BIN, child_env, dask_cluster, free_port, running

from pipelines import tracking
from pipelines.promote import evaluate_and_promote_flow
from pipelines.score import batch_score_flow, dask_batch_score
from pipelines.train import train_vae_flow


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="input rows")
    parser.add_argument("--partition-rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument(
        "--n-samples", type=int, default=10, help="IWAE K of the model (10: bench-platform's)"
    )
    parser.add_argument("--out", type=Path, default=None, help="markdown report")
    return parser.parse_args(argv)


def timed(run, output: Path) -> tuple[float, float]:
    """Wall seconds of one scoring run and the seconds spent inside its partition tasks
    (summed over the processes); its outputs removed afterwards."""
    start = time.perf_counter()
    summary = run(output)
    seconds = time.perf_counter() - start
    output.unlink(missing_ok=True)
    output.with_name(output.name + ".summary.json").unlink(missing_ok=True)
    return seconds, summary["partition_seconds"]


def model_uri(n_samples: int) -> str:
    """The bench-platform champion (K=10), or a model trained the same way with another K
    (`bench-dask-k<K>`, trained and promoted once into the bench store, then reused)."""
    if n_samples == CONFIG["n_samples"]:
        ensure_champion(retrain=False)
        return MODEL_URI
    name = f"bench-dask-k{n_samples}"
    tracking.configure()
    if tracking.alias_version(name, "champion") is None:
        train_vae_flow(DATASET, {**CONFIG, "n_samples": n_samples}, model_name=name)
        evaluate_and_promote_flow(name, DATASET, margin=-1.0)
    return f"models:/{name}@champion"


def measure(
    args: argparse.Namespace, source: Path, small: Path, env: dict[str, str]
) -> dict[str, list]:
    """Seconds per run for each contender, interleaved over the rounds; each cluster first
    scores the `small` input once (workers import torch and genad), untimed."""
    params = {"model_uri": args.model_uri, "input": str(source)}
    params["rows_per_partition"] = args.partition_rows

    def sequential(output: Path) -> dict:
        return batch_score_flow(output=str(output), torch_threads=1, **params)

    seconds: dict[str, list] = {"sequential (this process)": [], "1 worker": [], "2 workers": []}
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as scratch:
        output = Path(scratch) / "scores.parquet"
        for round_ in range(args.rounds):
            seconds["sequential (this process)"].append(timed(sequential, output))
            for workers in (1, 2):
                log_dir = Path(scratch) / f"dask-{workers}-{round_}"
                with dask_cluster(workers, env=env, log_dir=log_dir) as address:

                    def on_dask(out: Path, address: str = address) -> dict:
                        return dask_batch_score(address=address, output=str(out), **params)

                    # 20 partitions: every worker imports torch and genad before the timing
                    warm_up = {**params, "input": str(small), "rows_per_partition": 1000}
                    dask_batch_score(address=address, output=str(output), **warm_up)
                    seconds[f"{workers} worker{'s' if workers > 1 else ''}"].append(
                        timed(on_dask, output)
                    )
            print({key: [f"{s:.1f}" for s, _ in runs] for key, runs in seconds.items()}, flush=True)
    return seconds


def render(args: argparse.Namespace, seconds: dict[str, list], load: tuple[str, str]) -> str:
    """The markdown table: median seconds, rows/s, the ratios, and the split of each run into
    partition tasks (parallel) and the rest (resolve, plan, merge, summary, MLflow: serial)."""
    medians = {key: statistics.median(wall for wall, _ in runs) for key, runs in seconds.items()}
    inside = {key: statistics.median(part for _, part in runs) for key, runs in seconds.items()}
    processes = {"sequential (this process)": 1, "1 worker": 1, "2 workers": 2}
    one = medians["1 worker"]
    lines = [
        f"`.venv/bin/python benchmarks/dask_scaling.py --rows {args.rows} --partition-rows "
        f"{args.partition_rows} --rounds {args.rounds} --n-samples {args.n_samples}`: "
        f"{args.rows:,} rows of donors (IWAE K={args.n_samples}, `{args.model_uri}`), "
        f"{args.rows // args.partition_rows} partitions, {os.cpu_count()} cores, 1 torch "
        f"thread per worker and in the sequential run; median of {args.rounds} interleaved "
        f"rounds, each cluster warmed up by scoring 20,000 rows in 20 partitions first; load "
        f"average {load[0]} before, {load[1]} after. Partition tasks: the summed seconds inside "
        f"them (summary `partition_seconds`); the rest: wall minus that sum / processes.",
        "",
        "| run | wall seconds (each round) | rows/s (median) | vs 1 worker "
        "| partition tasks, s (summed) | the rest, s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, runs in seconds.items():
        each = ", ".join(f"{wall:.1f}" for wall, _ in runs)
        rest = medians[key] - inside[key] / processes[key]
        lines.append(
            f"| {key} | {each} | {args.rows / medians[key]:,.0f} | {one / medians[key]:.2f}x "
            f"| {inside[key]:.1f} | {rest:.1f} |"
        )
    verdict = "PASS" if one / medians["2 workers"] >= 1.6 else "FAIL"
    lines += [
        "",
        f"2 workers / 1 worker: {one / medians['2 workers']:.2f}x (target 1.6x: {verdict})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start the Prefect server, measure, report."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    before = f"{os.getloadavg()[0]:.2f}"
    rows = source_rows()
    source = write_repeated(rows, args.rows, WORK / f"donors-{args.rows}.parquet")
    small = write_repeated(rows, 20_000, WORK / "donors-20000.parquet")
    args.model_uri = model_uri(args.n_samples)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = [VENV_BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server_env = child_env({"PREFECT_HOME": str(WORK / "prefect-server")})
    with running(
        server, env=server_env, log=WORK / "prefect-server.log", health_url=f"{api}/health"
    ):
        env = child_env({"PREFECT_API_URL": api, "OMP_NUM_THREADS": "1"})
        with temporary_settings(updates={PREFECT_API_URL: api}):
            seconds = measure(args, source, small, env)
    report = render(args, seconds, (before, f"{os.getloadavg()[0]:.2f}"))
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Scheduled scoring benchmark: a 7-interval backfill on a real Prefect server against one
`genad score` of the same rows, and the alarm's false-alarm rate and power.

Throughput: ADBench donors (10 features). A `VAEDetector()` at its defaults is trained by
`train_vae_flow` on 20,000 normal rows (plus 1,000 anomalies for its validation metrics) into a
bench-only embedded MLflow store (.state/bench-schedule) and promoted. Seven intervals
(2026-11-01 .. 07) of 100,000 rows each, drawn from the other normal rows, are written as
Parquet; `prefect server start` and `genad schedule score` (concurrency 1) run as child
processes, and `genad backfill score --wait` scores the seven intervals. The reference is one
`genad score` of the same 700,000 rows in one file. Peak RSS: the largest resident set of any
process of the serving tree (the runner and its flow-run subprocesses) and of `genad score`,
polled every 0.2 s. Every process runs torch on `--threads` threads.

Alarm: the same model's scores of 150,000 held-out normal rows, of all anomalies, and of the
normal rows with feature `x0` shifted by 0.5 of its standard deviation are computed once;
batches of `--batch-rows` rows are resampled from them (a row's score does not depend on its
batch). False alarms: normal batches. Power: "twice the anomaly rate" plants anomalies at a
share equal to the flag rate (so the share flagged roughly doubles); "shifted feature" uses the
shifted rows. A simulation in score space (exchangeable normal scores, a fresh calibration set
per batch) gives the rate over calibration draws, the quantity the alarm guarantees, for the
beta-binomial count test and for the fixed-rate binomial test alone.

Usage: .venv/bin/python benchmarks/scheduled_scoring.py [--threads 1] [--write-docs]
"""

# The environment must be set before prefect and mlflow are imported:
# ruff: noqa: E402
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".state" / "bench-schedule"
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
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from typing import Any

import numpy as np
import pandas as pd
import psutil
from bench_common import replace_section
from provenance import command_line, git_commit

SOURCE_FILE = "adbench/11_donors.npz"
MODEL_NAME = "bench-schedule"
MODEL_URI = f"models:/{MODEL_NAME}@champion"
DAYS = [f"2026-11-0{d}" for d in range(1, 8)]
INTERVAL_ROWS, TRAIN_ROWS = 100_000, 20_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--batch-rows", type=int, default=10_000, help="alarm batch size")
    parser.add_argument("--batches", type=int, default=1000, help="alarm batches per case")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    return parser.parse_args()


def donors() -> tuple[pd.DataFrame, np.ndarray]:
    with np.load(Path(os.environ["GENAD_DATA_DIR"]) / SOURCE_FILE) as data:
        X, y = np.asarray(data["X"], np.float64), np.asarray(data["y"]).astype(int)
    return pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])]), y


def prepare(frame: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
    """The training file, the seven interval files, the one-file reference, the alarm pool."""
    rng = np.random.default_rng(0)
    normal, anomalies = rng.permutation(np.flatnonzero(y == 0)), np.flatnonzero(y == 1)
    train_rows = np.concatenate([normal[:TRAIN_ROWS], anomalies[:1000]])
    training = frame.iloc[train_rows].assign(label=y[train_rows])
    (WORK / "data").mkdir(parents=True, exist_ok=True)
    training.to_parquet(WORK / "train.parquet", index=False)
    rest = normal[TRAIN_ROWS:]
    pool, held_out = rest[:150_000], rest[150_000:]
    parts = []
    for index, day in enumerate(DAYS):
        rows = np.random.default_rng([1, index]).choice(held_out, INTERVAL_ROWS, replace=False)
        part = frame.iloc[rows].reset_index(drop=True)
        part.to_parquet(WORK / "data" / f"{day}.parquet", index=False)
        parts.append(part)
    pd.concat(parts, ignore_index=True).to_parquet(WORK / "all-days.parquet", index=False)
    return {"pool": frame.iloc[pool], "anomalies": frame.iloc[anomalies[1000:]]}


def train_model(threads: int) -> dict[str, Any]:
    import torch

    from pipelines.promote import evaluate_and_promote_flow
    from pipelines.train import train_vae_flow

    torch.set_num_threads(threads)
    start = time.perf_counter()
    trained = train_vae_flow(
        str(WORK / "train.parquet"), {}, model_name=MODEL_NAME, label_column="label"
    )
    evaluate_and_promote_flow(
        MODEL_NAME, str(WORK / "train.parquet"), label_column="label", margin=-1.0
    )
    return {
        "version": str(trained["version"]),
        "seconds": time.perf_counter() - start,
        "val_auroc": trained.get("val_auroc"),
    }


class PeakRSS:
    """Polls a process tree every 0.2 s: the largest RSS of any one process in it (bytes)."""

    def __init__(self, pid: int) -> None:
        self.root, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                tree = [self.root, *self.root.children(recursive=True)]
                for process in tree:
                    self.peak = max(self.peak, process.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def child_env(threads: int, extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.update(extra)
    return env


def genad(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run the genad CLI; (seconds, peak RSS of its tree, stdout)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak = PeakRSS(process.pid)
    out, _ = process.communicate()
    seconds, rss = time.perf_counter() - start, peak.stop()
    if process.returncode:
        raise RuntimeError(f"genad {' '.join(args)} failed:\n{out[-3000:]}")
    return seconds, rss, out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def backfill_run(threads: int) -> dict[str, Any]:
    """Serve the deployment on a fresh `prefect server start`; backfill the seven intervals."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_home, scores = WORK / "prefect-server", WORK / "scores"
    shutil.rmtree(server_home, ignore_errors=True)
    shutil.rmtree(scores, ignore_errors=True)
    scores.mkdir(parents=True)
    server_env = child_env(threads, {"PREFECT_HOME": str(server_home)})
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = child_env(threads, {"PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "1"})
    serve = None
    try:
        wait_healthy(f"{api}/health")
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.cli",
                "schedule",
                "score",
                "--cron",
                "0 2 * * *",
                "--name",
                "bench",
                "--model-uri",
                MODEL_URI,
                "--input",
                str(WORK / "data" / "{date}.parquet"),
                "--output",
                str(scores / "{date}.parquet"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(20)  # the deployment registers
        peak = PeakRSS(serve.pid)
        seconds, _, out = genad(
            [
                "backfill",
                "score",
                "--deployment",
                "bench",
                "--from",
                DAYS[0],
                "--to",
                DAYS[-1],
                "--wait",
                "--timeout",
                "3000",
            ],
            env,
        )
        serve_rss = peak.stop()
        _, _, listing = genad(["runs", "list", "--deployment", "bench", "--json"], env)
        timings = run_timings(api)
    finally:
        for process in (serve, server):
            if process is not None:
                os.killpg(process.pid, 15)
                process.wait(timeout=60)
    summaries = [json.loads((scores / f"{d}.parquet.summary.json").read_text()) for d in DAYS]
    return {
        "seconds": seconds,
        "peak_rss": serve_rss,
        "stdout": out,
        "history": json.loads(listing),
        "timings": timings,
        "summaries": summaries,
    }


def run_timings(api: str) -> dict[str, float]:
    """From the server: the backfill runs' summed run time and their first start to last end."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        runs = [run for run in c.read_flow_runs() if "backfill" in run.tags]
    return {
        "runs": len(runs),
        "run_seconds": sum(run.total_run_time.total_seconds() for run in runs),
        "first_start_to_last_end_s": (
            max(run.end_time for run in runs) - min(run.start_time for run in runs)
        ).total_seconds(),
    }


def single_score(threads: int) -> dict[str, Any]:
    output = WORK / "all-days.scores.parquet"
    env = child_env(threads, {})
    env.pop("PREFECT_API_URL", None)
    seconds, rss, _ = genad(
        [
            "score",
            "--model-uri",
            MODEL_URI,
            "--input",
            str(WORK / "all-days.parquet"),
            "--output",
            str(output),
        ],
        env,
    )
    return {"seconds": seconds, "peak_rss": rss}


def model_scores(frame: pd.DataFrame, threads: int) -> tuple[Any, dict[str, np.ndarray]]:
    """The champion's detector and the (normality, p_value) columns of `frame`'s rows."""
    import torch

    from anomaly.packaged.scoring import load_bundle
    from pipelines import tracking

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as scratch:
        bundle = load_bundle(tracking.resolve_model(MODEL_URI, dst=scratch).bundle_dir)
    columns = bundle.score_columns(frame[bundle.feature_names].to_numpy())
    return bundle.detector, {k: columns[k] for k in ("normality", "p_value")}


def alarm_rates(draw, detector, batches: int, level: float) -> dict[str, float]:
    """Shares of `batches` batches (from `draw(rng)`) that fire each test and the alarm."""
    from anomaly.alarm import batch_alarm

    rng = np.random.default_rng(7)
    fired = {"alarm": 0, "count": 0, "shift": 0, "binomial": 0}
    for _ in range(batches):
        scores, p_values = draw(rng)
        alarm = batch_alarm(
            scores, p_values, detector.calibration_scores_, rate=detector.flag_level, level=level
        )
        fired["alarm"] += alarm["fired"]
        fired["count"] += alarm["count_p_value"] <= level / 2
        fired["shift"] += alarm["shift_p_value"] <= level / 2
        fired["binomial"] += alarm["binomial_p_value"] <= level / 2
    return {name: count / batches for name, count in fired.items()}


def alarm_study(pool: pd.DataFrame, anomalies: pd.DataFrame, args: argparse.Namespace) -> dict:
    """False alarms and power with the real model (module docstring)."""
    shifted = pool.copy()
    shifted["x0"] += 0.5 * pool["x0"].std()
    detector, normal = model_scores(pool, args.threads)
    _, bad = model_scores(anomalies, args.threads)
    _, moved = model_scores(shifted, args.threads)
    n, rate = args.batch_rows, detector.flag_level
    planted = int(round(rate * n))

    def sample(columns: dict, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return columns["normality"][rows], columns["p_value"][rows]

    def normal_batch(rng):
        return sample(normal, rng.integers(0, len(pool), n))

    def doubled_batch(rng):
        a = sample(normal, rng.integers(0, len(pool), n - planted))
        b = sample(bad, rng.integers(0, len(anomalies), planted))
        return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])

    def shifted_batch(rng):
        return sample(moved, rng.integers(0, len(pool), n))

    cases = {
        "normal rows (false alarms)": normal_batch,
        f"anomalies planted at {rate:g} of the rows": doubled_batch,
        "feature x0 shifted by 0.5 sd": shifted_batch,
    }
    rows = [
        {"case": name, **alarm_rates(draw, detector, args.batches, 0.01)}
        for name, draw in cases.items()
    ]
    flagged = float(np.mean(normal["p_value"] <= rate))
    return {
        "rows": rows,
        "calibration_rows": len(detector.calibration_scores_),
        "flag_rate": rate,
        "pool_flagged_share": flagged,
    }


def simulated_false_alarms(batches: int) -> list[dict[str, Any]]:
    """Exchangeable normal scores, a fresh calibration set per batch: the alarm's guarantee."""
    from anomaly.alarm import batch_alarm
    from anomaly.thresholds import conformal_p_values

    rows = []
    for m, n in ((200, 10_000), (2_000, 10_000), (2_000, 100_000)):
        rng = np.random.default_rng([m, n])
        fired = {"alarm": 0, "binomial": 0}
        for _ in range(batches):
            calibration, batch = rng.normal(size=m), rng.normal(size=n)
            alarm = batch_alarm(
                batch, conformal_p_values(calibration, batch), calibration, rate=0.1, level=0.01
            )
            fired["alarm"] += alarm["fired"]
            fired["binomial"] += alarm["binomial_p_value"] <= 0.005
        rows.append(
            {
                "calibration_rows": m,
                "batch_rows": n,
                "batches": batches,
                **{k: v / batches for k, v in fired.items()},
            }
        )
    return rows


def report(args, model, backfill, single, study, simulated, wall) -> str:
    rows_total, timings = INTERVAL_ROWS * len(DAYS), backfill["timings"]
    mib = 2**20
    lines = [
        "## Scheduled scoring: a 7-interval backfill, and the alarm (issue 18)",
        "",
        f"Command: `{command_line()}` (commit {git_commit()}, "
        f"{datetime.date.today().isoformat()}; {wall / 60:.1f} min; torch threads per "
        f"process: {args.threads}; 2-core machine).",
        "",
        f"Model: `VAEDetector()` defaults on 20,000 normal ADBench donors rows (+1,000 anomalies "
        f"for validation), trained and promoted in {model['seconds']:.0f} s (validation AUROC "
        f"{model['val_auroc']:.3f}); {study['calibration_rows']} calibration rows; flag rule at "
        f"its defaults, so the alarm's flag rate is {study['flag_rate']:g}.",
        "",
        "| run | rows | wall s | rows/s | peak RSS MiB |",
        "|---|---|---|---|---|",
        f"| `genad backfill score` of 7 intervals x {INTERVAL_ROWS:,} (real Prefect server, "
        f"concurrency 1) | {rows_total:,} | {backfill['seconds']:.1f} | "
        f"{rows_total / backfill['seconds']:,.0f} | {backfill['peak_rss'] / mib:.0f} |",
        f"| one `genad score` of the same rows in one file | {rows_total:,} | "
        f"{single['seconds']:.1f} | {rows_total / single['seconds']:,.0f} | "
        f"{single['peak_rss'] / mib:.0f} |",
        "",
        f"Backfill rows/s / single run's: {single['seconds'] / backfill['seconds']:.2f}. "
        f"Of the backfill's {backfill['seconds']:.0f} s, the {timings['runs']} flow runs ran "
        f"{timings['run_seconds']:.0f} s in all (Prefect's run times: model resolution, scoring, "
        "merge, alarm, MLflow history, artifact), from the first start to the last end "
        f"{timings['first_start_to_last_end_s']:.0f} s; the rest is the runner starting a "
        "process per run and the command's own start and polling. The backfill's peak RSS is "
        "the largest process of the serving tree (a flow run); the single run's is its one "
        "process.",
        "",
        "Per interval (from the summaries the runs wrote): "
        + "; ".join(
            f"{s['interval'][:10]} {s['anomalies']} flagged, alarm "
            f"{'FIRED' if s['alarm']['fired'] else 'quiet'}"
            for s in backfill["summaries"]
        )
        + ".",
        "",
        f"Alarm with this model, {args.batches} batches of {args.batch_rows:,} rows per case, "
        "level 0.01 (each test at 0.005):",
        "",
        "| batches | alarm fired | flag-count test | rank (shift) test | binomial test alone |",
        "|---|---|---|---|---|",
    ]
    for row in study["rows"]:
        lines.append(
            f"| {row['case']} | {row['alarm']:.3f} | {row['count']:.3f} | "
            f"{row['shift']:.3f} | {row['binomial']:.3f} |"
        )
    lines += [
        "",
        "Simulated exchangeable scores, a fresh calibration set per batch (flag rate "
        "0.1, level 0.01):",
        "",
        "| calibration rows | batch rows | batches | alarm false-alarm rate | "
        "binomial test alone |",
        "|---|---|---|---|---|",
    ]
    for row in simulated:
        lines.append(
            f"| {row['calibration_rows']} | {row['batch_rows']:,} | {row['batches']} | "
            f"{row['alarm']:.3f} | {row['binomial']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    start = time.perf_counter()
    print(f"torch threads per process: {args.threads}", flush=True)
    frame, y = donors()
    data = prepare(frame, y)
    model = train_model(args.threads)
    print(f"model: {model}", flush=True)
    single = single_score(args.threads)
    print(f"single genad score: {single}", flush=True)
    backfill = backfill_run(args.threads)
    print(backfill["stdout"], flush=True)
    study = alarm_study(data["pool"], data["anomalies"], args)
    simulated = simulated_false_alarms(args.batches)
    wall = time.perf_counter() - start
    text = report(args, model, backfill, single, study, simulated, wall)
    print(text)
    (WORK / "report.md").write_text(text)
    if args.write_docs:
        replace_section(ROOT / "docs" / "benchmarks.md", text)
    results = {
        "command": command_line(),
        "commit": git_commit(),
        "date": datetime.date.today().isoformat(),
        "rows": [
            {
                "run": "backfill_7x100k",
                "rows": INTERVAL_ROWS * len(DAYS),
                "wall_s": backfill["seconds"],
                "peak_rss_mib": backfill["peak_rss"] / 2**20,
                **backfill["timings"],
            },
            {
                "run": "single_genad_score",
                "rows": INTERVAL_ROWS * len(DAYS),
                "wall_s": single["seconds"],
                "peak_rss_mib": single["peak_rss"] / 2**20,
            },
            *[{"run": "alarm_model", **row} for row in study["rows"]],
            *[{"run": "alarm_simulated", **row} for row in simulated],
        ],
    }
    out = ROOT / "docs" / "results" / "scheduled_scoring.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

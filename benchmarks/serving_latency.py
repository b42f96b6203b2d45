"""Serving benchmark: `mlflow models serve` of a tabular VAE detector under a bounded local load.

The model: `train_vae_flow` + `evaluate_and_promote_flow` on adbench/donors (10 features) into a
bench-only MLflow store (.state/bench-serving), reused unless --retrain or unless the champion
ships pyfunc code that differs from anomaly/packaged/detector_pyfunc.py. The server: `mlflow models
serve -m models:/bench-serving@champion --env-manager local -h 127.0.0.1 -p PORT -w WORKERS` with
OMP_NUM_THREADS pinned. The client: stdlib `http.client`, one keep-alive connection per thread,
a fixed number of requests per (rows per request, concurrency) cell, after a warm-up. The
reference: in-process `mlflow.pyfunc.load_model(uri).predict(frame)` on the same rows, one call
at a time. Then malformed payloads, one request each: every status must be 4xx.

Usage: .venv/bin/python benchmarks/serving_latency.py --out .state/bench/serving_latency.md
"""

# The environment must be set before prefect and mlflow are imported:
# ruff: noqa: E402
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".state"
STORE = f"sqlite:///{STATE / 'bench-serving' / 'mlflow.db'}"
os.environ.update(
    DO_NOT_TRACK="true",
    MLFLOW_DISABLE_TELEMETRY="true",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_HOME=str(STATE / "prefect-serving"),
    MLFLOW_TRACKING_URI=STORE,
)
os.environ.setdefault("GENAD_DATA_DIR", str(ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT / "tests"))  # the child-process harness the tests use

import argparse
import contextlib
import datetime
import http.client
import json
import shlex
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from servers import VENV_BIN, child_env, free_port, running

from anomaly.data import load_dataset
from anomaly.packaged.detector_pyfunc import served_row_limit
from pipelines import tracking
from pipelines.promote import evaluate_and_promote_flow
from pipelines.train import train_vae_flow

CONFIGS = {  # train_vae_flow config per dataset; both score by IWAE with K=10 per row
    "adbench/donors": {
        "epochs": 3,
        "hidden_dims": [64, 64],
        "score_method": "iwae",
        "n_samples": 10,
    },
    "fashion-mnist": {"epochs": 1, "score_method": "iwae", "n_samples": 10},
}
NOVELTY = {"fashion-mnist": [0]}  # image sets: the class held out as the anomaly
BODIES_PER_SIZE = 16  # distinct payloads per size, sent in turn
WARMUP_REQUESTS = 50
JSON = "application/json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(CONFIGS), default="adbench/donors")
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per cell")
    parser.add_argument("--sizes", default="1,32,256", help="rows per request")
    parser.add_argument("--concurrency", default="1,4", help="client threads")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (-w)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, server and here")
    parser.add_argument("--retrain", action="store_true", help="train and promote a new model")
    parser.add_argument("--out", type=Path, default=STATE / "bench" / "serving_latency.md")
    args = parser.parse_args(argv)
    args.sizes = [int(n) for n in args.sizes.split(",")]
    args.concurrency = [int(n) for n in args.concurrency.split(",")]
    args.model_name = "bench-serving-" + args.dataset.split("/")[-1]
    args.model_uri = f"models:/{args.model_name}@champion"
    return args


# --- model and payloads -----------------------------------------------------------------------
def ensure_champion(args: argparse.Namespace) -> str:
    """Train + promote the dataset's model unless a current champion exists; how it was got."""
    tracking.configure()
    version = tracking.alias_version(args.model_name, "champion")
    if not args.retrain and version is not None and ships_current_code(args.model_uri):
        return f"version {version}, trained by an earlier run of this script and reused"
    start = time.perf_counter()
    config = dict(CONFIGS[args.dataset])
    novelty = NOVELTY.get(args.dataset)
    trained = train_vae_flow(
        args.dataset, config, model_name=args.model_name, novelty_classes=novelty
    )
    evaluate_and_promote_flow(  # margin -1: always promoted
        args.model_name, args.dataset, novelty_classes=novelty, margin=-1.0
    )
    version = tracking.alias_version(args.model_name, "champion")
    return (
        f"version {version}, trained and promoted by this run in "
        f"{time.perf_counter() - start:.0f} s (validation AUROC {trained['val_auroc']:.3f})"
    )


def ships_current_code(model_uri: str) -> bool:
    """Whether the model's shipped anomaly/packaged/detector_pyfunc.py is the repository's (its
    input checks)."""
    with tempfile.TemporaryDirectory() as scratch:
        resolved = tracking.resolve_model(model_uri, dst=scratch)
        shipped = resolved.local_dir / "code" / "anomaly" / "pyfunc.py"
        current = (ROOT / "anomaly" / "pyfunc.py").read_bytes()
        return shipped.is_file() and shipped.read_bytes() == current


def source_frame(dataset: str, columns: list[str]) -> pd.DataFrame:
    """The rows the payloads sample (images: the test split, flattened), named `columns`."""
    X = load_dataset(dataset, split=None if dataset.startswith("adbench/") else "test").X
    return pd.DataFrame(np.asarray(X, dtype=np.float64).reshape(len(X), -1), columns=columns)


def split_body(frame: pd.DataFrame) -> bytes:
    """The `dataframe_split` JSON of `frame` (floats written with repr: exact round trip)."""
    payload = {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}
    return json.dumps({"dataframe_split": payload}).encode()


def sample_frames(source: pd.DataFrame, size: int, seed: int) -> list[pd.DataFrame]:
    """BODIES_PER_SIZE frames of `size` random rows each."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(len(source), size=size, replace=False) for _ in range(BODIES_PER_SIZE)]
    return [source.iloc[rows].reset_index(drop=True) for rows in picks]


# --- timing -----------------------------------------------------------------------------------
@dataclass
class Cell:
    """One measured cell: per-request latencies (s), the wall time, rows sent, errors."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    rows: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """p50/p99/mean latency in ms and rows/s."""
        ms = np.asarray(self.latencies) * 1e3
        return {
            "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean()),
            "rows_per_s": self.rows / self.wall,
        }


def post(conn: http.client.HTTPConnection, body: bytes, content_type: str | None = JSON):
    """POST `body` to /invocations on a kept-alive connection; (status, response bytes)."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    conn.request("POST", "/invocations", body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def client_thread(port: int, bodies: list[bytes], size: int, count: int, cell: Cell,
                  lock: threading.Lock, barrier: threading.Barrier) -> None:  # fmt: skip
    """Send `count` requests of `size` rows, cycling through `bodies`; record latencies and
    errors (a status other than 200, a wrong number of predictions, a broken connection)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    latencies, errors, rows = [], [], 0
    barrier.wait()
    for i in range(count):
        start = time.perf_counter()
        try:
            status, data = post(conn, bodies[i % len(bodies)])
        except (OSError, http.client.HTTPException) as error:
            errors.append(repr(error))
            conn.close()  # http.client reconnects on the next request
            continue
        latencies.append(time.perf_counter() - start)
        if status != 200 or len(json.loads(data)["predictions"]) != size:
            errors.append(f"{status}: {data[:200]!r}")
        rows += size
    conn.close()
    with lock:
        cell.latencies += latencies
        cell.errors += errors
        cell.rows += rows


def served_cell(port: int, bodies: list[bytes], size: int, requests: int, threads: int) -> Cell:
    """`requests` requests from `threads` client threads, after WARMUP_REQUESTS untimed ones."""
    lock, barrier = threading.Lock(), threading.Barrier(1)
    client_thread(port, bodies, size, WARMUP_REQUESTS, Cell(), lock, barrier)
    cell, barrier = Cell(), threading.Barrier(threads + 1)
    shares = [requests // threads + (i < requests % threads) for i in range(threads)]
    workers = [
        threading.Thread(target=client_thread, args=(port, bodies, size, n, cell, lock, barrier))
        for n in shares
    ]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    cell.wall = time.perf_counter() - start
    return cell


def in_process_cell(model, frames: list[pd.DataFrame], requests: int) -> Cell:
    """`requests` calls of `model.predict` on `frames` in turn, one at a time."""
    for frame in frames[:4]:
        model.predict(frame)
    cell = Cell()
    start = time.perf_counter()
    for i in range(requests):
        frame = frames[i % len(frames)]
        began = time.perf_counter()
        model.predict(frame)
        cell.latencies.append(time.perf_counter() - began)
        cell.rows += len(frame)
    cell.wall = time.perf_counter() - start
    return cell


def max_log_px_gap(port: int, model, frames: list[pd.DataFrame]) -> float:
    """The largest |served - in-process| log_px over all `frames` (one request each)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    gap = 0.0
    for frame in frames:
        status, data = post(conn, split_body(frame))
        served = pd.DataFrame(json.loads(data)["predictions"])["log_px"].to_numpy()
        local = model.predict(frame)["log_px"].to_numpy()
        gap = max(gap, float(np.max(np.abs(served - local))) if status == 200 else np.inf)
    conn.close()
    return gap


# --- malformed payloads -----------------------------------------------------------------------
def raw_split(columns: list[str], rows_text: str) -> bytes:
    """A `dataframe_split` body with literal JSON `rows_text` as its data (NaN, Infinity...)."""
    return b'{"dataframe_split": {"columns": %s, "data": %s}}' % (
        json.dumps(columns).encode(),
        rows_text.encode(),
    )


def payload_cases(frame: pd.DataFrame, limit: int) -> list[tuple[str, str, bytes, str | None]]:
    """(case, expected status, body, content type): malformed payloads first, then valid variants
    the server accepts. `frame` holds a few valid rows; `limit` is the served row limit."""
    columns, row = list(frame.columns), frame.iloc[0].tolist()
    first, second, last = columns[0], columns[1], columns[-1]
    tail = ", ".join(map(repr, row[1:]))
    text_row = frame.astype(object)
    text_row.iloc[0, 1] = "not-a-number"
    huge = pd.DataFrame(np.resize(frame.to_numpy(), (limit + 1, len(columns))), columns=columns)
    return [
        (f"missing column {last}", "4xx", split_body(frame.drop(columns=last)), JSON),
        (f"string in column {second}", "4xx", split_body(text_row), JSON),
        (f"NaN in column {first}", "4xx", raw_split(columns, f"[[NaN, {tail}]]"), JSON),
        (f"Infinity in column {first}", "4xx", raw_split(columns, f"[[Infinity, {tail}]]"), JSON),
        (f"null in column {first}", "4xx", raw_split(columns, f"[[null, {tail}]]"), JSON),
        ("a list inside a cell", "4xx", raw_split(columns, f"[[[1, 2], {tail}]]"), JSON),
        ("row shorter than the columns", "4xx", raw_split(columns, "[[1.0, 2.0]]"), JSON),
        ("body not JSON", "4xx", b"a,b\n{not json", JSON),
        ("body not UTF-8", "4xx", b"\xff\xfe\x00", JSON),
        ("content type text/plain", "4xx", split_body(frame), "text/plain"),
        ("charset latin-1", "4xx", split_body(frame), JSON + "; charset=latin-1"),
        ("empty data list", "4xx", raw_split(columns, "[]"), JSON),
        ("empty dataframe_records", "4xx", b'{"dataframe_records": []}', JSON),
        ("empty JSON object", "4xx", b"{}", JSON),
        ("wrong top-level key", "4xx", b'{"data": [[1.0, 2.0]]}', JSON),
        ("two input keys", "4xx", b'{"inputs": [], "dataframe_records": []}', JSON),
        ("top-level list", "4xx", json.dumps([row]).encode(), JSON),
        ("`inputs` rows without names", "4xx", json.dumps({"inputs": [row]}).encode(), JSON),
        ("dataframe_split not an object", "4xx", b'{"dataframe_split": [1, 2]}', JSON),
        (f"{limit + 1:,} rows (limit {limit:,})", "4xx", split_body(huge), JSON),
        ("no Content-Type header", "4xx", split_body(frame), None),
        *accepted_cases(frame, tail),
    ]  # fmt: skip


def accepted_cases(frame: pd.DataFrame, tail: str) -> list[tuple[str, str, bytes, str | None]]:
    """Valid variants of the payload the server scores (200)."""
    records = json.dumps({"dataframe_records": frame.to_dict("records")}).encode()
    named_inputs = json.dumps({"inputs": frame.to_dict("list")}).encode()
    booleans = raw_split(list(frame.columns), f"[[true, {tail}]]")
    return [
        ("extra column (ignored)", "200", split_body(frame.assign(extra=1.0)), JSON),
        ("dataframe_records", "200", records, JSON),
        ("`inputs` as named columns", "200", named_inputs, JSON),
        ("CSV body, text/csv", "200", frame.to_csv(index=False).encode(), "text/csv"),
        (f"booleans in column {frame.columns[0]} (read as 0/1)", "200", booleans, JSON),
    ]


def probe_payloads(port: int, cases: list[tuple[str, str, bytes, str | None]]) -> list[dict]:
    """Send each case once on a fresh connection; its status, seconds and the message's start."""
    results = []
    for case, expected, body, content_type in cases:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        start = time.perf_counter()
        status, data = post(conn, body, content_type)
        seconds = time.perf_counter() - start
        conn.close()
        ok = 400 <= status < 500 if expected == "4xx" else status == int(expected)
        results.append(
            {"case": case, "expected": expected, "status": status, "ok": ok,
             "seconds": seconds, "message": "" if status == 200 else error_text(data)}
        )  # fmt: skip
    return results


def error_text(data: bytes, head: int = 70, tail: int = 90) -> str:
    """The error's message (MLflow's JSON `message`, or the plain text): its start and end."""
    text = data.decode(errors="replace")
    with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not an object
        text = json.loads(text).get("message", text)
    text = text.split("\nError: ")[-1]  # drop MLflow's "Failed to predict data '<frame>'" prefix
    text = " ".join(text.split())
    return text if len(text) <= head + tail else f"{text[:head]} … {text[-tail:]}"


# --- the run ----------------------------------------------------------------------------------
def serve_args(model_uri: str, port: int, workers: int) -> list[str]:
    """The `mlflow models serve` command line."""
    return [
        str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
        "-h", "127.0.0.1", "-p", str(port), "-w", str(workers),
    ]  # fmt: skip


def measure(args: argparse.Namespace) -> dict:
    """Start the server, run every cell and the payload probes, stop it; all the numbers."""
    model = mlflow.pyfunc.load_model(args.model_uri)
    source = source_frame(args.dataset, model.metadata.get_input_schema().input_names())
    port = free_port()
    threads = str(args.threads)
    env = child_env({"MLFLOW_TRACKING_URI": STORE, "OMP_NUM_THREADS": threads,
                     "MKL_NUM_THREADS": threads})  # fmt: skip
    work = STATE / "bench-serving"
    results = {
        "cells": [],
        "in_process": {},
        "gap": 0.0,
        "command": serve_args(args.model_uri, port, args.workers),
    }
    with running(results["command"], env=env, log=work / "serve.log", cwd=work,
                 health_url=f"http://127.0.0.1:{port}/ping", health_timeout=120):  # fmt: skip
        for size in args.sizes:
            frames = sample_frames(source, size, seed=size)
            bodies = [split_body(frame) for frame in frames]
            results["gap"] = max(results["gap"], max_log_px_gap(port, model, frames))
            results["in_process"][size] = in_process_cell(model, frames, args.requests)
            for concurrency in args.concurrency:
                cell = served_cell(port, bodies, size, args.requests, concurrency)
                results["cells"].append((size, concurrency, cell))
                print(size, concurrency, cell.summary(), len(cell.errors), flush=True)
        cases = payload_cases(source.head(3), served_row_limit(source.shape[1]))
        results["probes"] = probe_payloads(port, cases)
    return results


def setup_lines(args: argparse.Namespace, results: dict, provenance: str, load: tuple) -> list:
    """The report's header: how the numbers were made."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    return [
        "## Serving: `mlflow models serve` under a bounded local load",
        "",
        f"- command: `{shlex.join([sys.executable, *sys.argv])}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; code: {commit} plus "
        f"uncommitted work; load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f}",
        f"- machine: {os.cpu_count()} CPUs shared by client, server and in-process reference; "
        f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()} here, "
        f"OMP_NUM_THREADS={args.threads} in the server's environment",
        f"- model: `{args.model_uri}` ({provenance}), {args.dataset}, `train_vae_flow` config "
        f"`{json.dumps(CONFIGS[args.dataset])}`",
        f"- server: `{shlex.join(results['command'][1:])}` (uvicorn, {args.workers} worker(s))",
        f"- client: stdlib http.client, one keep-alive connection per thread, {args.requests} "
        f"timed requests per row after {WARMUP_REQUESTS} untimed, {BODIES_PER_SIZE} distinct "
        "`dataframe_split` bodies per size sent in turn; latency = send to last response byte",
        "- in-process: `mlflow.pyfunc.load_model(uri).predict(frame)` on the same rows, one "
        "call at a time (no JSON, no HTTP); the ratio compares every row with it",
        f"- served vs in-process scores: max |log_px difference| = {results['gap']:.3g}",
    ]


def table_lines(results: dict) -> list[str]:
    """The latency table and the payload table."""
    lines = ["", "| rows/request | client threads | requests | errors | p50 ms | p99 ms | mean ms "
             "| rows/s | in-process p50 ms | in-process p99 ms | in-process rows/s "
             "| served/in-process p50 |", "|---:" * 12 + "|"]  # fmt: skip
    for size, concurrency, cell in results["cells"]:
        served, local = cell.summary(), results["in_process"][size].summary()
        lines.append(
            f"| {size} | {concurrency} | {len(cell.latencies) + len(cell.errors)} "
            f"| {len(cell.errors)} | {served['p50']:.2f} | {served['p99']:.2f} "
            f"| {served['mean']:.2f} | {served['rows_per_s']:,.0f} | {local['p50']:.2f} "
            f"| {local['p99']:.2f} | {local['rows_per_s']:,.0f} "
            f"| {served['p50'] / local['p50']:.1f} |"
        )
    lines += ["", "| payload | expected | status | ok | seconds | message (start … end) |",
              "|---|---|---:|---|---:|---|"]  # fmt: skip
    for probe in results["probes"]:
        ok, message = "yes" if probe["ok"] else "**NO**", probe["message"].replace("|", "\\|")
        lines.append(f"| {probe['case']} | {probe['expected']} | {probe['status']} | {ok} "
                     f"| {probe['seconds']:.2f} | {message} |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> None:
    """Train or reuse the model, measure, write the report to --out."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    provenance = ensure_champion(args)
    load_start = os.getloadavg()[0]
    results = measure(args)
    load = (load_start, os.getloadavg()[0])
    text = "\n".join(setup_lines(args, results, provenance, load) + table_lines(results)) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = args.out.with_suffix(".tmp")
    staging.write_text(text)
    staging.replace(args.out)
    print(text)


if __name__ == "__main__":
    main()

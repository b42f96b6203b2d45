"""One `batch_score_flow` run in a fresh process, reporting its own memory (for platform_bench.py).

Usage (the parent sets the environment: bench MLflow store, PREFECT_HOME, quiet flags):
    python benchmarks/platform_child.py MODEL_URI INPUT OUTPUT THREADS

It imports everything, starts the Prefect temporary server with a trivial flow (the server is a
subprocess, so its memory is not this process's), records the RSS (the baseline), resets the
high-water mark (`clear_refs` 5), runs the flow, and prints one line `RESULT {json}` with the
baseline, the peak (VmHWM), the flow's wall time and the server subprocesses' own peaks.
VmHWM belongs to the process's address space, which exec replaces, so nothing is inherited
from the parent (unlike `ru_maxrss`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def status_mib(field: str, pid: str = "self") -> float:
    """A memory field (VmRSS, VmHWM, ...) of /proc/<pid>/status in MiB (0 if unreadable)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def server_peaks_mib() -> list[float]:
    """VmHWM of each process this one started (the Prefect temporary server and its workers)."""
    import psutil

    children = psutil.Process().children(recursive=True)
    return [round(status_mib("VmHWM", str(child.pid)), 1) for child in children]


def main(argv: list[str]) -> dict[str, float | int | list[float]]:
    """Run the flow once; return the memory and time figures."""
    model_uri, source, output, threads = argv[0], argv[1], argv[2], int(argv[3])
    import torch
    from prefect import flow

    from pipelines.score import batch_score_flow

    torch.set_num_threads(threads)

    @flow(name="bench-platform-warmup")
    def warmup() -> None:
        """Nothing: starts the temporary server before the measured run."""

    warmup()
    imports_peak = status_mib("VmHWM")
    baseline = status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    start = time.perf_counter()
    summary = batch_score_flow(model_uri, source, output, torch_threads=threads)
    wall = time.perf_counter() - start
    return {
        "rows": int(summary["rows"]),
        "anomalies": int(summary["anomalies"]),
        "wall_s": wall,
        "baseline_mib": baseline,
        "imports_peak_mib": imports_peak,
        "peak_mib": status_mib("VmHWM"),
        "server_peaks_mib": server_peaks_mib(),
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1:])), flush=True)

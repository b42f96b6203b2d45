"""Small pieces several benchmarks share: thread setup, progress lines, the report's header, its
markdown tables and writing it; and the likelihood-ratio detector of the novelty benchmarks.

Not a benchmark itself. Benchmarks run as scripts (`python benchmarks/NAME.py`), so their
folder is on `sys.path` and they import this module as `bench_common`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from anomaly.detector import VAEDetector

Result = TypeVar("Result")

# ../shared/data beside the repository (the layout CI and the dev machines have): the benchmarks'
# GENAD_DATA_DIR when none is set
DEFAULT_DATA_DIR = str(Path(__file__).resolve().parents[2] / "shared" / "data")


def base_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by `doc`'s first line, with the `--threads` option (torch
    threads, default 1) every benchmark takes first."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    return parser


def set_threads(threads: int, detail: str) -> None:
    """Set torch's thread count and print it, then `detail` (the run's size), on stdout."""
    torch.set_num_threads(threads)
    print(f"torch threads: {torch.get_num_threads()}; {detail}", flush=True)


def save_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` (folders created) through a temporary file renamed over it, so a
    crash leaves the old file or the new one, never half of one; print 'wrote PATH'."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(text)
    partial.replace(target)
    print(f"wrote {path}", flush=True)


def table_head(columns: Sequence[str]) -> list[str]:
    """A markdown table's header row and separator row for `columns`."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def ratio_detector(*, epochs: int, patience: int, k: int, seed: int, **options: Any) -> VAEDetector:
    """A VAEDetector with the likelihood-ratio correction, at most `epochs` epochs with early
    stopping after `patience`, IWAE K = `k`, bf16 scoring and random_state = `seed`; `options`
    are further detector parameters."""
    return VAEDetector(
        correction="likelihood_ratio",
        epochs=epochs,
        patience=patience,
        n_samples=k,
        precision="bf16",
        random_state=seed,
        **options,
    )


def stamp() -> str:
    """The wall-clock time for progress lines."""
    return datetime.datetime.now().strftime("%H:%M:%S")


def log(message: str) -> None:
    """A timestamped progress line on stdout."""
    print(f"[{stamp()}] {message}", flush=True)


def header_lines(title: str, wall_s: float) -> list[str]:
    """Section title, exact command, date, versions, torch threads, CPU count and wall time."""
    exe = sys.executable
    exe = os.path.relpath(exe) if exe.startswith(os.getcwd()) else exe
    return [
        f"### {title}",
        "",
        f"- command: `{shlex.join([exe, *sys.argv])}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"torch.get_num_threads() = {torch.get_num_threads()}, "
        f"{os.cpu_count()} logical CPUs, device cpu",
        f"- wall time: {wall_s / 60:.1f} min",
        "",
    ]


def write_report(path: Path | None, lines: list[str]) -> None:
    """Print the markdown and write it to `path` (folders created) when given."""
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        log(f"wrote {path}")


def run_benchmark(
    args: argparse.Namespace,
    work: Callable[[argparse.Namespace], Result],
    report: Callable[[Result, argparse.Namespace, float], list[str]],
) -> None:
    """Set torch's threads to `args.threads` and log them, run `work(args)`, then write
    `report(result, args, wall seconds since the threads were set)` to `args.out`."""
    torch.set_num_threads(args.threads)
    log(f"torch threads: {torch.get_num_threads()}")
    start = time.perf_counter()
    result = work(args)
    write_report(args.out, report(result, args, time.perf_counter() - start))


def replace_section(path: str | Path, section: str) -> None:
    """Replace the section of the markdown file `path` that starts with `section`'s first line
    (up to the next level-2 heading), or append `section` when there is none."""
    target = Path(path)
    text, heading = target.read_text(), section.splitlines()[0]
    if heading in text:
        head, _, tail = text.partition(heading)
        after = tail.find("\n## ")
        text = head.rstrip("\n") + "\n\n" + section + (tail[after:] if after >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    target.write_text(text)

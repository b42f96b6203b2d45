"""Crash-safe partitioned jobs: a work folder of part files, each with its own done record.

A batch job scores its partitions into part files kept in a work folder beside the output
(`work_folder`): `job.json` holds the job's fingerprint (model version, input identity,
partitioning, flag rule); `part-000007.parquet` is written atomically, then
`part-000007.done.json` records its rows, flagged count, size and SHA-256 (and those of the
part's `part-000007.rejected.csv` when bad rows are skipped), and the host and process that
wrote it. A partition is finished when its record exists and the part still has
that size and checksum.

After a crash (kill -9 included) the next run with the same fingerprint reuses the finished parts
and scores only the rest; a damaged part is scored again; a different fingerprint (another model
version, a changed input, other partitions) discards the folder. There is one record file per
partition, written by whichever process scored it, so workers never write a shared file. The
folder must be on storage every worker shares (one machine, or a shared file system).
Records survive a killed process; surviving a power cut would also need fsync, which is not done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomaly.atomic import write_json_atomic
from anomaly.batchio import Partition
from generative.checksums import sha256

JOB_FILE = "job.json"


def work_folder(output: Path) -> Path:
    """The work folder of the job writing `output`: hidden, beside it."""
    return output.with_name(f".{output.name}.genad-work")


def input_identity(path: Path) -> dict[str, Any]:
    """What identifies an input without reading it: a file's size and modification time, or a
    digest of a folder's (name, size, mtime) listing."""
    if path.is_dir():
        digest = hashlib.sha256()
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            stat = entry.stat()
            digest.update(f"{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return {"path": str(path), "listing_sha256": digest.hexdigest()}
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@dataclass(frozen=True)
class PartManifest:
    """The work folder of one job (see the module docstring)."""

    folder: Path

    @classmethod
    def open(cls, folder: Path, fingerprint: dict[str, Any]) -> tuple[PartManifest, bool]:
        """The job's folder, reused when its fingerprint matches (returns True), else created
        afresh (returns False); left-over temp files of killed writers are removed."""
        fingerprint = json.loads(json.dumps(fingerprint))  # compare as stored
        if folder.is_dir() and _read_json(folder / JOB_FILE) == fingerprint:
            for stale in folder.glob(".*"):
                stale.unlink(missing_ok=True)
            return cls(folder), True
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        write_json_atomic(fingerprint, folder / JOB_FILE)
        return cls(folder), False

    def part_path(self, partition: Partition) -> Path:
        """Where the partition's part file goes."""
        return self.folder / f"part-{partition.index:06d}.parquet"

    def rejected_path(self, partition: Partition) -> Path:
        """Where the partition's rejected-row report goes (jobs that skip bad rows)."""
        return self.folder / f"part-{partition.index:06d}.rejected.csv"

    def _record_path(self, partition: Partition) -> Path:
        return self.folder / f"part-{partition.index:06d}.done.json"

    def finished(self, partition: Partition) -> dict[str, Any] | None:
        """The partition's done record if its part is complete and intact, else None (and a
        damaged part and its record are removed, to be scored again)."""
        record = _read_json(self._record_path(partition))
        part = self.part_path(partition)
        if record is None:
            return None
        rows = partition.stop - partition.start
        rejected = self.rejected_path(partition)
        intact = (
            record.get("rows", 0) + record.get("rejected", 0) >= rows
            and _intact(part, record.get("bytes"), record.get("sha256"))
            and (
                "rejected_sha256" not in record
                or _intact(rejected, None, record["rejected_sha256"])
            )
        )
        if intact:
            return record
        for path in (self._record_path(partition), part, rejected):
            path.unlink(missing_ok=True)
        return None

    def record(self, partition: Partition, counts: dict[str, int]) -> dict[str, Any]:
        """Mark the partition finished: its part file's size and checksum, `counts`, and the
        writer's host and process id."""
        part, rejected = self.part_path(partition), self.rejected_path(partition)
        record = {
            **counts,
            "partition": partition.index,
            "part": part.name,
            "bytes": part.stat().st_size,
            "sha256": sha256(part),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        if rejected.is_file():
            record["rejected_sha256"] = sha256(rejected)
        write_json_atomic(record, self._record_path(partition))
        return record

    def discard(self) -> None:
        """Remove the work folder (after the job's outputs are in place, or on bad input)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _intact(path: Path, size: int | None, digest: str | None) -> bool:
    """Whether `path` is a file of `size` bytes (when given) with SHA-256 `digest`."""
    if not path.is_file() or (size is not None and path.stat().st_size != size):
        return False
    return sha256(path) == digest


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None

"""SHA-256 checksums of saved files, so a corrupt or truncated model or checkpoint is detected
with a clear error before anything is loaded from it.

A folder's `checksums.json` maps file names (relative to the folder) to their SHA-256. Writers
record the files they wrote; readers verify what is recorded. A folder without the file (saved
before checksums existed) is read unchecked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

CHECKSUM_FILE = "checksums.json"
CHUNK_BYTES = 1 << 20


class CorruptFileError(ValueError):
    """A saved file does not match its recorded checksum (corrupt, truncated or replaced)."""


def sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_checksums(folder: Path, names: Iterable[str]) -> None:
    """Add (or refresh) the checksums of `names` in the folder's checksums.json."""
    path = folder / CHECKSUM_FILE
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    recorded.update({name: sha256(folder / name) for name in names})
    path.write_text(json.dumps(recorded, indent=2, sort_keys=True))


def verify_checksums(folder: Path, names: Iterable[str] | None = None) -> None:
    """Raise CorruptFileError naming the first recorded file (of `names`, default all) whose
    SHA-256 differs or which is missing; nothing happens without a checksums.json."""
    path = folder / CHECKSUM_FILE
    if not path.is_file():
        return
    try:
        recorded: dict[str, str] = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CorruptFileError(
            f"{path} is not valid JSON ({error}): the folder is damaged"
        ) from None
    for name in recorded if names is None else [n for n in names if n in recorded]:
        target = folder / name
        if not target.is_file():
            raise CorruptFileError(f"{target} is missing (its checksum is recorded)")
        actual = sha256(target)
        if actual != recorded[name]:
            raise CorruptFileError(
                f"{target} is corrupt or truncated: SHA-256 {actual[:12]}... does not match the "
                f"recorded {recorded[name][:12]}...; it was not loaded. Save or download it again."
            )

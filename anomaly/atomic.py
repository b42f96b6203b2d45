"""Write files so that readers see either the old file or the complete new one, never a part."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from anomaly.errors import UserInputError

CREATE_DIRS_HINT = "pass --create-dirs (create_dirs=True) to have it created"


class OutputFolderError(UserInputError, FileNotFoundError):
    """The folder a named output goes into does not exist (or is not a folder)."""


def check_output_folder(path: str | os.PathLike, *, create: bool = False) -> Path:
    """The folder that output `path` goes into. A missing one (a mistyped path, say) is refused
    with an `OutputFolderError` naming it, as pandas and pyarrow do, unless `create`, which makes
    it and its parents. Flows call this before any work, so a refusal writes nothing."""
    folder = Path(path).expanduser().resolve().parent
    if folder.is_dir():
        return folder
    if folder.exists():
        raise OutputFolderError(f"output folder {folder} is not a folder (for {Path(path).name})")
    if not create:
        raise OutputFolderError(
            f"output folder {folder} does not exist (for {Path(path).name}): check the path, "
            f"or {CREATE_DIRS_HINT}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputFolderError(
            f"cannot create output folder {folder}: {error.strerror or error}"
        ) from error
    return folder


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success give it the usual permissions
    (0666 minus the umask, not mkstemp's 0600) and rename it over `path`; on error delete it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        os.chmod(staging, 0o666 & ~_umask())
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json_atomic(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write JSON to a temp file beside `path`, then rename it over `path`."""
    with atomic_file(path) as staging:
        staging.write_text(json.dumps(payload, indent=2, default=_json_default))
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

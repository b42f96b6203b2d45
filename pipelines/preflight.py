"""Checks made before any flow starts, so a machine that cannot run one gets a sentence, not
a server's tracebacks.

Without `PREFECT_API_URL`, every `genad` process runs its flows on a temporary Prefect server
whose sqlite database lives in `PREFECT_HOME`. Prefect creates that folder with a plain mkdir:
when its parent is missing (a fresh clone has no `.state/`), the server cannot open its
database and every flow dies after a 30-s timeout with "Timed out while attempting to connect
to ephemeral Prefect API server". `ensure_prefect_home` creates the folder with its parents and
says, in one line, what to do when it cannot. `step` turns a failure inside a multi-step job
(the demo) into one line naming the step, with the traceback kept in a file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path


class EnvironmentNotReadyError(RuntimeError):
    """The machine cannot run a flow yet; the message says why and what to do."""


def prefect_home() -> Path:
    """The folder Prefect keeps its settings and temporary server's database in."""
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def ensure_prefect_home() -> Path:
    """Create `PREFECT_HOME` (parents too) and check a file can be written there; with a
    Prefect server configured (`PREFECT_API_URL`) only settings live there, and a folder that
    cannot be made is left to Prefect. EnvironmentNotReadyError names the folder otherwise."""
    home = prefect_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as error:
        if os.environ.get("PREFECT_API_URL"):
            return home
        reason = error.strerror or type(error).__name__
        raise EnvironmentNotReadyError(
            f"Prefect's folder PREFECT_HOME={home} cannot be created or written ({reason}); "
            "point PREFECT_HOME at a writable folder, or set PREFECT_API_URL to a running "
            "Prefect server"
        ) from error
    return home


def hint_for(error: BaseException) -> str:
    """What to do about a failure whose cause is known, or ''."""
    text = str(error)
    if "ephemeral Prefect API server" in text:
        return (
            f"Prefect's temporary server did not start: check that {prefect_home()} is "
            "writable and has free space, or set PREFECT_API_URL to a running Prefect server"
        )
    return ""


class StepFailedError(RuntimeError):
    """A step of a multi-step job failed; the message names the step, the cause, what to do
    (when known) and the file holding the traceback."""


@contextlib.contextmanager
def step(name: str, log: Path) -> Iterator[None]:
    """Run a step of a job; on an error write its traceback to `log` and raise
    StepFailedError with one line that says which step failed and why."""
    try:
        yield
    except Exception as error:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(error)))
        hint = hint_for(error)
        raise StepFailedError(
            f"{name} failed: {type(error).__name__}: {error}"
            + (f"; {hint}" if hint else "")
            + f" (traceback in {log})"
        ) from error

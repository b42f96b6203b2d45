"""Retry policy for IO tasks: retry what may pass (a blip of the network, the tracking server,
the file system), never bad input, which fails the same way every time."""

from __future__ import annotations

from typing import Any

# Bad input: missing files, unknown models or aliases, malformed data (the genad errors for
# these derive from FileNotFoundError, LookupError or ValueError).
PERMANENT_ERRORS = (FileNotFoundError, LookupError, ValueError)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: False (fail now) when the task failed on bad input."""
    return not isinstance(state.data, PERMANENT_ERRORS)


def io_task_options(retries: int = 2, delay: float = 2.0) -> dict[str, Any]:
    """Options for a `@task` that does IO: retries for transient errors only."""
    return {"retries": retries, "retry_delay_seconds": delay, "retry_condition_fn": retry_transient}

"""IO tasks retry transient failures but fail at once on bad input (real Prefect tasks)."""

from __future__ import annotations

import pytest
from prefect import flow, task

from pipelines.retries import io_task_options


def attempts_until_failure(error: Exception) -> int:
    calls = []

    @task(**io_task_options(2, 0))
    def flaky() -> None:
        calls.append(1)
        raise error

    @flow
    def run() -> None:
        flaky()

    with pytest.raises(type(error)):
        run()
    return len(calls)


def test_transient_errors_are_retried(prefect_harness):
    assert attempts_until_failure(ConnectionError("tracking server blinked")) == 3


@pytest.mark.parametrize(
    "error", [ValueError("bad column"), FileNotFoundError("no.csv"), LookupError("no model")]
)
def test_bad_input_is_not_retried(prefect_harness, error):
    assert attempts_until_failure(error) == 1

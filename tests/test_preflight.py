"""A fresh machine: Prefect's home folder is created, a folder that cannot be is reported in one
line, and a failing step of a multi-step job says which step failed and where its traceback is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.preflight import (
    EnvironmentNotReadyError,
    StepFailedError,
    ensure_prefect_home,
    step,
)

REPO = Path(__file__).resolve().parents[1]


def genad(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m pipelines.cli ARGS` in a child with exactly `env` added to a clean copy."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    environment.update(env, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=environment, cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_missing_parents_of_prefect_home_are_created(tmp_path, monkeypatch):
    home = tmp_path / "fresh-clone" / ".state" / "prefect"
    monkeypatch.setenv("PREFECT_HOME", str(home))
    assert ensure_prefect_home() == home and home.is_dir()


def test_an_unwritable_prefect_home_is_one_line_naming_it(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("PREFECT_HOME", str(blocker / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(EnvironmentNotReadyError, match="PREFECT_HOME=.*a-file/prefect"):
        ensure_prefect_home()
    # The CLI says it in one line, before Prefect is imported (no server, no tracebacks).
    result = genad("demo", env={"PREFECT_HOME": str(blocker / "prefect")}, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("genad demo: error: Prefect's folder PREFECT_HOME=")
    assert "writable folder" in lines[0] and "PREFECT_API_URL" in lines[0]


def test_a_failing_step_names_itself_and_keeps_the_traceback(tmp_path):
    log = tmp_path / "logs" / "error.log"
    with pytest.raises(StepFailedError) as failed, step("batch scoring", log):
        raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
    message = str(failed.value)
    assert message.startswith("batch scoring failed: RuntimeError: Timed out")
    assert "temporary server did not start" in message and f"(traceback in {log})" in message
    assert "\n" not in message
    assert 'raise RuntimeError("Timed out' in log.read_text()
    with step("nothing", log):  # no error: nothing raised
        pass

"""Helpers for tests that start real servers (MLflow, Prefect) as child processes.

Every child runs in its own process group (a new session), so stopping it stops the workers
it spawned too: SIGTERM to the group, then SIGKILL to whatever is left after a grace period.
Output goes to a log file, whose tail is shown when a server fails to come up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
QUIET_ENV = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(
    updates: Mapping[str, str] | None = None, remove: Sequence[str] = ()
) -> dict[str, str]:
    """This process's environment without the variables in `remove`, quiet (no telemetry),
    with the venv's scripts first on PATH, then `updates` (which win over all of that)."""
    env = {name: value for name, value in os.environ.items() if name not in set(remove)}
    env.update(QUIET_ENV)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env.update(updates or {})
    return env


class Server:
    """A child process in its own process group, logging to a file."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path):
        self.args = [str(a) for a in args]
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.process = subprocess.Popen(
                self.args,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            self._log_file.close()
            raise
        self.pgid = self.process.pid  # the session leader's pid is the group id

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the child's output."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float = 60.0, *, interval: float = 0.25) -> float:
        """Poll GET `url` until it answers 200; return the seconds waited. Fails early when
        the child exits, and with the log tail on timeout."""
        start = time.monotonic()
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"{self.args[:4]} exited with status {code} before {url} was healthy; "
                    f"log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - start
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() - start > timeout:
                raise TimeoutError(
                    f"{url} not healthy after {timeout:.0f} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(interval)

    def group_alive(self) -> bool:
        """Whether any process of the child's group is still running (the leader is reaped
        first, so a finished leader does not count as a member)."""
        self.process.poll()
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a member we may not signal: still there
            return True
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the whole group; SIGKILL it if anything is left after `timeout` seconds."""
        try:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not self.group_alive():
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=5)
                kill_deadline = time.monotonic() + 5
                while self.group_alive() and time.monotonic() < kill_deadline:
                    time.sleep(0.1)
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=1)
            self._log_file.close()


@contextlib.contextmanager
def running(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    cwd: Path = REPO_ROOT,
    health_url: str | None = None,
    health_timeout: float = 60.0,
    stop_timeout: float = 15.0,
) -> Iterator[Server]:
    """Start `args`, wait until `health_url` answers 200 (when given), yield the server, and
    stop its whole process group afterwards, also when the start or the test fails."""
    server = Server(args, env, log, cwd)
    try:
        if health_url is not None:
            server.wait_http(health_url, health_timeout)
        yield server
    finally:
        server.stop(stop_timeout)


# Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, which fixes glibc's mmap
# threshold too: every large tensor is then mmapped and unmapped afresh, and torch's matmuls ran
# 2x slower in the workers (docs/scaling.md). This config leaves glibc at its defaults.
DASK_WORKER_CONFIG = """distributed:
  nanny:
    pre-spawn-environ:
      MALLOC_TRIM_THRESHOLD_: null
"""


@contextlib.contextmanager
def dask_cluster(
    n_workers: int, *, env: Mapping[str, str], log_dir: Path, timeout: float = 90.0
) -> Iterator[str]:
    """A `dask scheduler` and `n_workers` single-threaded `dask worker` processes on 127.0.0.1,
    each in its own process group, configured as docs/scaling.md says (DASK_WORKER_CONFIG);
    yields the scheduler address once every worker has joined and stops the workers, then the
    scheduler."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "dask.yaml").write_text(DASK_WORKER_CONFIG)
    env = {**env, "DASK_CONFIG": str(log_dir)}
    no_dashboard = ("--dashboard-address", ":0")
    scheduler = ["dask", "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]]
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            running([*scheduler, *no_dashboard], env=env, log=log_dir / "scheduler.log")
        )
        for index in range(n_workers):
            worker = ["dask", "worker", address, "--nthreads", "1", "--host", "127.0.0.1"]
            log = log_dir / f"worker-{index}.log"
            stack.enter_context(
                running([*worker, "--name", f"w{index}", *no_dashboard], env=env, log=log)
            )
        with Client(address, timeout=timeout) as client:
            client.wait_for_workers(n_workers, timeout=timeout)
        yield address


def run_consumer_script(script: str, args: Sequence[str], cwd: Path, **env: str) -> dict:
    """Run `script` in an isolated Python (`-I`: the repository is not importable, no
    PYTHONPATH) with `env` added, and return the JSON it prints after "RESULT"."""
    child = {**os.environ, **env}
    child.pop("PYTHONPATH", None)
    completed = subprocess.run(
        [sys.executable, "-I", "-c", script, *args],
        cwd=cwd, env=child, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])

"""Prefect flows, the MLflow glue and the `genad` CLI.

Importing this package sets offline-quiet defaults (no telemetry), gives Prefect's temporary
server time to start on a busy machine, and keeps Prefect's state
in the repository's ignored `.state/prefect` unless the environment says otherwise, creating
that folder (a fresh clone has no `.state/`; see `pipelines.preflight`).
"""

import contextlib
import os
from pathlib import Path

_QUIET = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PREFECT_HOME": str(Path(__file__).resolve().parents[1] / ".state" / "prefect"),
    # Prefect's 20 s is too short for a fresh temporary server's database on a busy 2-core
    # machine (seen: timed out while 3 other jobs ran).
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
for _name, _value in _QUIET.items():
    os.environ.setdefault(_name, _value)

from pipelines.preflight import EnvironmentNotReadyError, ensure_prefect_home  # noqa: E402

with contextlib.suppress(EnvironmentNotReadyError):  # the CLI reports it before any flow runs
    ensure_prefect_home()

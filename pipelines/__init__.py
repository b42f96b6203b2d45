"""Prefect flows, the MLflow glue and the `genad` CLI.

Importing this package sets offline-quiet defaults (no telemetry) and keeps Prefect's state
in the repository's ignored `.state/prefect` unless the environment says otherwise.
"""

import os
from pathlib import Path

_QUIET = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PREFECT_HOME": str(Path(__file__).resolve().parents[1] / ".state" / "prefect"),
}
for _name, _value in _QUIET.items():
    os.environ.setdefault(_name, _value)

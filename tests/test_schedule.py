"""`genad schedule score` against a real Prefect server: the deployment and its cron schedule
exist, the server creates the scheduled runs, and a run on demand scores the file."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC
from pathlib import Path

import pandas as pd
import pytest
from servers import child_env, free_port, running

DEPLOYMENT = "batch-score/test-nightly"
CRON = "0 2 * * *"
PREFECT_CHILD_SETTINGS = (  # never inherited: each child gets exactly the settings we give
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_PROFILE",
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`prefect server start` on a free port, with its database under a temporary
    PREFECT_HOME; its API URL."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        port,
    ]
    env = child_env({"PREFECT_HOME": str(home)}, remove=PREFECT_CHILD_SETTINGS)
    api = f"http://127.0.0.1:{port}/api"
    log = home / "server.log"
    with running(args, env=env, log=log, health_url=f"{api}/health", health_timeout=90):
        yield api


@pytest.fixture
def api_settings(prefect_api: str):
    """This process's Prefect client pointed at the test server, for this test only."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        yield prefect_api


def wait_for(what: str, probe, timeout: float, *, alive=None, interval: float = 0.5):
    """Call `probe` until it returns something truthy; fail after `timeout` seconds, or as soon
    as `alive()` says the process it depends on has died."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not seen after {timeout:.0f} s")
        time.sleep(interval)


def schedule_command(champion: dict, csv: Path, output: Path) -> list:
    return [
        sys.executable, "-m", "pipelines.cli", "schedule", "score",
        "--cron", CRON, "--name", "test-nightly", "--model-uri", champion["uri"],
        "--input", csv, "--output", output,
    ]  # fmt: skip


def serving_env(api_url: str, mlflow_store: str, home: Path) -> dict[str, str]:
    return child_env(
        {
            "PREFECT_HOME": str(home),  # not the server's: no shared database
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",  # never a temporary server of its own
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "MLFLOW_TRACKING_URI": mlflow_store,
            "MLFLOW_REGISTRY_URI": mlflow_store,
        },
        remove=PREFECT_CHILD_SETTINGS,
    )


def scheduled_runs(client, deployment_id) -> list:
    """The deployment's runs still in the SCHEDULED state."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
        ),
        limit=10,
    )


def check_deployment(found, champion: dict, csv: Path) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    assert [s.active for s in found.schedules] == [True]
    schedule = found.schedules[0].schedule
    assert isinstance(schedule, CronSchedule) and schedule.cron == CRON
    assert schedule.timezone == "UTC"
    assert found.parameters["model_uri"] == champion["uri"]
    assert found.parameters["input"] == str(csv.resolve())


def check_scored(output: Path, csv: Path, champion: dict) -> None:
    scored = pd.read_parquet(output)
    rows = len(pd.read_csv(csv))
    assert len(scored) == rows
    assert scored["row_id"].tolist() == list(range(rows))
    assert (scored["model_name"] == "tabular-test").all()
    summary = json.loads(output.with_name(output.name + ".summary.json").read_text())
    assert summary["rows"] == rows and summary["model_version"] == str(champion["version"])


def test_scheduled_scoring_deployment_runs_on_the_server(
    champion, mlflow_store: str, api_settings: str, tmp_path: Path
):
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    csv = Path(champion["csv"])
    output = tmp_path / "out.parquet"
    args = schedule_command(champion, csv, output)
    env = serving_env(api_settings, mlflow_store, tmp_path / "client-home")
    with (
        running(args, env=env, log=tmp_path / "serve.log") as serving,
        get_client(sync_client=True) as client,
    ):

        def serve_alive() -> None:
            if serving.process.poll() is not None:
                raise RuntimeError(f"genad schedule score exited:\n{serving.log_tail()}")

        def deployment():
            try:
                return client.read_deployment_by_name(DEPLOYMENT)
            except ObjectNotFound:
                return None

        found = wait_for("deployment " + DEPLOYMENT, deployment, 90, alive=serve_alive)
        check_deployment(found, champion, csv)
        runs = wait_for(
            "scheduled runs", lambda: scheduled_runs(client, found.id), 30, alive=serve_alive
        )
        for run in runs:
            start = run.expected_start_time.astimezone(UTC)
            assert (start.hour, start.minute, start.second) == (2, 0, 0), start

        flow_run = run_deployment(DEPLOYMENT, timeout=180, poll_interval=1)
        assert flow_run.deployment_id == found.id
        assert flow_run.state is not None and flow_run.state.is_completed(), (
            flow_run.state,
            serving.log_tail(),
        )
    check_scored(output, csv, champion)

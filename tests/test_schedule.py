"""`genad schedule score`, `genad backfill score` and `genad runs list` against a real Prefect
server: the deployment and its cron schedule exist, the server creates the scheduled runs, a
run on demand scores its interval's file, a backfill of three intervals creates three runs at
the right scheduled times (oldest first) and three outputs, a second backfill skips them, the
planted shift raises the alarm event, and the history lists the four intervals."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import subprocess
import sys
import threading
import time
from datetime import UTC
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_tabular
from servers import child_env, free_port, running

DEPLOYMENT = "interval-score/test-nightly"
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


def schedule_command(champion: dict, root: Path) -> list:
    return [
        sys.executable, "-m", "pipelines.cli", "schedule", "score",
        "--cron", CRON, "--name", "test-nightly", "--model-uri", champion["uri"],
        "--input", root / "data" / "{date}.csv", "--output", root / "scores" / "{date}.parquet",
        "--create-dirs",
    ]  # fmt: skip


def write_interval(root: Path, day: str, shift: float = 0.0) -> int:
    """The input of one interval: 200 normal rows, feature f0 shifted by `shift`."""
    frame = make_tabular(n=200, anomalies=0, seed=len(day) + int(day[-2:])).drop(columns="label")
    frame["f0"] += shift
    (root / "data").mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / "data" / f"{day}.csv", index=False)
    return len(frame)


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


def check_deployment(found, champion: dict, root: Path) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    assert [s.active for s in found.schedules] == [True]
    schedule = found.schedules[0].schedule
    assert isinstance(schedule, CronSchedule) and schedule.cron == CRON
    assert schedule.timezone == "UTC"
    assert found.parameters["model_uri"] == champion["uri"]
    assert found.parameters["input"] == str(root / "data" / "{date}.csv")
    assert found.parameters["deployment"] == "test-nightly"


def check_scored(root: Path, day: str, rows: int, champion: dict) -> dict:
    output = root / "scores" / f"{day}.parquet"
    scored = pd.read_parquet(output)
    assert len(scored) == rows
    assert scored["row_id"].tolist() == list(range(rows))
    assert (scored["model_name"] == "tabular-test").all()
    summary = json.loads(output.with_name(output.name + ".summary.json").read_text())
    assert summary["rows"] == rows and summary["model_version"] == str(champion["version"])
    assert summary["interval"] == f"{day}T02:00:00+00:00"
    return summary


def genad(args: list, env: dict, log: Path) -> subprocess.CompletedProcess:
    """Run the genad command line in a child with the serving environment."""
    command = [sys.executable, "-m", "pipelines.cli", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    log.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@contextlib.contextmanager
def webhook_receiver():
    """An HTTP server on 127.0.0.1 that keeps the JSON bodies POSTed to it; (url, bodies)."""
    received: list = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the handler's required name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alarms", received
    finally:
        server.shutdown()
        server.server_close()


def alarm_events(client) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter

    wanted = EventFilter(event=EventNameFilter(name=["genad.scoring.alarm"]))
    return client.read_events(wanted, limit=50).events  # the server refuses the default 100


@pytest.mark.slow  # about 100 s: a server, the serving process, five runs, four CLI calls
def test_scheduled_scoring_deployment_runs_and_backfills_on_the_server(
    champion, mlflow_store: str, api_settings: str, tmp_path: Path
):
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    root = tmp_path / "site"
    rows = {day: write_interval(root, day) for day in ("2026-10-15", "2026-11-01", "2026-11-02")}
    rows["2026-11-03"] = write_interval(root, "2026-11-03", shift=3.0)
    env = serving_env(api_settings, mlflow_store, tmp_path / "client-home")
    with (
        running(schedule_command(champion, root), env=env, log=tmp_path / "serve.log") as serving,
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
        check_deployment(found, champion, root)
        runs = wait_for(
            "scheduled runs", lambda: scheduled_runs(client, found.id), 30, alive=serve_alive
        )
        for run in runs:
            start = run.expected_start_time.astimezone(UTC)
            assert (start.hour, start.minute, start.second) == (2, 0, 0), start

        with webhook_receiver() as (url, received):
            forwarded = genad(["schedule", "alarm-webhook", "--url", url], env, tmp_path / "w")
            assert "posts the alarms of every deployment" in forwarded.stdout
            check_on_demand_and_backfill(root, rows, champion, env, tmp_path)
            posted = wait_for("the alarm's webhook call", lambda: list(received), 90)
        assert [body["interval"] for body in posted] == ["2026-11-03T02:00:00+00:00"]
        assert posted[0]["deployment"] == "test-nightly" and posted[0]["rows"] == 200
        assert posted[0]["reasons"] and posted[0]["shift_p_value"] < 0.005
        check_backfilled_runs(client, found.id)
        events = wait_for("the alarm event", lambda: alarm_events(client), 60)
        assert [e.payload["interval"] for e in events] == ["2026-11-03T02:00:00+00:00"]
        assert events[0].resource["prefect.resource.name"] == "test-nightly"
    listed = genad(["runs", "list", "--deployment", "test-nightly", "--json"], env, tmp_path / "l")
    intervals = json.loads(listed.stdout)
    assert [row["interval"][:10] for row in intervals] == sorted(rows, reverse=True)
    assert [row["alarm"] for row in intervals] == [True, False, False, False]


def check_on_demand_and_backfill(root: Path, rows: dict, champion: dict, env: dict, tmp_path):
    """A run on demand at a given scheduled time; a backfill of three days, then again."""
    from prefect.deployments import run_deployment

    on_demand = dt.datetime(2026, 10, 15, 2, 0, tzinfo=UTC)
    flow_run = run_deployment(DEPLOYMENT, timeout=180, poll_interval=1, scheduled_time=on_demand)
    assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
    check_scored(root, "2026-10-15", rows["2026-10-15"], champion)
    backfill = ["backfill", "score", "--deployment", "test-nightly"]
    backfill += ["--from", "2026-11-01", "--to", "2026-11-03"]
    first = genad([*backfill, "--wait", "--timeout", "300"], env, tmp_path / "bf1.log")
    assert "3 runs created, 0 intervals skipped" in first.stdout, first.stdout
    summaries = {day: check_scored(root, day, rows[day], champion) for day in rows}
    assert [summaries[d]["alarm"]["fired"] for d in sorted(rows)] == [False] * 3 + [True]
    second = genad(backfill, env, tmp_path / "bf2.log")
    assert "0 runs created, 3 intervals skipped" in second.stdout, second.stdout


def check_backfilled_runs(client, deployment_id) -> None:
    """Three backfill runs, completed, at 02:00 of each day, started oldest first."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterTags,
    )

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["backfill"])),
    )
    runs = sorted(runs, key=lambda run: run.expected_start_time)
    expected = [dt.datetime(2026, 11, day, 2, 0, tzinfo=UTC) for day in (1, 2, 3)]
    assert [run.expected_start_time for run in runs] == expected
    assert all(run.state.is_completed() for run in runs)
    starts = [run.start_time for run in runs]
    assert starts == sorted(starts), starts

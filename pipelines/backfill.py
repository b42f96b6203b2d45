"""Backfill a scheduled-scoring deployment: one run per cron interval of a date range.

`backfill` reads the deployment's cron schedule from the Prefect server, lists the times the
server itself would have scheduled between the two bounds (Prefect's own `CronSchedule`, so
time zones and daylight saving agree), and creates one flow run per time, oldest first, each
in a Scheduled state at its interval's time: the run's `scheduled_start_time` is the interval,
so its templates name that interval's input and output. The process serving the deployment
(`genad schedule score`) picks the runs up at once, since their times have passed.

An interval is skipped when its output's summary exists (scored before) or when a run of the
deployment at that time is already scheduled, pending or running; `force` creates it anyway.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

from prefect import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound
from prefect.server.schemas.schedules import CronSchedule as ServerCronSchedule
from prefect.states import Scheduled

from anomaly.errors import ConfigError, UserInputError
from anomaly.intervals import fill_template, local_time
from pipelines.schedule import FLOW_NAME
from pipelines.score import summary_path

MAX_INTERVALS = 1000  # Prefect's CronSchedule looks at most this many dates ahead
QUEUED = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]


class DeploymentNotFoundError(UserInputError, LookupError):
    """No deployment of that name on the Prefect server."""


def parse_bound(text: str, timezone: str, *, end: bool) -> dt.datetime:
    """A --from/--to bound: a date (the day's start, or for `end` its last microsecond) or an
    ISO time; a time without an offset is in the schedule's `timezone`."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as error:
        raise ConfigError(f"{text!r} is not a date (2026-12-01) or ISO time") from error
    if end and len(text) <= len("2026-12-01"):
        parsed += dt.timedelta(days=1, microseconds=-1)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=local_time(dt.datetime.now(dt.UTC), timezone).tzinfo)
    return parsed


def interval_times(schedule: CronSchedule, start: dt.datetime, end: dt.datetime) -> list:
    """The times `schedule` fires in [start, end], oldest first, as the server computes them."""
    if end < start:
        raise ConfigError(f"--to ({end.isoformat()}) is before --from ({start.isoformat()})")
    server = ServerCronSchedule(
        cron=schedule.cron, timezone=schedule.timezone, day_or=schedule.day_or
    )
    times = asyncio.run(server.get_dates(n=MAX_INTERVALS + 1, start=start, end=end))
    if len(times) > MAX_INTERVALS:
        raise ConfigError(
            f"more than {MAX_INTERVALS} intervals of {schedule.cron!r} between "
            f"{start.isoformat()} and {end.isoformat()}: backfill a shorter range at a time"
        )
    return times


def find_deployment(client: Any, name: str) -> Any:
    """The deployment `name` ("flow/deployment", or a deployment of the interval flow)."""
    full = name if "/" in name else f"{FLOW_NAME}/{name}"
    try:
        return client.read_deployment_by_name(full)
    except ObjectNotFound as error:
        raise DeploymentNotFoundError(
            f"no deployment {full!r} on the Prefect server: start it with genad schedule score"
        ) from error


def cron_schedule(deployment: Any) -> CronSchedule:
    """The deployment's (first active) cron schedule; ConfigError when it has none."""
    for item in deployment.schedules:
        if item.active and isinstance(item.schedule, CronSchedule):
            return item.schedule
    raise ConfigError(f"deployment {deployment.name!r} has no active cron schedule to backfill")


def queued_times(client: Any, deployment: Any, start: dt.datetime, end: dt.datetime) -> set:
    """The expected start times of the deployment's runs that are scheduled, pending or running
    in [start, end]."""
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=QUEUED)),
            expected_start_time=FlowRunFilterExpectedStartTime(after_=start, before_=end),
        ),
    )
    return {run.expected_start_time for run in runs}


def backfill(
    deployment_name: str, start: str, end: str, *, force: bool = False
) -> list[dict[str, Any]]:
    """Create the deployment's runs for every interval of [start, end] (see the module
    docstring); one row per interval: its time, "created" or why it was skipped, the run id."""
    with get_client(sync_client=True) as client:
        deployment = find_deployment(client, deployment_name)
        schedule = cron_schedule(deployment)
        timezone = schedule.timezone or "UTC"
        first = parse_bound(start, timezone, end=False)
        last = parse_bound(end, timezone, end=True)
        times = interval_times(schedule, first, last)
        queued = set() if force else queued_times(client, deployment, first, last)
        output = deployment.parameters["output"]
        rows = []
        for when in times:
            local = local_time(when, timezone)
            row = {"interval": local.isoformat(), "run_id": None}
            scored = summary_path(Path(fill_template(output, local)))
            if not force and scored.is_file():
                rows.append({**row, "action": f"skipped: scored ({scored.name} exists)"})
            elif when in queued:
                rows.append({**row, "action": "skipped: a run is already queued"})
            else:
                run = client.create_flow_run_from_deployment(
                    deployment.id,
                    state=Scheduled(scheduled_time=when),
                    name=f"backfill-{local:%Y%m%dT%H%M%S}",
                    tags=["backfill"],
                )
                rows.append({**row, "action": "created", "run_id": str(run.id)})
    return rows


def wait_for_runs(run_ids: list[str], timeout: float, poll: float = 2.0) -> dict[str, str]:
    """Wait until every run is in a final state; each run's state name. TimeoutError naming
    the runs still going after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    final: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        while True:
            for run_id in run_ids:
                if run_id not in final:
                    state = client.read_flow_run(run_id).state
                    if state is not None and state.is_final():
                        final[run_id] = state.name
            if len(final) == len(run_ids):
                return final
            if time.monotonic() > deadline:
                going = [r for r in run_ids if r not in final]
                raise TimeoutError(f"{len(going)} backfill runs not finished: {going}")
            time.sleep(poll)

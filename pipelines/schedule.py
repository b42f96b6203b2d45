"""Scheduled scoring: serve `interval_score_flow` as a Prefect deployment with a cron schedule.

Schedules run only against a real Prefect server (`prefect server start`, PREFECT_API_URL set):
the ephemeral server of a plain Python process does not create scheduled runs.
"""

from __future__ import annotations

from typing import Any

from prefect.schedules import Cron

from pipelines.interval import interval_score_flow

FLOW_NAME = "interval-score"


def serve_scoring(
    name: str, cron: str, parameters: dict[str, Any], *, timezone: str = "UTC", limit: int = 1
) -> None:
    """Serve the deployment `interval-score/<name>` until interrupted; runs are created by the
    server at each `cron` time (and on demand through the API, `prefect deployment run` or
    `genad backfill score`); at most `limit` run at once, the earliest scheduled first."""
    interval_score_flow.serve(
        name=name,
        schedule=Cron(cron, timezone=timezone),
        parameters=parameters,
        description=f"score {parameters.get('input')} with {parameters.get('model_uri')}",
        tags=["genad", "scoring"],
        limit=limit,
    )

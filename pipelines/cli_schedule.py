"""The scheduled-scoring commands of `genad`: `schedule score` (serve the deployment),
`schedule alarm-webhook` (forward alarms), `backfill score` (runs for past intervals) and
`runs list` (the deployment's history).
docs/operations.md is the operator's page."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anomaly.atomic import check_output_folder
from anomaly.errors import UserInputError, user_settings

LIST_COLUMNS = ("interval", "state", "rows", "flagged", "anomaly_rate", "alarm", "model_version")


def add_parsers(commands: Any, batch_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
    """`schedule score` (with the `batch_arguments` `score` has too), `schedule alarm-webhook`,
    `backfill score` and `runs list`."""
    schedule = commands.add_parser("schedule", help="scheduled jobs").add_subparsers(
        dest="job", required=True
    )
    scheduled = schedule.add_parser("score", help=cmd_schedule_score.__doc__)
    _schedule_arguments(scheduled)
    batch_arguments(scheduled)
    scheduled.set_defaults(handler=cmd_schedule_score)
    forward = schedule.add_parser("alarm-webhook", help=cmd_schedule_alarm_webhook.__doc__)
    forward.add_argument("--url", required=True, help="the webhook every alarm is posted to")
    forward.add_argument("--deployment", default=None, help="only this deployment's alarms")
    forward.add_argument("--name", default="genad-alarms", help="the automation's name")
    forward.set_defaults(handler=cmd_schedule_alarm_webhook)

    backfill = commands.add_parser("backfill", help="runs for past intervals").add_subparsers(
        dest="job", required=True
    )
    past = backfill.add_parser("score", help=cmd_backfill_score.__doc__)
    past.add_argument("--deployment", required=True, help="deployment name (e.g. nightly)")
    past.add_argument("--from", dest="start", required=True, help="first day (or ISO time)")
    past.add_argument("--to", dest="end", required=True, help="last day, included (or ISO time)")
    past.add_argument("--force", action="store_true", help="also re-run intervals scored before")
    past.add_argument("--wait", action="store_true", help="wait for the runs and report them")
    past.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits")
    past.set_defaults(handler=cmd_backfill_score)

    runs = commands.add_parser("runs", help="scheduled scoring history").add_subparsers(
        dest="action", required=True
    )
    listing = runs.add_parser("list", help=cmd_runs_list.__doc__)
    listing.add_argument("--deployment", required=True, help="deployment name (e.g. nightly)")
    listing.add_argument("--last", type=int, default=10, help="how many intervals (newest first)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_runs_list)


def _schedule_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines.interval import ON_MISSING

    parser.add_argument("--model-uri", required=True, help="e.g. models:/NAME@champion")
    parser.add_argument(
        "--input", required=True,
        help="input path or template: {date}, {datetime}, {%%Y/%%m/%%d}; may be a glob",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="Parquet output path or template")
    parser.add_argument(
        "--create-dirs", action="store_true",
        help="let the runs create the output's folder if it does not exist (else refused now)",
    )  # fmt: skip
    parser.add_argument("--cron", required=True, help='e.g. "0 2 * * *"')
    parser.add_argument("--timezone", default="UTC", help="of the cron and the templates")
    parser.add_argument("--name", default="nightly", help="deployment name")
    parser.add_argument(
        "--on-missing", choices=ON_MISSING, default="skip",
        help="a run whose input is missing: skip (state Skipped) or fail (InputMissing)",
    )  # fmt: skip
    parser.add_argument(
        "--alarm-level", type=float, default=0.01,
        help="false-alarm probability of a batch of normal rows",
    )  # fmt: skip
    parser.add_argument(
        "--alarm-rate", type=float, default=None,
        help="p-value level whose flag count is tested (default: the flag level)",
    )  # fmt: skip
    parser.add_argument(
        "--concurrency", type=int, default=1, help="runs at once (1: oldest interval first)"
    )


def schedule_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The interval flow's parameters, checked before the deployment is served."""
    from anomaly.base import check_flag_level
    from anomaly.intervals import output_root
    from pipelines.interval import check_interval_options

    with user_settings():
        check_interval_options(
            args.input, args.output, args.timezone, args.on_missing, args.alarm_level
        )
        if args.flag_level is not None:
            check_flag_level(args.flag_level)
        if args.alarm_rate is not None and not 0 < args.alarm_rate < 1:
            raise ValueError(f"--alarm-rate must be in (0, 1), got {args.alarm_rate}")
        if args.concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, got {args.concurrency}")
    output = str(Path(args.output).expanduser().absolute())
    if not args.create_dirs:  # a mistyped folder is refused now; the runs make the ones below
        check_output_folder(output_root(output) / "output")
    return {
        "model_uri": args.model_uri,
        "input": str(Path(args.input).expanduser().absolute()),
        "output": output,
        "deployment": args.name,
        "timezone": args.timezone,
        "on_missing": args.on_missing,
        "alarm_level": args.alarm_level,
        "alarm_rate": args.alarm_rate,
        "rows_per_partition": args.rows_per_partition,
        "chunk_rows": args.chunk_rows,
        "flag_rule": args.flag_rule,
        "flag_level": args.flag_level,
        "bad_rows": args.bad_rows,
    }


def cmd_schedule_score(args: argparse.Namespace) -> int:
    """Serve interval scoring as a Prefect deployment on a cron schedule (needs a Prefect
    server): each run scores the input its interval's templates name."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_URL

    from pipelines.schedule import serve_scoring

    parameters = schedule_parameters(args)  # first: a bad time zone is named as such
    try:
        CronSchedule(cron=args.cron, timezone=args.timezone)
    except ValueError as error:
        raise UserInputError(f"--cron {args.cron!r} is not a valid cron expression") from error
    if not PREFECT_API_URL.value():
        raise UserInputError(
            "schedules run only on a real Prefect server: start one (prefect server start) "
            "and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
        )
    serve_scoring(args.name, args.cron, parameters, timezone=args.timezone, limit=args.concurrency)
    return 0


def cmd_schedule_alarm_webhook(args: argparse.Namespace) -> int:
    """Create a Prefect automation that posts every scoring alarm to a webhook (needs a
    Prefect server)."""
    from prefect.settings import PREFECT_API_URL

    from pipelines.alarms import forward_alarms

    if not PREFECT_API_URL.value():
        raise UserInputError("automations live on a Prefect server: set PREFECT_API_URL")
    if not args.url.startswith(("http://", "https://")):
        raise UserInputError(f"--url {args.url!r} is not an http(s) URL")
    automation = forward_alarms(args.url, deployment=args.deployment, name=args.name)
    scope = f"deployment {args.deployment!r}" if args.deployment else "every deployment"
    print(f"automation {args.name} ({automation}) posts the alarms of {scope} to {args.url}")
    return 0


def cmd_backfill_score(args: argparse.Namespace) -> int:
    """Create a deployment's runs for every cron interval from --from to --to (oldest first),
    skipping intervals scored before unless --force."""
    from pipelines.backfill import backfill, wait_for_runs

    rows = backfill(args.deployment, args.start, args.end, force=args.force)
    for row in rows:
        print(f"{row['interval']}  {row['action']}")
    created = [row["run_id"] for row in rows if row["run_id"]]
    print(f"{len(created)} runs created, {len(rows) - len(created)} intervals skipped")
    if args.wait and created:
        states = wait_for_runs(created, args.timeout)
        for row in rows:
            if row["run_id"]:
                print(f"{row['interval']}  {states[row['run_id']]}")
        if any(state not in ("Completed", "Skipped") for state in states.values()):
            return 1
    return 0


def cmd_runs_list(args: argparse.Namespace) -> int:
    """The last intervals a scheduled-scoring deployment ran: state, rows, flags, alarm."""
    from pipelines.history import list_intervals

    rows = list_intervals(args.deployment, args.last)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no intervals logged for deployment {args.deployment!r}")
        return 0
    print("  ".join(LIST_COLUMNS))
    for row in rows:
        rate = "" if row["anomaly_rate"] is None else f"{row['anomaly_rate']:.2%}"
        cells = [row["interval"], row["state"], row["rows"], row["flagged"], rate]
        cells += ["ALARM" if row["alarm"] else "-", row["model_version"]]
        print("  ".join("" if cell is None else str(cell) for cell in cells))
    return 0

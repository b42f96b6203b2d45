"""Per-interval paths for scheduled scoring: templates filled from a run's scheduled time.

A scheduled run scores "its" batch: `--input data/{date}/part-*.parquet` and `--output
scores/{date}.parquet` name a different file for every interval. Placeholders:

- `{date}`: the scheduled day, `2026-12-01`;
- `{datetime}`: the scheduled time to the second, `2026-12-01T020000` (no colons, so it is a
  valid file name everywhere);
- `{%...}`: any strftime form, e.g. `{%Y/%m/%d}` or `{%Y%m%d-%H}`.

`{{` and `}}` are literal braces. The time is the run's *scheduled* time (Prefect's expected
start time) in the schedule's time zone, so a run that starts late, or a backfilled one,
still names its own interval. An input template may be a glob (`*`, `?`, `[...]`): it selects
every matching file, in sorted order.
"""

from __future__ import annotations

import datetime as dt
import glob
import re
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from anomaly.errors import ConfigError

NAMED_FORMATS = {"date": "%Y-%m-%d", "datetime": "%Y-%m-%dT%H%M%S"}
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
GLOB_CHARACTERS = re.compile(r"[*?\[]")


def _strftime_form(name: str, template: str) -> str:
    """The strftime format a placeholder's text stands for; ConfigError for an unknown one."""
    if name in NAMED_FORMATS:
        return NAMED_FORMATS[name]
    if name.startswith("%") and len(name) > 1:
        return name
    known = ", ".join("{" + key + "}" for key in NAMED_FORMATS)
    raise ConfigError(
        f"unknown placeholder {{{name}}} in {template!r}: use {known} or a strftime form "
        "such as {%Y/%m/%d} ({{ and }} are literal braces)"
    )


def check_template(template: str) -> None:
    """ConfigError naming an unknown placeholder or an unmatched brace of `template`."""
    fill_template(template, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))


def is_template(path: str) -> bool:
    """Whether `path` holds a placeholder (so each interval names its own file)."""
    return any(match.group(1) is not None for match in PLACEHOLDER.finditer(path))


def fill_template(template: str, when: dt.datetime) -> str:
    """`template` with each placeholder replaced by `when` formatted as it says."""

    def replace(match: re.Match) -> str:
        if match.group(1) is None:
            return match.group(0)[0]  # "{{" -> "{", "}}" -> "}"
        return when.strftime(_strftime_form(match.group(1), template))

    filled = PLACEHOLDER.sub(replace, template)
    leftover = PLACEHOLDER.sub("", template)
    if "{" in leftover or "}" in leftover:
        raise ConfigError(f"unmatched brace in {template!r} (write {{{{ or }}}} for a literal)")
    return filled


def local_time(when: dt.datetime, timezone: str) -> dt.datetime:
    """`when` (an aware time; a naive one is taken as UTC) in the IANA zone `timezone`."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ConfigError(f"unknown time zone {timezone!r} (an IANA name such as UTC)") from error
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(zone)


def matching_inputs(pattern: str) -> list[Path]:
    """The files (or image folders) an input path names: the path itself when it exists, else
    nothing; every match of a glob, sorted by name."""
    if GLOB_CHARACTERS.search(pattern):
        return [Path(name) for name in sorted(glob.glob(pattern))]
    path = Path(pattern)
    return [path] if path.exists() else []


def output_root(template: str) -> Path:
    """The folder of an output template up to its first placeholder: it must exist before a
    schedule starts; the folders below it are made per interval."""
    head = Path(template).parent
    while is_template(str(head)):
        head = head.parent
    return head

"""Per-interval templates (`anomaly.intervals`) and the backfill's interval times, from fixed
scheduled times: no clock, no server."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from prefect.client.schemas.schedules import CronSchedule

from anomaly.errors import ConfigError
from anomaly.intervals import (
    check_template,
    fill_template,
    is_template,
    local_time,
    matching_inputs,
    output_root,
)
from pipelines.backfill import interval_times, parse_bound

WHEN = dt.datetime(2026, 12, 1, 2, 0, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("data/{date}/part-*.parquet", "data/2026-12-01/part-*.parquet"),
        ("scores/{datetime}.parquet", "scores/2026-12-01T020005.parquet"),
        ("scores/{%Y/%m/%d}/out.parquet", "scores/2026/12/01/out.parquet"),
        ("x/{%Y%m%d-%H}.csv", "x/20261201-02.csv"),
        ("braces/{{date}}-{date}.csv", "braces/{date}-2026-12-01.csv"),
        ("plain/file.csv", "plain/file.csv"),
    ],
)
def test_templates_filled_from_the_scheduled_time(template: str, expected: str):
    assert fill_template(template, WHEN) == expected
    assert is_template(template) == (not template.startswith("plain"))
    assert not is_template("only/{{escaped}}.csv")


@pytest.mark.parametrize(
    ("template", "message"),
    [("data/{day}.csv", "unknown placeholder {day}"), ("data/{date.csv", "unmatched brace")],
)
def test_bad_templates_are_named(template: str, message: str):
    with pytest.raises(ConfigError, match=message):
        check_template(template)


def test_templates_use_the_schedules_time_zone():
    late_evening = dt.datetime(2026, 12, 1, 23, 30, tzinfo=dt.UTC)
    berlin = local_time(late_evening, "Europe/Berlin")
    assert fill_template("{date}", berlin) == "2026-12-02"  # 00:30 the next day in Berlin
    assert fill_template("{date}", local_time(late_evening, "UTC")) == "2026-12-01"
    assert local_time(dt.datetime(2026, 12, 1), "UTC").tzinfo is not None  # naive = UTC
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        local_time(WHEN, "Mars/Olympus")


def test_inputs_match_globs_in_name_order(tmp_path: Path):
    for name in ("part-2.csv", "part-10.csv", "part-1.csv", "other.txt"):
        (tmp_path / name).write_text("a\n1\n")
    found = matching_inputs(str(tmp_path / "part-*.csv"))
    assert [p.name for p in found] == ["part-1.csv", "part-10.csv", "part-2.csv"]
    assert matching_inputs(str(tmp_path / "part-1.csv")) == [tmp_path / "part-1.csv"]
    assert matching_inputs(str(tmp_path / "missing.csv")) == []
    assert matching_inputs(str(tmp_path / "none-*.csv")) == []


def test_output_root_is_the_folder_above_the_first_placeholder():
    assert output_root("/srv/scores/{%Y}/{%m}/{date}.parquet") == Path("/srv/scores")
    assert output_root("/srv/scores/{date}.parquet") == Path("/srv/scores")
    assert output_root("/srv/out.parquet") == Path("/srv")


def test_backfill_times_are_the_crons_in_the_range_oldest_first():
    nightly = CronSchedule(cron="0 2 * * *", timezone="UTC")
    start = parse_bound("2026-12-01", "UTC", end=False)
    end = parse_bound("2026-12-03", "UTC", end=True)
    times = interval_times(nightly, start, end)
    assert [t.isoformat() for t in times] == [
        "2026-12-01T02:00:00+00:00",
        "2026-12-02T02:00:00+00:00",
        "2026-12-03T02:00:00+00:00",
    ]
    hourly = CronSchedule(cron="0 * * * *", timezone="Europe/Berlin")
    start = parse_bound("2026-03-29T00:00", "Europe/Berlin", end=False)
    end = parse_bound("2026-03-29T04:00", "Europe/Berlin", end=True)
    # the spring-forward night: 02:00 does not exist in Berlin, so 4 hourly times, not 5
    hours = [t.astimezone(dt.UTC).hour for t in interval_times(hourly, start, end)]
    assert hours == [23, 0, 1, 2]


def test_backfill_ranges_are_checked():
    nightly = CronSchedule(cron="* * * * *", timezone="UTC")
    start = parse_bound("2026-12-01", "UTC", end=False)
    with pytest.raises(ConfigError, match="more than 1000 intervals"):
        interval_times(nightly, start, parse_bound("2026-12-02", "UTC", end=True))
    with pytest.raises(ConfigError, match="is before --from"):
        interval_times(nightly, start, parse_bound("2026-11-30", "UTC", end=True))
    with pytest.raises(ConfigError, match="not a date"):
        parse_bound("yesterday", "UTC", end=False)

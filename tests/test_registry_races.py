"""Two promotions at once: `champion` ends on exactly one version, and the alias records on the
versions form one consistent chain (each move names the version it really replaced).

The children slow down the read of the current holder (50 ms between reading it and moving the
alias), so without `tracking.alias_lock` two moves would read the same holder and the chain
would break (checked by hand: it does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from pipelines import tracking

MODEL = "race-model"
MOVES = 6  # per child and race: many interleavings, each a chance to break the chain
PROMOTER = f"""
MOVES = {MOVES}
import sys, time
from pipelines import tracking
read = tracking.alias_version
def slow_read(*args):  # widen the read -> write window of a move to make races certain
    holder = read(*args)
    time.sleep(0.05)
    return holder
tracking.alias_version = slow_read
version, start_at = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))  # both children start moving at the same moment
for _ in range(MOVES):
    tracking.move_alias("race-model", "champion", version, reason="race", action="test")
"""


def alias_events(name: str) -> list[tuple[int, str, dict]]:
    """(time stamp, version, record) of every champion record on every version, in order."""
    client = MlflowClient()
    events = []
    for version in client.search_model_versions(f"name='{name}'"):
        for key, value in version.tags.items():
            if key.startswith("genad.alias.champion."):
                events.append((int(key.rsplit(".", 1)[1]), str(version.version), json.loads(value)))
    return sorted(events, key=lambda e: (e[0], e[2]["event"] == "set"))


def race(versions: tuple[str, str]) -> None:
    """Move champion to both versions from two processes at the same instant."""
    start_at = time.time() + 6.0  # after both children have imported mlflow
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri()}
    children = [
        subprocess.Popen([sys.executable, "-c", PROMOTER, v, str(start_at)], env=env,
                         stderr=subprocess.PIPE, text=True)
        for v in versions
    ]  # fmt: skip
    for child in children:
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr[-2000:]


@pytest.mark.slow  # in CI's `make test-slow`, not in the default suite
def test_concurrent_promotions_leave_one_champion_and_a_consistent_history(mlflow_store):
    client = MlflowClient()
    client.create_registered_model(MODEL)
    for _ in range(3):
        client.create_model_version(MODEL, source=str(mlflow_store).rsplit("/", 1)[0], run_id=None)
    tracking.move_alias(MODEL, "champion", "1", reason="start", action="test")
    for _ in range(2):
        race(("2", "3"))
    events = alias_events(MODEL)
    sets = [(version, record) for _, version, record in events if record["event"] == "set"]
    assert len(sets) == 1 + 2 * 2 * MOVES
    holder = None
    for version, record in sets:  # every move names the version that held the alias before it
        assert record["previous_version"] == holder
        holder = version
    assert tracking.alias_version(MODEL, "champion") == holder  # exactly one, the last mover
    removed = [(v, r) for _, v, r in events if r["event"] == "removed"]
    replaced = [
        (r["previous_version"], v) for v, r in sets if r["previous_version"] not in (None, v)
    ]
    assert sorted((v, r["replaced_by"]) for v, r in removed) == sorted(replaced)

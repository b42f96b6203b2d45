"""benchmarks/adbench.py's report and cache keys on a tiny fake result (no training, no data).

The benchmark runs as a script, so its folder goes on sys.path and its modules are imported
by their file names, as the script itself does.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ROW_KEYS = {
    "protocol",
    "detector",
    "mean_auroc",
    "mean_auprc",
    "wins_vs_iforest",
    "n_sets",
    "median_fit_score_s",
    "seed_spread_auroc",
}


@pytest.fixture
def report(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("adbench_report")


def fake_args(**extra) -> argparse.Namespace:
    defaults = dict(
        command=".venv/bin/python benchmarks/adbench.py",
        commit="abc1234",
        date="2026-01-01T00:00:00",
        threads=1,
        jobs=1,
        seeds=[0, 1],
        datasets=["adbench/a", "adbench/b"],
        protocols=["novelty", "unsupervised"],
        methods=["genad", "iforest", "ecod"],
        genad_params={"epochs": 5},
        cache_tag="tag",
        cache=Path("/tmp/unused"),
        no_cache=False,
        max_train_rows=10000,
        max_test_rows=20000,
    )
    return argparse.Namespace(**(defaults | extra))


def fake_records() -> list[dict]:
    """genad beats IsolationForest on set a only; ECOD fails once on set b."""
    auroc = {"genad": {"a": 0.9, "b": 0.6}, "iforest": {"a": 0.8, "b": 0.7}, "ecod": {"a": 0.5}}
    sizes = dict(n_train=10, n_train_anomalies=0, n_test=5, n_anomalies=1, full_train=10)
    records = []
    for protocol in ("novelty", "unsupervised"):
        for method in ("genad", "iforest", "ecod"):
            for name in ("a", "b"):
                for seed in (0, 1):
                    value = auroc[method].get(name)
                    result = (
                        {"auroc": value + 0.01 * seed, "auprc": value / 2, "seconds": 1.0 + seed}
                        if value is not None
                        else {"error": "ValueError: boom", "seconds": 0.1}
                    )
                    record = {"protocol": protocol, "dataset": f"adbench/{name}", "seed": seed}
                    record |= {"method": method, "result": result}
                    records.append(record | {"sizes": sizes | {"full_test": 5}})
    return records


def test_json_rows_have_the_required_keys_and_counts(report, tmp_path: Path) -> None:
    args = fake_args()
    out = report.results_json(args, fake_records(), wall=3.0)
    assert {"command", "commit", "date", "rows"} <= set(out)
    assert len(out["rows"]) == 2 * 3  # one per protocol and detector
    for row in out["rows"]:
        assert set(row) >= ROW_KEYS, row
    genad = next(r for r in out["rows"] if r["detector"] == "genad")
    assert genad["wins_vs_iforest"] == 1 and genad["n_sets"] == 2
    assert genad["mean_auroc"] == pytest.approx(np.mean([0.905, 0.605]), abs=1e-4)
    assert genad["median_fit_score_s"] == pytest.approx(1.5)
    assert genad["seed_spread_auroc"] == pytest.approx(0.005, abs=1e-4)
    assert genad["params"] == {"epochs": 5}
    ecod = next(r for r in out["rows"] if r["detector"] == "ecod")
    assert ecod["n_sets"] == 1 and ecod["wins_vs_iforest"] == 0
    report.atomic_write(tmp_path / "sub" / "adbench.json", json.dumps(out))
    assert json.loads((tmp_path / "sub" / "adbench.json").read_text())["rows"] == out["rows"]
    assert list(tmp_path.joinpath("sub").iterdir()) == [tmp_path / "sub" / "adbench.json"]


def test_markdown_has_every_protocol_goal_and_error(report) -> None:
    text = report.markdown(fake_args(), fake_records(), wall=3.0)
    assert "### Protocol: novelty" in text and "### Protocol: unsupervised" in text
    assert "genad mean AUROC >= 0.830: 0.755 -> **FAIL**" in text
    assert "genad wins (AUROC >=) >= 16 of 25 sets: 1 of 2 -> **FAIL**" in text
    assert "ValueError: boom" in text


def test_cache_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Baselines are keyed by protocol, set, method, seed and row limits; genad also by a hash
    of its parameters (any key order) and the cache tag."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    adbench = importlib.import_module("adbench")
    args = fake_args(cache=Path("cache"), genad_params={"a": 1, "b": 2}, cache_tag="v1/x")
    unit = adbench.Unit("unsupervised", "adbench/satimage-2", 3, "iforest")
    path = adbench.cache_path(args, unit)
    assert path == Path("cache/unsupervised/satimage-2/iforest_seed3_train10000_test20000.json")
    genad = adbench.cache_path(args, unit._replace(method="genad"))
    assert genad.name.startswith(f"genad-{adbench.params_hash({'b': 2, 'a': 1})}-v1_x_seed3")
    other = adbench.cache_path(fake_args(cache=Path("cache")), unit._replace(method="genad"))
    assert other != genad


def test_stratified_rows_keep_the_anomaly_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    adbench = importlib.import_module("adbench")
    y = np.r_[np.zeros(900, int), np.ones(100, int)]
    rows = adbench.stratified_rows(y, 200, np.random.default_rng(0))
    assert len(rows) == 200 and y[rows].sum() == 20

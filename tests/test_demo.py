"""The demo's report: the raw log p(x) beside the corrected score the flags use."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.demo import measure, novelty_classes


def test_report_measures_raw_and_corrected_scores_side_by_side(tmp_path):
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.5).astype(int)
    log_px = rng.normal(size=400) + 0.2 * labels  # raw: novel rows look a little *more* likely
    ratio = rng.normal(size=400) - 2.0 * labels  # corrected: novel rows clearly less normal
    order = rng.permutation(400)  # scores come back in any row order, keyed by row_id
    pd.DataFrame({
        "row_id": order, "log_px": log_px[order], "normality": ratio[order],
        "is_anomaly": ratio[order] < -1.0,
    }).to_parquet(tmp_path / "scores.parquet")  # fmt: skip
    result = measure(
        tmp_path / "scores.parquet", labels, {"threshold": -1.0}, "likelihood_ratio", tmp_path
    )
    raw, corrected = result["metrics"]["raw log p(x)"], result["metrics"]["likelihood ratio"]
    assert raw["auroc"] == pytest.approx(roc_auc_score(labels, -log_px))
    assert corrected["auroc"] == pytest.approx(roc_auc_score(labels, -ratio))
    assert raw["auroc"] < 0.5 < corrected["auroc"]
    assert result["flagged_by"] == "likelihood ratio"
    assert result["flag_rate_novel"] == pytest.approx(np.mean(ratio[labels == 1] < -1.0))
    assert result["plot"].stat().st_size > 10_000  # a PNG with three panels


def test_novelty_is_every_other_class():
    assert novelty_classes("fashion-mnist", 0) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert novelty_classes("adbench/satimage-2", 0) == [1]
    with pytest.raises(ValueError, match="--normal-class 10"):
        novelty_classes("mnist", 10)

"""The PNG writers in anomaly.plots: valid images, atomic writes, documented errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from anomaly import plots

HISTORY = [
    {"loss": 120.0 - 10 * i, "elbo": -118.0 + 10 * i, "kl": 5.0 + i, "kl_weight": 0.25 * (i + 1)}
    | {"val_score": -130.0 + 9 * i}
    for i in range(4)
]


def assert_only_png(folder: Path, target: Path) -> None:
    """`target` is a non-empty, readable PNG and the only file in `folder` (no temp files)."""
    assert sorted(folder.iterdir()) == [target]
    assert target.stat().st_size > 0
    with Image.open(target) as image:
        assert image.format == "PNG"
        assert image.mode in {"RGB", "RGBA"}
        assert image.width > 0 and image.height > 0


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    """Overlapping normal/anomaly scores, so the AUROC is strictly between 0.5 and 1."""
    generator = np.random.default_rng(0)
    labels = np.r_[np.zeros(200, dtype=int), np.ones(40, dtype=int)]
    scores = np.r_[generator.normal(0, 1, 200), generator.normal(1.2, 1, 40)]
    return labels, scores


# --- score histogram ------------------------------------------------------------------------
@pytest.mark.parametrize("with_labels", [True, False])
def test_score_histogram_writes_png(tmp_path: Path, scored, with_labels: bool) -> None:
    labels, scores = scored
    target = tmp_path / "hist.png"
    written = plots.plot_score_histogram(
        -scores, labels if with_labels else None, -0.5, target, title="t"
    )
    assert written == target
    assert_only_png(tmp_path, target)


def test_score_histogram_without_threshold_creates_folder(tmp_path: Path, scored) -> None:
    labels, scores = scored
    target = tmp_path / "nested" / "hist.png"
    plots.plot_score_histogram(scores, None, float("nan"), target)
    assert_only_png(target.parent, target)


# --- loss curves ----------------------------------------------------------------------------
def test_loss_curves_writes_png(tmp_path: Path) -> None:
    target = tmp_path / "loss.png"
    assert plots.plot_loss_curves(HISTORY, target) == target
    assert_only_png(tmp_path, target)


def test_loss_curves_groups_training_validation_and_schedule() -> None:
    figure = plots._loss_figure(HISTORY, "t")
    training, validation = figure.axes[:2]
    training_names = training.get_legend().get_texts()
    assert [text.get_text() for text in training_names] == ["loss", "elbo", "kl", "kl_weight"]
    assert [line.get_label() for line in validation.get_lines()] == ["val_score"]
    assert list(validation.get_lines()[0].get_xdata()) == [1, 2, 3, 4]
    assert len(figure.axes) == 3  # training, validation, schedule twin


def test_loss_curves_single_epoch_and_missing_keys(tmp_path: Path) -> None:
    single = plots._loss_figure([{"loss": 3.0}], "t")
    (line,) = single.axes[0].get_lines()
    assert line.get_marker() == "o" and len(single.axes) == 1
    history = [{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 1.5, "val_score": -3.0, "x": "a"}]
    figure = plots._loss_figure(history, "t")
    (val_line,) = figure.axes[1].get_lines()
    assert list(val_line.get_xdata()) == [1.0] and list(val_line.get_ydata()) == [-3.0]
    target = plots.plot_loss_curves([{"epoch": 0}], tmp_path / "empty_metrics.png")
    assert_only_png(tmp_path, target)


def test_loss_curves_empty_history_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-empty history"):
        plots.plot_loss_curves([], tmp_path / "loss.png")
    assert list(tmp_path.iterdir()) == []


# --- ROC --------------------------------------------------------------------------------------
def test_roc_writes_png(tmp_path: Path, scored) -> None:
    labels, scores = scored
    target = tmp_path / "roc.png"
    assert plots.plot_roc(labels, scores, target, title="t") == target
    assert_only_png(tmp_path, target)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_roc_legend_shows_sklearn_auroc(scored, sign: float) -> None:
    labels, scores = scored
    expected = roc_auc_score(labels, sign * scores)
    assert 0.02 < abs(expected - 0.5) < 0.48  # a non-trivial value the plot could get wrong
    figure, area = plots._roc_figure(labels, sign * scores, "t")
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    shown = float(re.fullmatch(r"AUROC = ([0-9.]+)", legend[0]).group(1))
    assert area == pytest.approx(expected)
    assert shown == pytest.approx(expected, abs=5e-5)
    assert legend[1] == "chance"


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros(5, dtype=int), "only one class"),
        (np.ones(5, dtype=int), "only one class"),
        (np.array([0, 1, 2, 0, 1]), "must be 0 .normal. or 1 .anomaly."),
        (np.array([0, 1, 0, 1]), "same length"),
    ],
)
def test_roc_rejects_bad_labels(tmp_path: Path, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plots.plot_roc(labels, np.arange(5.0), tmp_path / "roc.png")
    assert list(tmp_path.iterdir()) == []


# --- image grids ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(10, 8, 8), (10, 1, 8, 8), (10, 3, 8, 8)])
def test_image_grid_writes_png(tmp_path: Path, shape: tuple[int, ...]) -> None:
    images = np.random.default_rng(0).uniform(-0.5, 1.5, size=shape)  # out of range: clipped
    target = tmp_path / "grid.png"
    assert plots.plot_image_grid(images, target, ncols=4, title="samples") == target
    assert_only_png(tmp_path, target)


def test_image_grid_row_labels(tmp_path: Path) -> None:
    originals = np.random.default_rng(1).uniform(size=(6, 1, 8, 8))
    images = np.concatenate([originals, originals[:, :, ::-1]])
    target = plots.plot_image_grid(
        images, tmp_path / "recon.png", ncols=6, row_labels=["original", "reconstruction"]
    )
    assert_only_png(tmp_path, target)


@pytest.mark.parametrize(
    ("images", "options", "message"),
    [
        (np.zeros((4, 2, 8, 8)), {}, "1 or 3 channels"),
        (np.zeros((8, 8)), {}, r"\(n, h, w\) or \(n, c, h, w\)"),
        (np.zeros((1, 4, 1, 8, 8)), {}, r"\(n, h, w\) or \(n, c, h, w\)"),
        (np.zeros((0, 8, 8)), {}, "no images"),
        (np.zeros((4, 8, 8)), {"ncols": 0}, "ncols must be at least 1"),
        (np.zeros((4, 8, 8)), {"ncols": 2, "row_labels": ["a"]}, "1 row_labels for a grid of 2"),
    ],
)
def test_image_grid_rejects_bad_input(tmp_path: Path, images, options, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plots.plot_image_grid(images, tmp_path / "grid.png", **options)
    assert list(tmp_path.iterdir()) == []

"""The bad-input corpus (`tests/badinputs/`): every broken input through the batch reader, the
scoring flow and `genad score`.

Under the "fail" policy each one raises (the CLI exits 2) with an error naming the file and,
for a bad cell, the row and the column, and leaves nothing beside the output. Under the reader's
"skip" policy bad rows are dropped and reported with their original row ids while the kept
rows come back unchanged. The expectations live in `badinputs/expected.json`, written with the
files by `badinputs/make_corpus.py`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anomaly.batchio import BadRow, Chunk, iter_chunks, open_source, plan_partitions
from anomaly.data.readers import DatasetFormatError, DatasetNotFoundError
from pipelines.cli import main
from pipelines.score import batch_score_flow

CORPUS = Path(__file__).resolve().parent / "badinputs"
FILES = CORPUS / "files"
CASES: list[dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())
FEATURES = ["f0", "f1", "f2", "f3"]
SIDE = 8
READER_ERRORS = (DatasetFormatError, DatasetNotFoundError)

pytestmark = pytest.mark.usefixtures("no_heartbeats")


def load_make_corpus() -> Any:
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


make_corpus = load_make_corpus()


def cases(*, skip: str | None = None, rows: bool = False, accepted: bool = False) -> list:
    """Corpus cases as pytest params: by their skip outcome, those rejecting rows, the
    accepted ones, or (no filter) every case that must fail."""
    chosen = [
        case
        for case in CASES
        if (skip is not None and case["skip"] == skip)
        or (rows and isinstance(case["skip"], list))
        or (accepted and case["skip"] == "ok")
        or (skip is None and not rows and not accepted and case["skip"] != "ok")
    ]
    return [pytest.param(case, id=case["path"]) for case in chosen]


def read(case: dict[str, Any], bad_rows: str, *, rows_per_partition: int = 4, chunk_rows: int = 3):
    """All chunks of a corpus input through the reader, as the flow opens it."""
    path = FILES / case["path"]
    tabular = path.suffix in (".csv", ".parquet")
    source = open_source(path, columns=FEATURES if tabular else None)
    return [
        chunk
        for partition in plan_partitions(source, rows_per_partition)
        for chunk in iter_chunks(source, partition, chunk_rows=chunk_rows, bad_rows=bad_rows)
    ]


def assert_names_the_problem(message: str, case: dict[str, Any], error: str | None = None) -> None:
    assert (error or case["error"]) in message
    assert Path(case["path"]).name in message
    for part in case["where"]:
        assert part in message


# --- the corpus itself ------------------------------------------------------------------------
@pytest.mark.slow  # rebuilds every file of the corpus (~15 s): in CI's `make test-slow`
def test_corpus_has_30_plus_cases_and_regenerates_byte_for_byte(tmp_path):
    assert len(CASES) >= 30
    assert {case["path"].split("/")[0] for case in CASES} == {"csv", "parquet", "npz", "images"}
    rebuilt = make_corpus.build(tmp_path)
    assert [make_corpus.asdict(case) for case in rebuilt] == CASES
    for case in CASES:
        committed, fresh = FILES / case["path"], tmp_path / case["path"]
        if committed.is_symlink():
            assert os.readlink(committed) == os.readlink(fresh)
            continue
        files = sorted(committed.rglob("*")) if committed.is_dir() else [committed]
        assert files, case["path"]
        for file in files:
            assert file.read_bytes() == (fresh / file.relative_to(committed)).read_bytes()
            assert file.stat().st_size < 8192  # small enough to commit


# --- the reader: fail and skip ----------------------------------------------------------------
@pytest.mark.parametrize("case", [p for p in cases() if p.values[0]["skip"] != "model"])
def test_reader_fails_naming_file_row_and_column(case):
    with pytest.raises(READER_ERRORS) as raised:
        read(case, "fail")
    assert_names_the_problem(str(raised.value), case)


@pytest.mark.parametrize("case", cases(skip="file"))
def test_file_level_problems_fail_under_skip_too(case):
    with pytest.raises(READER_ERRORS) as raised:
        read(case, "skip")
    assert_names_the_problem(str(raised.value), case)


@pytest.fixture(scope="module")
def clean_images(tmp_path_factory) -> np.ndarray:
    folder = tmp_path_factory.mktemp("clean")
    make_corpus.write_images(folder)
    return np.stack([np.asarray(Image.open(f))[np.newaxis] for f in sorted(folder.glob("*.png"))])


@pytest.mark.parametrize("layout", [(4, 3), (10, 10), (1, 1), (7, 2)])
@pytest.mark.parametrize("case", cases(rows=True))
def test_skip_drops_and_reports_bad_rows_keeping_row_ids(case, layout, clean_images):
    chunks = read(case, "skip", rows_per_partition=layout[0], chunk_rows=layout[1])
    rejected = [bad for chunk in chunks for bad in chunk.rejected]
    assert [[bad.row_id, bad.column] for bad in rejected] == case["skip"]
    assert case["error"] in rejected[0].reason
    bad_ids = {row for row, _ in case["skip"]}
    kept = np.concatenate([chunk.row_ids for chunk in chunks])
    n_rows = 10 if case["kind"] == "tabular" else 4
    np.testing.assert_array_equal(kept, [i for i in range(n_rows) if i not in bad_ids])
    clean = make_corpus.base_frame()[FEATURES].to_numpy() if case["kind"] == "tabular" else None
    clean = clean_images if clean is None else clean
    X = np.concatenate([chunk.X for chunk in chunks])
    np.testing.assert_array_equal(X, clean[kept])  # kept rows are read exactly as written
    if case["kind"] == "image":
        keys = [key for chunk in chunks for key in chunk.keys]
        assert keys == [f"img{i:02d}.png" for i in kept]


@pytest.mark.parametrize("case", cases(accepted=True) + cases(skip="model"))
def test_accepted_inputs_read_every_row_under_both_policies(case):
    for policy in ("fail", "skip"):
        chunks = read(case, policy)
        assert sum(len(chunk.row_ids) for chunk in chunks) == (
            10 if case["kind"] == "tabular" else 4
        )
        assert not [bad for chunk in chunks for bad in chunk.rejected]


def test_unknown_policy_is_refused():
    source = open_source(FILES / "csv/extra_columns.csv", columns=FEATURES)
    with pytest.raises(ValueError, match=r"bad_rows must be one of \['fail', 'skip'\]"):
        iter_chunks(source, bad_rows="drop")


def test_a_chunk_of_only_bad_rows_is_yielded_empty_with_its_report():
    chunks = read(next(c for c in CASES if c["path"] == "csv/inf.csv"), "skip", chunk_rows=1)
    only_bad = [chunk for chunk in chunks if len(chunk.row_ids) == 0]
    assert [c.rejected for c in only_bad] == [
        (BadRow(7, "f3", "infinite value inf"),),
        (BadRow(8, "f0", "infinite value -inf"),),
    ]
    assert all(c.X.shape == (0, 4) for c in only_bad) and isinstance(chunks[0], Chunk)


# --- the flow and the CLI: fail policy ---------------------------------------------------------
@pytest.fixture(scope="module")
def image_uri(prefect_harness, mlflow_store, tmp_path_factory) -> str:
    """A tiny registered 8x8 grayscale image model (the corpus' image folders fit it)."""
    from pipelines.promote import evaluate_and_promote_flow
    from pipelines.train import train_vae_flow

    rng = np.random.default_rng(0)
    X = rng.integers(0, 40, size=(256, 1, SIDE, SIDE)).astype(np.uint8)
    stripe = rng.integers(0, SIDE, 256)
    X[:224, 0][np.arange(224), stripe[:224], :] = 230  # normal: horizontal stripes
    X[224:, 0][np.arange(32), :, stripe[224:]] = 230  # anomalies: vertical stripes
    data = tmp_path_factory.mktemp("image-model") / "train.npz"
    np.savez(data, X=X, y=(np.arange(256) >= 224).astype(int))
    config = {"epochs": 1, "backbone": "mlp", "hidden_dims": [16], "latent_dim": 2}
    config |= {"n_samples": 4, "batch_size": 64, "target_fpr": 0.1}
    train_vae_flow(str(data), config, model_name="badinputs-image")
    assert evaluate_and_promote_flow("badinputs-image", str(data))["promoted"]
    return "models:/badinputs-image@champion"


def model_uri(case: dict[str, Any], champion: dict, image_uri: str) -> str:
    return champion["uri"] if case["kind"] == "tabular" else image_uri


@pytest.mark.parametrize("case", cases())
def test_flow_fails_naming_the_problem_and_writes_nothing(case, champion, image_uri, tmp_path):
    output = tmp_path / "out" / "scores.parquet"
    output.parent.mkdir()  # a missing output folder would be refused first
    with pytest.raises(Exception) as raised:
        batch_score_flow(model_uri(case, champion, image_uri), str(FILES / case["path"]),
                         str(output))  # fmt: skip
    assert_names_the_problem(str(raised.value), case)
    assert not output.parent.exists() or list(output.parent.iterdir()) == []


def test_a_symlink_loop_is_a_format_error_in_the_flow(champion, tmp_path):
    output = tmp_path / "out" / "scores.parquet"
    output.parent.mkdir()
    with pytest.raises(DatasetFormatError, match="symlink_loop.csv.*loop"):
        batch_score_flow(champion["uri"], str(FILES / "csv/symlink_loop.csv"), str(output))
    assert list(output.parent.iterdir()) == []


@pytest.mark.parametrize("case", cases())
def test_cli_exits_2_naming_the_problem_and_writes_nothing(
    case, champion, image_uri, tmp_path, capsys
):
    output = tmp_path / "out" / "scores.parquet"
    output.parent.mkdir()
    code = main(["score", "--model-uri", model_uri(case, champion, image_uri),
                 "--input", str(FILES / case["path"]), "--output", str(output)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("genad score: error:") == 1  # after a progress bar, when scoring began
    line = err[err.index("genad score: error:") :]
    assert line.count("\n") == 1
    assert_names_the_problem(line, case, case["cli_error"])
    assert not output.parent.exists() or list(output.parent.iterdir()) == []


@pytest.mark.parametrize("case", cases(accepted=True))
def test_accepted_inputs_are_scored_by_the_flow(case, champion, tmp_path):
    output = tmp_path / "scores.parquet"
    summary = batch_score_flow(champion["uri"], str(FILES / case["path"]), str(output))
    assert summary["rows"] == 10
    np.testing.assert_array_equal(pd.read_parquet(output)["row_id"], np.arange(10))


# --- the flow and the CLI: skip policy (plumbing by the flow's owner) --------------------------
SKIP_CASES = ["csv/inf.csv", "csv/ragged_extra_field.csv", "parquet/null_cell.parquet",
              "npz/nan_and_inf.npz", "images/non_image_file"]  # fmt: skip


@pytest.fixture(scope="module")
def clean_scores(champion, image_uri, tmp_path_factory) -> dict[str, pd.DataFrame]:
    """The scores of the rows the corpus was made from, before they were broken."""
    folder = tmp_path_factory.mktemp("clean-scores")
    make_corpus.base_frame().to_csv(folder / "clean.csv", index=False)
    make_corpus.write_images(folder / "images")
    scores = {}
    for kind, uri, source in (("tabular", champion["uri"], folder / "clean.csv"),
                              ("image", image_uri, folder / "images")):  # fmt: skip
        batch_score_flow(uri, str(source), str(folder / f"{kind}.parquet"))
        scores[kind] = pd.read_parquet(folder / f"{kind}.parquet")
    return scores


def assert_skipped_and_reported(case: dict[str, Any], output: Path, clean: pd.DataFrame) -> None:
    """Kept rows scored as the clean rows were, bad ones listed in `<output>.rejected.csv`."""
    bad_ids = {row for row, _ in case["skip"]}
    scored = pd.read_parquet(output)
    kept = [i for i in range(len(clean)) if i not in bad_ids]
    np.testing.assert_array_equal(scored["row_id"], kept)
    np.testing.assert_allclose(scored["log_px"], clean["log_px"].to_numpy()[kept], rtol=1e-6)
    np.testing.assert_array_equal(scored["is_anomaly"], clean["is_anomaly"].to_numpy()[kept])
    report = pd.read_csv(output.with_name(output.name + ".rejected.csv"), keep_default_na=False)
    assert list(report.columns) == ["row_id", "column", "reason"]
    expected = [[row, column or ""] for row, column in case["skip"]]
    assert report[["row_id", "column"]].to_numpy().tolist() == expected
    assert case["error"] in report["reason"].iloc[0]


@pytest.mark.parametrize("name", SKIP_CASES)
def test_flow_skip_policy_scores_the_rest_and_reports_rejected_rows(
    name, champion, image_uri, clean_scores, tmp_path
):
    case = next(case for case in CASES if case["path"] == name)
    output = tmp_path / "scores.parquet"
    summary = batch_score_flow(
        model_uri(case, champion, image_uri), str(FILES / name), str(output), bad_rows="skip"
    )
    assert_skipped_and_reported(case, output, clean_scores[case["kind"]])
    assert summary["rows"] == len(clean_scores[case["kind"]]) - len({r for r, _ in case["skip"]})


@pytest.mark.parametrize("name", SKIP_CASES)
def test_cli_skip_policy_scores_the_rest_and_reports_rejected_rows(
    name, champion, image_uri, clean_scores, tmp_path, capsys
):
    case = next(case for case in CASES if case["path"] == name)
    output = tmp_path / "scores.parquet"
    code = main(["score", "--model-uri", model_uri(case, champion, image_uri),
                 "--input", str(FILES / name), "--output", str(output),
                 "--bad-rows", "skip"])  # fmt: skip
    capsys.readouterr()
    assert code == 0
    assert_skipped_and_reported(case, output, clean_scores[case["kind"]])

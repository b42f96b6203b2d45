"""The input-format registry (`anomaly.formats`): every registered format streams exactly what it
reads whole, and a format registered with one line is read, partitioned, checked for bad rows
and scored by the batch path without any caller knowing its name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from anomaly.batchio import iter_chunks, open_source, plan_partitions
from anomaly.data.readers import read_path
from anomaly.formats import FILE_FORMATS, FOLDER_FORMAT, InputFormat, format_for, input_format
from anomaly.formats.base import BatchSource, Chunk, Partition
from anomaly.formats.dataset import Dataset

RNG = np.random.default_rng(3)
TABLE = pd.DataFrame(RNG.normal(size=(11, 3)) * 1e3, columns=["a", "b", "c"])


def write_csv(folder: Path) -> Path:
    TABLE.to_csv(folder / "t.csv", index=False, float_format="%.17g")
    return folder / "t.csv"


def write_parquet(folder: Path) -> Path:
    table = pa.Table.from_pandas(TABLE, preserve_index=False)
    pq.write_table(table, folder / "t.parquet", row_group_size=4)
    return folder / "t.parquet"


def write_npz(folder: Path) -> Path:
    np.savez_compressed(folder / "t.npz", X=TABLE.to_numpy())
    return folder / "t.npz"


def write_folder(folder: Path) -> Path:
    (folder / "images").mkdir()
    for i, pixels in enumerate(RNG.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)):
        Image.fromarray(pixels, mode="L").save(folder / "images" / f"{i:02d}.png")
    return folder / "images"


# One clean sample per registered format ("folder": the folder format).
SAMPLES: dict[str, Callable[[Path], Path]] = {
    ".csv": write_csv,
    ".parquet": write_parquet,
    ".npz": write_npz,
    "folder": write_folder,
}


@pytest.mark.parametrize("key", [*FILE_FORMATS, "folder"])
def test_every_format_streams_what_it_reads_whole(key, tmp_path):
    assert key in SAMPLES, f"add a sample input for the format registered as {key!r}"
    path = SAMPLES[key](tmp_path)
    fmt = format_for(path)
    assert fmt is FILE_FORMATS.get(key, FOLDER_FORMAT)
    whole = read_path(path)
    source = open_source(path)
    assert input_format(source) is fmt
    chunks = [
        chunk
        for partition in plan_partitions(source, 3)
        for chunk in iter_chunks(source, partition, chunk_rows=2)
    ]
    X = np.concatenate([chunk.X for chunk in chunks])
    assert (X.dtype, X.shape) == (whole.X.dtype, whole.X.shape)
    assert X.tobytes() == whole.X.tobytes()
    row_ids = np.concatenate([chunk.row_ids for chunk in chunks])
    np.testing.assert_array_equal(row_ids, np.arange(len(whole.X)))
    keys = [key for chunk in chunks for key in chunk.keys or []]
    assert keys == (source.files if fmt.per_row_files else [])
    assert source.columns == (whole.feature_names if fmt.has_column_names else None)
    assert fmt.holds_images or whole.kind != "image"


# A pipe-separated format with a header, defined here as a new format module would be.
def psv_rows(path: Path) -> tuple[list[str], np.ndarray]:
    header, *lines = path.read_text().splitlines()
    return header.split("|"), np.array([[float(v) for v in line.split("|")] for line in lines])


def open_psv(path: Path) -> BatchSource:
    names, X = psv_rows(path)
    return BatchSource(path, "psv", len(X), names, (len(names),))


def psv_chunks(
    source: BatchSource, partition: Partition | None, chunk_rows: int, columns: list[str]
) -> Iterator[Chunk]:
    names, X = psv_rows(source.path)
    start, stop = source.span(partition)
    picked = X[:, [names.index(column) for column in columns]]
    for lo in range(start, stop, chunk_rows):
        hi = min(lo + chunk_rows, stop)
        yield Chunk(np.arange(lo, hi, dtype=np.int64), picked[lo:hi])


def read_psv(path: Path, label_column: str | None = None) -> Dataset:
    names, X = psv_rows(path)
    return Dataset(X, None, path.stem, feature_names=names)


PSV = InputFormat("psv", "PSV", open_psv, psv_chunks, read_psv, has_column_names=True)


@dataclass
class SumModel:
    """A stand-in scoring model: the score of a row is the sum of its features."""

    feature_names: list[str]
    input_shape: tuple[int, ...] = (2,)
    name: str = "sum"
    version: str = "1"

    def score_columns(self, X: np.ndarray) -> dict[str, np.ndarray]:
        score = X.sum(axis=1)
        columns = {"log_px": -score, "normality": -score, "score": score}
        return columns | {"p_value": np.full(len(X), 0.5), "is_anomaly": score > 10}


def test_a_registered_format_scores_through_the_batch_path(monkeypatch, tmp_path):
    from anomaly.batch import plan_batch, score_partition

    monkeypatch.setitem(FILE_FORMATS, ".psv", PSV)  # the one registry line
    path = tmp_path / "rows.psv"
    path.write_text("x|y|z\n1|2|0\n3|nan|0\n5|6|0\n7|8|0\n9|10|0\n")
    assert read_path(path).feature_names == ["x", "y", "z"]
    plan = plan_batch(path, SumModel(["y", "x"]), rows_per_partition=2, bad_rows="skip")
    assert plan.source.row_shape == (2,) and [p.stop for p in plan.partitions] == [2, 4, 5]
    tables = []
    for partition in plan.partitions:
        part = tmp_path / f"part-{partition.index}.parquet"
        rejected = tmp_path / f"rejected-{partition.index}.csv"
        score_partition(SumModel(["y", "x"]), plan, partition, part, rejected_path=rejected)
        tables.append(pq.read_table(part).to_pandas())
    scored = pd.concat(tables)
    assert scored["row_id"].tolist() == [0, 2, 3, 4]  # row 1 has a NaN: skipped, reported
    assert scored["score"].tolist() == [3.0, 11.0, 15.0, 19.0]
    assert "file" not in scored.columns
    assert pd.read_csv(tmp_path / "rejected-0.csv")[["row_id", "column"]].values.tolist() == [
        [1, "y"]
    ]
    with pytest.raises(ValueError, match="columns apply to CSV, Parquet and PSV inputs only"):
        open_source(write_npz(tmp_path), columns=["a"])

"""Chunked batch input (`anomaly.batchio`): exact round trips through partitions and chunks for
CSV, Parquet, npz and image folders, clear errors for bad inputs, atomic Parquet output, and
bounded memory measured in a child process."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from anomaly.batchio import (
    AtomicParquetWriter,
    BatchSource,
    Partition,
    iter_chunks,
    open_source,
    plan_partitions,
)
from anomaly.data.readers import DatasetFormatError, DatasetNotFoundError

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMES = [f"f{i}" for i in range(5)]
FORMATS = ["csv", "parquet", "npz", "npz_compressed"]


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(1000, 5)) * 10.0 ** rng.integers(-8, 8, size=(1000, 5))


def write_input(folder: Path, kind: str, X: np.ndarray) -> Path:
    frame = pd.DataFrame(X, columns=NAMES[: X.shape[1]])
    if kind == "csv":
        path = folder / "data.csv"
        frame.to_csv(path, index=False, float_format="%.17g")
    elif kind == "parquet":
        path = folder / "data.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=100)
    else:
        path = folder / "data.npz"
        save = np.savez_compressed if kind == "npz_compressed" else np.savez
        save(path, X=X, y=np.zeros(len(X)))
    return path


def read_all(source: BatchSource, partitions: list[Partition] | None, chunk_rows: int, **kw):
    chunks = [
        chunk
        for partition in partitions or [None]
        for chunk in iter_chunks(source, partition, chunk_rows=chunk_rows, **kw)
    ]
    assert all(0 < len(chunk.X) <= chunk_rows for chunk in chunks)
    assert all(chunk.row_ids.dtype == np.int64 for chunk in chunks)
    ids = np.concatenate([chunk.row_ids for chunk in chunks])
    return np.concatenate([chunk.X for chunk in chunks]), ids


def assert_covers(partitions: list[Partition], n_rows: int, size: int) -> None:
    assert [p.index for p in partitions] == list(range(len(partitions)))
    assert partitions[0].start == 0 and partitions[-1].stop == n_rows
    for before, after in zip(partitions, partitions[1:], strict=False):
        assert before.stop == after.start
    assert all(0 < p.stop - p.start <= size for p in partitions)


@pytest.mark.parametrize("kind", FORMATS)
def test_round_trip_through_partitions_and_chunks(tmp_path, X, kind):
    source = open_source(write_input(tmp_path, kind, X))
    assert source.n_rows == 1000 and source.row_shape == (5,)
    assert source.columns == (None if kind.startswith("npz") else NAMES)
    partitions = plan_partitions(source, 128)
    assert_covers(partitions, 1000, 128)
    for parts, chunk_rows in [(partitions, 7), (partitions, 100), (None, 1), (None, 7)]:
        got, ids = read_all(source, parts, chunk_rows)
        assert got.dtype == np.float64 and np.array_equal(got, X)
        assert np.array_equal(ids, np.arange(1000))
    for chunk_rows in (100, 5000):
        assert np.array_equal(read_all(source, None, chunk_rows)[0], X)


@pytest.mark.parametrize("kind", FORMATS)
def test_partition_sizes_and_bounds(tmp_path, X, kind):
    source = open_source(write_input(tmp_path, kind, X))
    for size in (1, 333, 1000, 5000):
        assert_covers(plan_partitions(source, size), 1000, size)
    with pytest.raises(ValueError):
        plan_partitions(source, 0)
    with pytest.raises(ValueError, match="outside"):
        list(iter_chunks(source, Partition(0, 900, 1001)))
    with pytest.raises(ValueError, match="chunk_rows"):
        iter_chunks(source, chunk_rows=0)
    assert list(iter_chunks(source, Partition(0, 5, 5))) == []


def test_sources_and_partitions_pickle_for_other_processes(tmp_path, X):
    source = open_source(write_input(tmp_path, "csv", X), columns=["f2"])
    partition = plan_partitions(source, 400)[1]
    source, partition = pickle.loads(pickle.dumps((source, partition)))
    got, ids = read_all(source, [partition], 64)
    assert np.array_equal(got, X[400:800, [2]]) and np.array_equal(ids, np.arange(400, 800))


def test_csv_byte_ranges_hold_their_rows(tmp_path, X):
    path = write_input(tmp_path, "csv", X)
    source = open_source(path)
    partitions = plan_partitions(source, 300)
    raw = path.read_bytes()
    for p in partitions:
        rows = pd.read_csv(pd.io.common.BytesIO(raw[p.byte_start : p.byte_stop]), header=None)
        assert np.array_equal(rows.to_numpy(), X[p.start : p.stop])
    assert partitions[-1].byte_stop == len(raw)
    # A hand-made partition without byte offsets is located by a scan.
    got, ids = read_all(source, [Partition(0, 301, 777)], 50)
    assert np.array_equal(got, X[301:777]) and np.array_equal(ids, np.arange(301, 777))


def test_csv_line_endings_blank_lines_and_no_final_newline(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_bytes(b"a,b\r\n1,2\r\n\r\n   \n3.5,4\n5,6\n\n7,8")
    source = open_source(path)
    assert source.n_rows == 4
    expected = np.array([[1, 2], [3.5, 4], [5, 6], [7, 8]])
    for size in (1, 2, 3):
        got, ids = read_all(source, plan_partitions(source, size), 1)
        assert np.array_equal(got, expected)
        assert np.array_equal(ids, np.arange(4))
    path.write_bytes(b"a,b\r\n1,2\r\n\r\n   \n3.5,4\n5,\n\n7,8")  # an empty cell: a bad row
    with pytest.raises(DatasetFormatError, match=r"odd\.csv: missing value.*'b' at data row 2\b"):
        read_all(open_source(path), None, 1)
    path.write_bytes(b"a,b\n1,2\n3,4\n\n \n")
    assert open_source(path).n_rows == 2


def test_csv_header_only_and_empty(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("a,b,c\n")
    source = open_source(path)
    assert (source.n_rows, source.columns, source.row_shape) == (0, ["a", "b", "c"], (3,))
    with pytest.raises(DatasetFormatError, match=r"header\.csv: no data rows"):
        plan_partitions(source, 10)
    assert list(iter_chunks(source)) == []
    path.write_text("a,b,c")  # no newline after the header either
    assert open_source(path).n_rows == 0
    path.write_bytes(b"")
    with pytest.raises(DatasetFormatError, match="empty file"):
        open_source(path)


@pytest.mark.parametrize("kind", ["parquet", "npz", "npz_compressed"])
def test_zero_row_inputs(tmp_path, kind):
    source = open_source(write_input(tmp_path, kind, np.zeros((0, 5))))
    assert (source.n_rows, source.row_shape) == (0, (5,))
    assert list(iter_chunks(source)) == []
    with pytest.raises(DatasetFormatError, match=r"data\.(parquet|npz): no data rows"):
        plan_partitions(source, 10)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_columns_select_and_reorder(tmp_path, X, kind):
    path = write_input(tmp_path, kind, X)
    source = open_source(path, columns=["f3", "f1"])
    assert source.row_shape == (2,) and source.columns == NAMES
    got, _ = read_all(source, plan_partitions(source, 128), 50)
    assert np.array_equal(got, X[:, [3, 1]])
    got, _ = read_all(open_source(path), None, 64, columns=["f4", "f0", "f4"])
    assert np.array_equal(got, X[:, [4, 0, 4]])
    with pytest.raises(DatasetFormatError, match=r"data\..*missing columns \['zz', 'yy'\]"):
        open_source(path, columns=["f0", "zz", "yy"])
    with pytest.raises(DatasetFormatError, match="missing columns"):
        iter_chunks(source, columns=["nope"])


PIXELS = [f"pixel{i}" for i in range(784)]


def test_respelled_columns_are_summarised_with_the_likely_cause(tmp_path):
    """pixel_0..pixel_783 for a model of pixel0..pixel783: the count, a few names of each side
    and the spelling hint, in a bounded line; the same words for a file and for a frame."""
    from anomaly.packaged.scoring import InputColumnsError, select_features

    frame = pd.DataFrame(np.zeros((2, 785)), columns=["label", *(f"pixel_{i}" for i in range(784))])
    path = tmp_path / "pixels.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetFormatError) as caught:
        open_source(path, columns=PIXELS)
    message = str(caught.value)
    assert message.startswith(f"{path}: missing columns ['pixel0', 'pixel1', 'pixel2'")
    assert "and 779 more (784 of the 784 the model needs)" in message
    assert "first unexpected columns: ['label', 'pixel_0', 'pixel_1'" in message
    assert "the file's columns look like the model's with different spelling: " in message
    assert "'pixel_0' vs 'pixel0'" in message and "784 of the 784 missing columns match" in message
    assert "pixel783" not in message and "pixel_783" not in message
    assert len(message) < 600 + len(str(path)), message
    with pytest.raises(InputColumnsError) as in_frame:
        select_features(frame, PIXELS)
    assert str(in_frame.value) == message.removeprefix(f"{path}: ").removesuffix(".").replace(
        "the file's", "the input's"
    )


def test_different_columns_are_summarised_without_a_spelling_hint(tmp_path):
    frame = pd.DataFrame(np.zeros((2, 300)), columns=[f"feature{i}" for i in range(300)])
    path = tmp_path / "other.parquet"
    frame.to_parquet(path)
    with pytest.raises(DatasetFormatError) as caught:
        open_source(path, columns=PIXELS)
    message = str(caught.value)
    assert "columns ['pixel0', 'pixel1', 'pixel2', 'pixel3', 'pixel4'] and 779 more" in message
    assert "first unexpected columns: ['feature0', 'feature1'" in message
    assert "and 295 more" in message and "feature299" not in message
    assert "spelling" not in message and "likely cause" not in message
    assert len(message) < 400 + len(str(path)), message


def test_non_numeric_cells_name_column_and_row(tmp_path, X):
    frame = pd.DataFrame(X, columns=NAMES).astype(object)
    frame.loc[567, "f2"] = "abc"
    frame.loc[10, "f4"] = "text"
    frame.loc[20, "f2"] = None  # an empty cell is a bad row too
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False, float_format="%.17g")
    source = open_source(path, columns=["f0", "f2"])
    with pytest.raises(DatasetFormatError, match=r"bad\.csv.*'abc'.*'f2'.*row 567"):
        read_all(source, plan_partitions(source, 128)[2:], 100)
    with pytest.raises(DatasetFormatError, match=r"bad\.csv: missing value.*'f2'.*row 20\b"):
        read_all(source, plan_partitions(source, 128), 100)
    got, _ = read_all(source, [Partition(0, 21, 500)], 100)  # the bad rows lie elsewhere
    assert np.array_equal(got, X[21:500, [0, 2]])
    with pytest.raises(DatasetFormatError, match=r"'f4'.*row 10\b"):
        read_all(open_source(path), None, 8192)


def test_parquet_string_column_is_rejected(tmp_path):
    path = tmp_path / "text.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "s": ["x", "y"], "n": [1, None]}), path)
    with pytest.raises(DatasetFormatError, match=r"text\.parquet.*'s'.*non-numeric"):
        open_source(path, columns=["a", "s"])
    with pytest.raises(DatasetFormatError, match="'s'"):
        list(iter_chunks(open_source(path)))
    got, _ = read_all(open_source(path, columns=["n", "a"]), [Partition(0, 0, 1)], 10)
    assert np.array_equal(got, [[1, 1]])
    with pytest.raises(DatasetFormatError, match=r"text\.parquet: missing value.*'n'.*row 1\b"):
        read_all(open_source(path, columns=["n", "a"]), None, 10)


def test_truncated_and_corrupt_files(tmp_path, X):
    for kind in ("parquet", "npz", "npz_compressed"):
        path = write_input(tmp_path, kind, X)
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
        with pytest.raises(DatasetFormatError, match=str(path.name)):
            open_source(path)
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(DatasetFormatError, match=r"junk\.npz.*not a valid"):
        open_source(path)


def test_npz_layouts_and_errors(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(50, 6, 4), dtype=np.uint8)
    np.savez_compressed(tmp_path / "gray.npz", X=images)
    source = open_source(tmp_path / "gray.npz")
    assert (source.n_rows, source.row_shape) == (50, (1, 6, 4))
    got, _ = read_all(source, plan_partitions(source, 16), 5)
    assert got.dtype == np.uint8 and np.array_equal(got, images[:, np.newaxis])
    big_endian = np.arange(2 * 3 * 4 * 5, dtype=">i2").reshape(2, 3, 4, 5)
    np.savez(tmp_path / "rgb.npz", X=big_endian)
    got, _ = read_all(open_source(tmp_path / "rgb.npz"), None, 1)
    assert got.dtype == np.int16 and np.array_equal(got, big_endian)
    with pytest.raises(ValueError, match="columns"):
        open_source(tmp_path / "rgb.npz", columns=["a"])
    np.savez(tmp_path / "nox.npz", features=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(DatasetFormatError, match=r"no array 'X'.*\['features', 'y'\]"):
        open_source(tmp_path / "nox.npz")
    np.savez(tmp_path / "fortran.npz", X=np.asfortranarray(np.zeros((2, 4, 3, 3))))
    with pytest.raises(DatasetFormatError, match="Fortran"):
        open_source(tmp_path / "fortran.npz")
    np.savez(tmp_path / "flat.npz", X=np.zeros(4))
    with pytest.raises(DatasetFormatError, match="shape"):
        open_source(tmp_path / "flat.npz")
    np.savez(tmp_path / "objects.npz", X=np.array([[1, "a"]], dtype=object))
    with pytest.raises(DatasetFormatError, match="object"):
        open_source(tmp_path / "objects.npz")


def write_images(folder: Path, arrays: np.ndarray, mode: str) -> list[str]:
    folder.mkdir(exist_ok=True)
    names = [f"img_{i:02d}.png" for i in range(len(arrays))]
    for name, array in zip(names, arrays, strict=True):
        Image.fromarray(array, mode=mode).save(folder / name)
    return names


def test_image_folder_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, size=(23, 7, 5), dtype=np.uint8)
    names = write_images(tmp_path / "gray", gray, "L")
    (tmp_path / "gray" / "notes.txt").write_text("not an image")
    source = open_source(tmp_path / "gray")
    assert (source.format, source.n_rows, source.row_shape, source.files) == (
        "images",
        23,
        (1, 7, 5),
        names,
    )
    chunks = [c for p in plan_partitions(source, 5) for c in iter_chunks(source, p, chunk_rows=3)]
    assert np.array_equal(np.concatenate([c.X for c in chunks]), gray[:, np.newaxis])
    assert [k for c in chunks for k in c.keys] == names
    assert np.array_equal(np.concatenate([c.row_ids for c in chunks]), np.arange(23))
    rgba = rng.integers(0, 256, size=(4, 3, 6, 4), dtype=np.uint8)
    write_images(tmp_path / "rgb", rgba, "RGBA")
    source = open_source(tmp_path / "rgb")
    assert source.row_shape == (3, 3, 6)
    got, _ = read_all(source, None, 3)
    assert got.dtype == np.uint8 and np.array_equal(got, rgba[..., :3].transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="columns"):
        iter_chunks(source, columns=["a"])


def test_image_folder_errors(tmp_path):
    folder = tmp_path / "imgs"
    write_images(folder, np.zeros((3, 4, 4), np.uint8), "L")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(folder / "img_99.png")
    source = open_source(folder)
    with pytest.raises(DatasetFormatError, match=r"img_99\.png.*\(4, 5\).*\(4, 4\)"):
        read_all(source, None, 10)
    (folder / "img_99.png").unlink()
    (folder / "zz_bad.png").write_bytes(b"garbage, not a png")
    with pytest.raises(DatasetFormatError, match=r"zz_bad\.png.*not a readable image"):
        read_all(open_source(folder), None, 10)
    (folder / "bad.png").write_bytes(b"garbage")  # sorts first: found when opening
    with pytest.raises(DatasetFormatError, match=r"bad\.png"):
        open_source(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no PNG or JPEG"):
        open_source(tmp_path / "empty")


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        open_source(tmp_path / "nope.csv")
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(DatasetFormatError, match=r"\.csv, \.parquet, \.npz"):
        open_source(f"file://{tmp_path / 'data.json'}")


def test_csv_row_count_mismatch_is_an_error(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text('a,b\n1,"two\nlines"\n3,4\n')
    with pytest.raises(DatasetFormatError, match="quoted fields"):
        read_all(open_source(path, columns=["a"]), None, 10)


SCHEMA = pa.schema([("row_id", pa.int64()), ("score", pa.float64()), ("file", pa.string())])


def test_atomic_parquet_writer(tmp_path):
    path = tmp_path / "out" / "scores.parquet"
    with AtomicParquetWriter(path, SCHEMA) as writer:
        writer.write(pd.DataFrame({"score": [0.5, 1.5], "row_id": [0, 1], "file": ["a", "b"]}))
        writer.write(pa.table({"row_id": [2], "score": [2.5], "file": ["c"]}, schema=SCHEMA))
    table = pq.read_table(path)
    assert table.schema.equals(SCHEMA) and table.column("score").to_pylist() == [0.5, 1.5, 2.5]
    assert sorted(os.listdir(path.parent)) == ["scores.parquet"]
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"), AtomicParquetWriter(path, SCHEMA) as writer:
        writer.write(pa.table({"row_id": [9], "score": [9.0], "file": ["z"]}, schema=SCHEMA))
        raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["scores.parquet"]
    fresh = tmp_path / "fresh.parquet"
    with pytest.raises(RuntimeError), AtomicParquetWriter(fresh, SCHEMA):
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["out"]


def test_atomic_parquet_writer_zero_rows(tmp_path):
    path = tmp_path / "empty.parquet"
    with AtomicParquetWriter(path, SCHEMA):
        pass
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.schema.equals(SCHEMA)


# Bounded memory: iterate a large input in a child process and compare the growth of its peak
# RSS with the size of the whole array. The peak is VmHWM of /proc/self/status, reset to the
# current RSS after warming up (clear_refs 5): ru_maxrss would not do, as Linux carries it over
# exec from the parent, so the child would start at pytest's own peak. The child stubs the
# `anomaly` package so that importing anomaly.batchio does not import torch.
CHILD = """
import json, sys, types
import numpy as np
root, path, warm, mode = sys.argv[1:5]
package = types.ModuleType("anomaly")
package.__path__ = [root + "/anomaly"]
sys.modules["anomaly"] = package
from anomaly.batchio import iter_chunks, open_source

def peak_mb():
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmHWM"].split()[0]) / 1024

def scan(file):
    source = open_source(file)
    return sum(len(chunk.X) for chunk in iter_chunks(source, chunk_rows=8192))

scan(warm)  # warm up lazily loaded code and allocator pools on a small file
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # reset the peak RSS to the current RSS
before = peak_mb()
rows = scan(path) if mode == "chunks" else len(np.load(path)["X"])
print(json.dumps({"rows": rows, "growth_mb": peak_mb() - before}))
"""


def peak_growth_mb(path: Path, warm: Path, mode: str = "chunks") -> tuple[int, float]:
    args = [sys.executable, "-c", CHILD, str(REPO_ROOT), str(path), str(warm), mode]
    result = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["rows"], report["growth_mb"]


def write_big_inputs(folder: Path, n_rows: int, csv_rows: int) -> dict[str, Path]:
    X = np.random.default_rng(3).random((n_rows, 8))
    table = pa.table({f"c{j}": X[:, j] for j in range(8)})
    paths = {"parquet": folder / "big.parquet", "npz": folder / "big.npz"}
    pq.write_table(table, paths["parquet"], row_group_size=200_000, compression="none")
    np.savez(paths["npz"], X=X)
    # The CSV repeats a block of 10,000 short rows: much faster to write than unique rows.
    block = pd.DataFrame(X[:10_000].round(4), columns=table.column_names).to_csv(index=False)
    header, body = block.split("\n", 1)
    paths["csv"] = folder / "big.csv"
    paths["csv"].write_text(header + "\n" + body * (csv_rows // 10_000))
    return paths


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_memory_is_bounded_by_the_chunk_not_the_file(tmp_path):
    (tmp_path / "warm").mkdir()
    warm = write_big_inputs(tmp_path / "warm", 20_000, 20_000)
    big = write_big_inputs(tmp_path, 2_000_000, 1_000_000)
    growth = {}
    try:
        for kind, n_rows in (("parquet", 2_000_000), ("npz", 2_000_000), ("csv", 1_000_000)):
            rows, growth[kind] = peak_growth_mb(big[kind], warm[kind])
            data_mb = n_rows * 8 * 8 / 2**20  # the whole float64 array
            assert rows == n_rows
            assert growth[kind] < 0.4 * data_mb, (kind, growth, data_mb)
        rows, whole = peak_growth_mb(big["npz"], warm["npz"], mode="whole")
    finally:
        for path in big.values():  # pytest keeps recent tmp dirs: do not leave 300 MB there
            path.unlink()
    assert whole > 0.8 * rows * 64 / 2**20, whole  # the measurement does see a whole-file load
    print(f"RSS growth (MB): {growth}; whole npz load: {whole:.1f}")


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_fortran_order_tables_are_read_by_partition(tmp_path, save):
    """pandas' to_numpy() gives column-major arrays: they must read back row for row."""
    X = np.asfortranarray(np.random.default_rng(3).normal(size=(1000, 5)).astype(np.float32))
    save(tmp_path / "f.npz", X=X)
    source = open_source(tmp_path / "f.npz")
    for rows, chunk_rows in ((128, 7), (1000, 100), (333, 1000)):
        got, ids = [], []
        for partition in plan_partitions(source, rows):
            for chunk in iter_chunks(source, partition, chunk_rows=chunk_rows):
                got.append(chunk.X)
                ids.append(chunk.row_ids)
        assert np.array_equal(np.concatenate(got), X.astype(np.float64))
        assert np.array_equal(np.concatenate(ids), np.arange(1000))


BAD_CELLS = [("nan", "missing value"), ("", "missing value"), ("inf", "infinite value inf"),
             ("-1e39", "float32 range"), ("x1", "non-numeric value 'x1'")]  # fmt: skip


def write_csv_with_bad_rows(path: Path, X: np.ndarray, rng: np.random.Generator) -> dict:
    """X as CSV with 41 bad rows (row 0, and rows 99 and 100: lines with extra fields around
    a partition boundary), some blank lines; returns {row id: (column or None, reason)}."""
    chosen = set(rng.choice(np.arange(1, len(X)), size=38, replace=False).tolist()) - {99, 100}
    bad = {0: ("f1", "non-numeric value 'abc'")}
    lines = [",".join(NAMES)]
    for row, values in enumerate(X):
        fields = [f"{v:.17g}" for v in values]
        if row == 0:
            fields[1] = "abc"
        elif row in (99, 100) or (row in chosen and rng.random() < 0.2):
            fields += ["1"] * (2 if row == 99 else 1)
            bad[row] = (None, f"line has {len(fields)} fields but the header has 5")
        elif row in chosen:
            text, reason = BAD_CELLS[int(rng.integers(len(BAD_CELLS)))]
            column = int(rng.integers(len(NAMES)))
            fields[column] = text
            bad[row] = (NAMES[column], reason)
        lines.append(",".join(fields) + ("\n" if rng.random() < 0.1 else ""))
    path.write_text("\n".join(lines) + "\n")
    return bad


@pytest.mark.parametrize(("rows_per_partition", "chunk_rows"), [(100, 33), (1000, 8192), (7, 3)])
def test_skip_policy_drops_and_reports_exactly_the_bad_rows(
    tmp_path, X, rows_per_partition, chunk_rows
):
    bad = write_csv_with_bad_rows(tmp_path / "bad.csv", X, np.random.default_rng(1))
    source = open_source(tmp_path / "bad.csv", columns=NAMES)
    chunks = [
        chunk
        for partition in plan_partitions(source, rows_per_partition)
        for chunk in iter_chunks(source, partition, chunk_rows=chunk_rows, bad_rows="skip")
    ]
    rejected = [b for chunk in chunks for b in chunk.rejected]
    assert [b.row_id for b in rejected] == sorted(bad)  # one bad cell per bad row
    for b in rejected:
        assert (b.column, bad[b.row_id][1] in b.reason) == (bad[b.row_id][0], True), b
    kept = np.concatenate([chunk.row_ids for chunk in chunks])
    np.testing.assert_array_equal(kept, [i for i in range(len(X)) if i not in bad])
    np.testing.assert_array_equal(np.concatenate([chunk.X for chunk in chunks]), X[kept])
    with pytest.raises(DatasetFormatError, match=r"bad\.csv: non-numeric value 'abc' in column "
                       r"'f1' at data row 0 \(0-based"):  # fmt: skip
        list(iter_chunks(source))
    with pytest.raises(DatasetFormatError, match=r"line has 7 fields but the header has 5 in "
                       r"data row 99\b"):  # fmt: skip
        list(iter_chunks(source, Partition(0, 99, 101)))

"""Dataset loading: the named sets against their published facts, downloads, readers, errors."""

from __future__ import annotations

import functools
import gzip
import hashlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anomaly.data import (
    ChecksumError,
    DatasetFormatError,
    DatasetNotFoundError,
    DownloadError,
    UnknownDatasetError,
    list_datasets,
    load_dataset,
)
from anomaly.data.catalog import SHA256, source_url
from anomaly.data.download import sha256_file

BREASTW = "adbench/4_breastw.npz"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve folder over HTTP on 127.0.0.1 and yield its base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.fixture(scope="module")
def fashion_train(shared_data_dir: Path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENAD_DATA_DIR", str(shared_data_dir))
        patch.setenv("GENAD_DATA_MIRROR", "http://127.0.0.1:9/")
        return load_dataset("fashion-mnist")


# Named datasets -----------------------------------------------------------------------------


def test_fashion_mnist_train_matches_published_counts(fashion_train) -> None:
    assert fashion_train.kind == "image"
    assert fashion_train.X.shape == (60000, 1, 28, 28)
    assert fashion_train.X.dtype == np.uint8
    assert fashion_train.y.dtype == np.int64
    assert np.bincount(fashion_train.y).tolist() == [6000] * 10
    assert fashion_train.X.max() == 255


def test_image_set_splits(data_env: Path) -> None:
    test = load_dataset("fashion-mnist", split="test")
    assert test.X.shape == (10000, 1, 28, 28)
    assert np.bincount(test.y).tolist() == [1000] * 10
    everything = load_dataset("mnist", split="all")
    mnist_test = load_dataset("mnist", split="test")
    assert everything.X.shape == (70000, 1, 28, 28)
    np.testing.assert_array_equal(everything.X[60000:], mnist_test.X)
    np.testing.assert_array_equal(everything.y[60000:], mnist_test.y)
    assert mnist_test.y[:5].tolist() == [7, 2, 1, 0, 4]


def test_unknown_split_is_rejected(data_env: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist", split="validation")
    with pytest.raises(ValueError, match="split"):
        load_dataset("adbench/breastw", split="train")


@pytest.mark.parametrize(
    "name", ["adbench/breastw", "adbench/4_breastw", "adbench/BreastW", "adbench/4_breastw.npz"]
)
def test_breastw_by_any_alias(data_env: Path, name: str) -> None:
    data = load_dataset(name)
    assert data.name == "adbench/breastw"
    assert data.X.shape == (683, 9)
    assert data.X.dtype == np.float64 and data.y.dtype == np.int64
    assert int(data.y.sum()) == 239
    assert set(np.unique(data.y)) == {0, 1}


@pytest.mark.parametrize(
    ("name", "shape", "anomalies"),
    [("adbench/satimage-2", (5803, 36), 71), ("adbench/arrhythmia", (452, 274), 66)],
)
def test_other_adbench_sets(data_env: Path, name: str, shape: tuple, anomalies: int) -> None:
    data = load_dataset(name)
    assert data.X.shape == shape
    assert int(data.y.sum()) == anomalies


def test_list_datasets_names_every_set() -> None:
    names = list_datasets()
    assert names[:2] == ["fashion-mnist", "mnist"]
    assert {"adbench/breastw", "adbench/satimage-2", "adbench/arrhythmia"} <= set(names)
    assert len(names) == 2 + 25


def test_unknown_names_list_the_known_ones(data_env: Path) -> None:
    with pytest.raises(UnknownDatasetError, match="fashion-mnist"):
        load_dataset("fashoin-mnist")
    with pytest.raises(UnknownDatasetError, match="adbench/breastw"):
        load_dataset("adbench/breast")


# Checksums and downloads --------------------------------------------------------------------


def test_catalog_checksums_match_sha256sums(shared_data_dir: Path) -> None:
    listed = {}
    for line in (shared_data_dir / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split()
        if not Path(path).name.startswith("LICENSE") and "copyright" not in path:
            listed[path.removeprefix("./")] = digest
    assert listed == SHA256
    for path in (BREASTW, "adbench/14_glass.npz", "mnist/t10k-labels-idx1-ubyte.gz"):
        assert sha256_file(shared_data_dir / path) == SHA256[path]


def test_source_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENAD_DATA_MIRROR", raising=False)
    assert source_url("mnist/train-images-idx3-ubyte.gz") == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"
    )
    assert source_url("fashion-mnist/t10k-labels-idx1-ubyte.gz") == (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz"
    )
    assert source_url(BREASTW) == (
        "https://github.com/Minqi824/ADBench/raw/main/adbench/datasets/Classical/4_breastw.npz"
    )
    monkeypatch.setenv("GENAD_DATA_MIRROR", "http://mirror.example/data")
    assert source_url(BREASTW) == "http://mirror.example/data/adbench/4_breastw.npz"


def test_download_from_mirror(
    shared_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENAD_DATA_DIR", str(tmp_path))
    with serve(shared_data_dir) as url:
        monkeypatch.setenv("GENAD_DATA_MIRROR", url)
        data = load_dataset("adbench/breastw")
    assert data.X.shape == (683, 9)
    assert [p.name for p in (tmp_path / "adbench").iterdir()] == ["4_breastw.npz"]
    assert sha256_file(tmp_path / BREASTW) == SHA256[BREASTW]
    assert load_dataset("adbench/breastw").X.shape == (683, 9)  # server gone: read locally


def test_tampered_download_raises_and_leaves_nothing(
    shared_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "served"
    (served / "adbench").mkdir(parents=True)
    payload = bytearray((shared_data_dir / BREASTW).read_bytes())
    payload[-100] ^= 0xFF
    (served / BREASTW).write_bytes(bytes(payload))
    root = tmp_path / "root"
    monkeypatch.setenv("GENAD_DATA_DIR", str(root))
    with serve(served) as url, pytest.raises(ChecksumError) as error:
        monkeypatch.setenv("GENAD_DATA_MIRROR", url)
        load_dataset("adbench/breastw")
    message = str(error.value)
    assert "4_breastw.npz" in message
    assert SHA256[BREASTW] in message
    assert hashlib.sha256(payload).hexdigest() in message
    assert list((root / "adbench").iterdir()) == []


def test_missing_file_on_mirror_names_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GENAD_DATA_DIR", str(tmp_path / "root"))
    with serve(tmp_path) as url, pytest.raises(DownloadError, match="404") as error:
        monkeypatch.setenv("GENAD_DATA_MIRROR", url)
        load_dataset("adbench/glass")
    assert f"{url}adbench/14_glass.npz" in str(error.value)
    assert list((tmp_path / "root" / "adbench").iterdir()) == []


def test_unreachable_mirror_names_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url = f"http://127.0.0.1:{free_port()}/"
    monkeypatch.setenv("GENAD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GENAD_DATA_MIRROR", url)
    with pytest.raises(DownloadError, match=f"{url}mnist/t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", split="test")


def test_arrhythmia_is_not_downloadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GENAD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("GENAD_DATA_MIRROR", raising=False)
    with pytest.raises(DatasetNotFoundError, match="cannot be downloaded"):
        load_dataset("adbench/arrhythmia")


# Readers ------------------------------------------------------------------------------------


def test_npz_reader(tmp_path: Path) -> None:
    path = tmp_path / "table.npz"
    X = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.savez(path, X=X, y=np.array([0, 1, 0, 0, 1], dtype=np.int32), target=np.ones(5))
    data = load_dataset(f"file://{path}")
    assert data.kind == "tabular" and data.name == "table"
    assert data.X.dtype == np.float64 and data.y.dtype == np.int64
    np.testing.assert_array_equal(data.X, X)
    assert data.y.tolist() == [0, 1, 0, 0, 1]
    assert load_dataset(path, label_column="target").y.tolist() == [1.0] * 5
    np.savez(path, X=np.zeros((4, 6, 5), dtype=np.uint8))
    images = load_dataset(path)
    assert images.kind == "image" and images.X.shape == (4, 1, 6, 5) and images.y is None


def test_npz_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.npz"
    broken.write_text("not a zip file")
    with pytest.raises(DatasetFormatError, match="broken.npz.*not a valid .npz"):
        load_dataset(broken)
    keyless = tmp_path / "keyless.npz"
    np.savez(keyless, data=np.zeros((2, 2)))
    with pytest.raises(DatasetFormatError, match=r"no array 'X'.*\['data'\]"):
        load_dataset(keyless)


def test_idx_reader_plain_and_gzipped(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(4, 3, 2))
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([3, 1, 4, 1]))
    data = load_dataset(tmp_path / "train-images-idx3-ubyte")
    assert data.kind == "image" and data.X.shape == (4, 1, 3, 2) and data.X.dtype == np.uint8
    np.testing.assert_array_equal(data.X[:, 0], images)
    assert data.y.tolist() == [3, 1, 4, 1] and data.y.dtype == np.int64
    zipped = load_dataset(write_idx(tmp_path / "x.idx3.gz", images, compress=True))
    np.testing.assert_array_equal(zipped.X[:, 0], images)
    assert zipped.y is None


def test_idx_errors(tmp_path: Path) -> None:
    bad_magic = tmp_path / "bad-idx3-ubyte"
    bad_magic.write_bytes(b"\x01\x02\x08\x03" + bytes(20))
    with pytest.raises(DatasetFormatError, match="bad magic number"):
        load_dataset(bad_magic)
    truncated = tmp_path / "short-idx3-ubyte.gz"
    full = np.zeros((10, 28, 28))
    header = bytes([0, 0, 8, 3]) + np.array(full.shape, ">u4").tobytes()
    truncated.write_bytes(gzip.compress(header + bytes(100)))
    with pytest.raises(DatasetFormatError, match="short-idx3-ubyte.gz.*truncated"):
        load_dataset(truncated)


def test_csv_reader(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4, 5, 6], "label": [0, 0, 1]}).to_csv(
        path, index=False
    )
    data = load_dataset(str(path), label_column="label")
    assert data.feature_names == ["a", "b"]
    np.testing.assert_array_equal(data.X, [[1, 4], [2, 5], [3, 6]])
    assert data.y.tolist() == [0, 0, 1] and data.y.dtype == np.int64
    unlabelled = load_dataset(path)
    assert unlabelled.y is None and unlabelled.X.shape == (3, 3)
    with pytest.raises(DatasetFormatError, match="no label column 'target'"):
        load_dataset(path, label_column="target")


def test_parquet_reader(tmp_path: Path) -> None:
    path = tmp_path / "table.parquet"
    pd.DataFrame({"x1": [0.5, 1.5], "x2": [2, 3], "anomaly": [True, False]}).to_parquet(path)
    data = load_dataset(path, label_column="anomaly")
    assert data.feature_names == ["x1", "x2"] and data.X.dtype == np.float64
    assert data.y.tolist() == [1, 0]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_non_numeric_columns_are_named(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame({"ok": [1, 2], "city": ["Oslo", "Rome"], "day": ["mon", "tue"]})
    path = tmp_path / f"mixed{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"non-numeric columns \['city', 'day'\]"):
        load_dataset(path)


def test_image_folder_grayscale_sorted(tmp_path: Path) -> None:
    for name, value in [("b.png", 20), ("a.png", 10), ("c.JPG", 30)]:
        Image.new("L", (8, 6), color=value).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("ignored")
    data = load_dataset(tmp_path)
    assert data.kind == "image" and data.y is None
    assert data.X.shape == (3, 1, 6, 8) and data.X.dtype == np.uint8
    assert data.X[:, 0, 0, 0].tolist() == [10, 20, 30]


def test_image_folder_rgb(tmp_path: Path) -> None:
    Image.new("RGB", (5, 4), color=(255, 0, 7)).save(tmp_path / "one.png")
    Image.new("RGBA", (5, 4), color=(1, 2, 3, 4)).save(tmp_path / "two.png")
    data = load_dataset(tmp_path)
    assert data.X.shape == (2, 3, 4, 5)
    assert data.X[:, :, 2, 3].tolist() == [[255, 0, 7], [1, 2, 3]]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="no PNG or JPEG images"):
        load_dataset(tmp_path)
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    Image.new("L", (8, 9)).save(tmp_path / "b.png")
    with pytest.raises(DatasetFormatError, match=r"a\.png is \(8, 8\).*b\.png is \(8, 9\)"):
        load_dataset(tmp_path)


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.csv"
    with pytest.raises(DatasetNotFoundError, match="nothing.csv") as error:
        load_dataset(missing)
    assert isinstance(error.value, FileNotFoundError)
    notes = tmp_path / "notes.txt"
    notes.write_text("1,2,3")
    with pytest.raises(DatasetFormatError, match="unsupported file type"):
        load_dataset(notes)

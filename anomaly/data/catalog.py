"""The named datasets: where they live under the data root, their checksums and sources.

Files are read from `data_root()` (env GENAD_DATA_DIR, default ~/.cache/genad) with the layout
`fashion-mnist/<file>`, `mnist/<file>` and `adbench/<file>.npz`; a missing file is downloaded from
its public source, or from env GENAD_DATA_MIRROR (a base URL serving the same layout), and
checked against the SHA-256 below.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from anomaly.data.download import download_file
from anomaly.data.readers import (
    Dataset,
    DatasetNotFoundError,
    UnknownDatasetError,
    read_idx,
    read_npz,
    read_path,
    to_path,
)

DATA_DIR_ENV = "GENAD_DATA_DIR"
MIRROR_ENV = "GENAD_DATA_MIRROR"
DEFAULT_DATA_DIR = "~/.cache/genad"

SOURCES: dict[str, str] = {
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "adbench": "https://github.com/Minqi824/ADBench/raw/main/adbench/datasets/Classical/",
}
# Files with no public source in this layout: relative path -> why.
NOT_DOWNLOADABLE: dict[str, str] = {
    "adbench/arrhythmia.npz": "it is ODDS arrhythmia, converted locally to ADBench's layout",
}
IMAGE_SETS = ("fashion-mnist", "mnist")
# Split name -> file-name prefix of the IDX files.
IMAGE_SPLITS = {"train": "train", "test": "t10k"}
SPLITS = (*IMAGE_SPLITS, "all")

_SHA256_BY_FOLDER: dict[str, dict[str, str]] = {
    "fashion-mnist": {
        "t10k-images-idx3-ubyte.gz": (
            "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
        ),
        "train-images-idx3-ubyte.gz": (
            "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"
        ),
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
        ),
    },
    "mnist": {
        "t10k-images-idx3-ubyte.gz": (
            "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c"
        ),
        "train-images-idx3-ubyte.gz": (
            "db8f937d487057fb14a9f0fbe97f0bc8d311ab41b750d41e1ff37c43b9e55e19"
        ),
        "train-labels-idx1-ubyte.gz": (
            "ec02e7948609e5754d47881c09b8afdd8dfa60600b9e5388c8c54a67069ec772"
        ),
    },
    "adbench": {
        "1_ALOI.npz": "792d0b5bd1147bfc9574a1974f157b39fbd4cbed8ecd04cf983fd554498ed477",
        "4_breastw.npz": "4f37ce07dbc25ddad8178fdc6d664ab46d2d0000ee28c2787c3c7ff3c03ef9f6",
        "5_campaign.npz": "74dd4d0072d6c6f1aabab63bc102f9633454f32bb936fa9bcfbd38f9f2386bcd",
        "8_celeba.npz": "1cadfdea14cd8d240eca715a70c09c88af8621d086a7478c63f602d97adef0b5",
        "10_cover.npz": "945a097c3542ae81a551bf1c06dcad78a755d94f84fcaf1d60687e42d1a656df",
        "11_donors.npz": "5824ec854465f2763b4bfe3da1ae9f25ed5433b5c6e265d42e37da4f82a58679",
        "14_glass.npz": "aa7a8db1d475ba01a10488af454bc15220a3d5951b010b03b7020567d8152cdc",
        "15_Hepatitis.npz": "4a87a2f7d8013e5bfde63294fae61ec7a612322de72f338a7f9491749025ad98",
        "16_http.npz": "9d98710091551587f4740cfc851a6b064fff6319a337c2dc77ee6da4bcc2e02c",
        "17_InternetAds.npz": "bdd8ad5cf5bf2cb96cba53dde30d522d0f6a279083a8e2bc7efbac5981b04385",
        "18_Ionosphere.npz": "bca46cb0cfd1bf9ddef6cde5ad2215d54fb0189508d0d4c4eb98e788cad69001",
        "21_Lymphography.npz": "dad977b04f4ea65b78ccd0e9f76b45175bad605165b37e63f3cc177845e67037",
        "24_mnist.npz": "be7706272325fdd3592c1be555ae1a82f916a2f8545f4f8cbaa548ab102cc44c",
        "29_Pima.npz": "215454bb263a2f040945c9ea7bd7f06f1e89a61a3143bdb6f196e3887e801a7d",
        "31_satimage-2.npz": "1b056e357f801b8b20c3f380a30224a3c4088d7ed764ec5a24828dc9b1918d6f",
        "33_skin.npz": "d02aa01ffc1b6bf2b8b1ac250c90e8a8eacd0cefc962940ed5cc4bf5deac9c95",
        "34_smtp.npz": "d2569fc9bc12115419e3f5b37d19921e10e6c26e5ad1e61064cfb0fbc402dfdd",
        "37_Stamps.npz": "99fe739447284f613fa54bf2dccdb51c5120175ce6260adec6dad77576c42509",
        "39_vertebral.npz": "0816286f92b96fe6867664a41a031ac7228dcfbf1a5feefe50ca3883b2e9073d",
        "42_WBC.npz": "650f9dcb129248f67a291be0974f533ef259fcbde50fce5c8ad2a1cb2652d03b",
        "43_WDBC.npz": "78d4606a1ab516f5b60b00c196497f3bbd6bd5e4548fd04cf5f2475209b34b85",
        "45_wine.npz": "d5ad8965d92cc57122fe1e6572bb301adbaf795b3e166d187ae00a704d8f6e20",
        "46_WPBC.npz": "68a6d67242643855713bcdad07d89ecc472bd00000dccc17ba87916eb2693d19",
        "47_yeast.npz": "bbb15c873d78a4f6a589f46d0f75814595e2282d2ae7ce7779c750f276c3770d",
        "arrhythmia.npz": "c7123b50dfc02d6846c571688ad534707e11517025a4feb2758b07ed72e6dfd6",
    },
}

SHA256: dict[str, str] = {
    f"{folder}/{file}": digest
    for folder, files in _SHA256_BY_FOLDER.items()
    for file, digest in files.items()
}


def data_root() -> Path:
    """The folder holding the named datasets: env GENAD_DATA_DIR or ~/.cache/genad."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def list_datasets() -> list[str]:
    """The names `load_dataset` knows: the image sets, then "adbench/<name>" per ADBench set."""
    return [*IMAGE_SETS, *sorted(_adbench_names(), key=str.lower)]


def source_url(relative_path: str) -> str:
    """The URL of a catalog file: under GENAD_DATA_MIRROR when set, else its public source."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return f"{mirror.rstrip('/')}/{relative_path}"
    if relative_path in NOT_DOWNLOADABLE:
        raise DatasetNotFoundError(
            f"{data_root() / relative_path} is missing and cannot be downloaded: "
            f"{NOT_DOWNLOADABLE[relative_path]}. Copy it there, point {DATA_DIR_ENV} at a folder "
            f"that has it, or set {MIRROR_ENV} to a mirror that serves it."
        )
    folder, file = relative_path.split("/", 1)
    return SOURCES[folder] + file


def fetch(relative_path: str, *, timeout: float = 60.0) -> Path:
    """The local path of a catalog file, downloading and checking it first if it is missing."""
    path = data_root() / relative_path
    if not path.exists():
        download_file(source_url(relative_path), path, SHA256[relative_path], timeout=timeout)
    return path


def load_dataset(
    name_or_uri: str | os.PathLike[str],
    *,
    split: str | None = None,
    label_column: str | None = None,
) -> Dataset:
    """Load a named dataset (see `list_datasets`) or a local file or folder.

    Names: "fashion-mnist" and "mnist" give uint8 images (n, 1, 28, 28) with int64 class labels,
    for `split` "train" (the default), "test" or "all" (train then test); "adbench/<name>" gives
    float64 X and int64 y (1 = anomaly), matching the file stem case-insensitively with or without
    its number ("adbench/breastw" is 4_breastw.npz). Anything else is a path or file:// URI to an
    IDX, .npz, .csv or .parquet file or a folder of PNG/JPEG images (write "./mnist" for a local
    folder that shares a dataset's name); `label_column` names its label column (npz: label key).
    """
    if isinstance(name_or_uri, str) and _is_catalog_name(name_or_uri):
        if label_column is not None:
            raise ValueError(f"label_column applies to files, not to dataset {name_or_uri!r}.")
        if name_or_uri.lower() in IMAGE_SETS:
            return _load_image_set(name_or_uri.lower(), split or "train")
        _check_split(split, ("all",), name_or_uri)
        return _load_adbench(name_or_uri.split("/", 1)[1])
    _check_split(split, ("all",), name_or_uri)
    path = to_path(name_or_uri)
    if not path.exists() and isinstance(name_or_uri, str) and _looks_like_name(path):
        raise UnknownDatasetError(
            f"Unknown dataset {name_or_uri!r} (and no such file). Known datasets: "
            f"{', '.join(list_datasets())}."
        )
    return read_path(path, label_column=label_column)


def _load_image_set(name: str, split: str) -> Dataset:
    _check_split(split, SPLITS, name)
    prefixes = list(IMAGE_SPLITS.values()) if split == "all" else [IMAGE_SPLITS[split]]
    images, labels = [], []
    for prefix in prefixes:
        images.append(read_idx(fetch(f"{name}/{prefix}-images-idx3-ubyte.gz")))
        labels.append(read_idx(fetch(f"{name}/{prefix}-labels-idx1-ubyte.gz")))
    X = np.concatenate(images)[:, np.newaxis]
    return Dataset(X, np.concatenate(labels).astype(np.int64), name, kind="image")


def _load_adbench(query: str) -> Dataset:
    key = query.lower().removesuffix(".npz")
    names = _adbench_names()
    for name, path in names.items():
        stem = Path(path).stem
        if key in (stem.lower(), _unnumbered(stem).lower()):
            data = read_npz(fetch(path))
            return Dataset(data.X.astype(np.float64), data.y, name)
    raise UnknownDatasetError(
        f"Unknown ADBench dataset {query!r}. Known: {', '.join(sorted(names, key=str.lower))}."
    )


def _adbench_names() -> dict[str, str]:
    """'adbench/<stem without its number>' -> relative path of the file."""
    return {
        f"adbench/{_unnumbered(Path(path).stem)}": path
        for path in SHA256
        if path.startswith("adbench/")
    }


def _unnumbered(stem: str) -> str:
    return re.sub(r"^\d+_", "", stem)


def _is_catalog_name(text: str) -> bool:
    return text.lower() in IMAGE_SETS or text.lower().startswith("adbench/")


def _looks_like_name(path: Path) -> bool:
    return len(path.parts) == 1 and not path.suffix


def _check_split(split: str | None, allowed: tuple[str, ...], name: object) -> None:
    if split is not None and split not in allowed:
        raise ValueError(f"split for {name!r} must be one of {allowed} or None, got {split!r}.")

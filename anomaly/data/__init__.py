"""Datasets for genad: named public sets (downloaded and checked on first use) and local files.

`load_dataset("fashion-mnist")`, `load_dataset("adbench/breastw")` or
`load_dataset("path/to/table.csv", label_column="label")` return a `Dataset`.
"""

from anomaly.data.catalog import data_root, list_datasets, load_dataset
from anomaly.data.download import ChecksumError, DownloadError
from anomaly.data.readers import (
    Dataset,
    DatasetFormatError,
    DatasetNotFoundError,
    UnknownDatasetError,
)

__all__ = [
    "ChecksumError",
    "Dataset",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DownloadError",
    "UnknownDatasetError",
    "data_root",
    "list_datasets",
    "load_dataset",
]

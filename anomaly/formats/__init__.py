"""The input formats genad reads, one module each, registered here.

A format module defines one `InputFormat` (see `anomaly.formats.base`): how to read an input
whole (`anomaly.data` for training and evaluation), how to stream it in bounded memory
(`anomaly.batchio` for batch scoring), and what it can do (`has_column_names`,
`per_row_files`, `holds_images`, its partitioning and column checks). Callers ask those
capabilities, never the format's name. Adding a format is one module plus one line in
`FILE_FORMATS` below (keyed by the file suffix, lower case); folders are image folders.
"""

from __future__ import annotations

from pathlib import Path

from anomaly.formats import csvfiles, imagefiles, npzfiles, parquetfiles
from anomaly.formats.base import BatchSource, InputFormat

__all__ = [
    "FILE_FORMATS",
    "FOLDER_FORMAT",
    "InputFormat",
    "column_format_labels",
    "format_for",
    "input_format",
]

FILE_FORMATS: dict[str, InputFormat] = {
    ".csv": csvfiles.CSV,
    ".parquet": parquetfiles.PARQUET,
    ".npz": npzfiles.NPZ,
}
FOLDER_FORMAT: InputFormat = imagefiles.IMAGES


def format_for(path: Path) -> InputFormat | None:
    """The format that reads `path`: the folder format for a folder, else the one registered
    for its suffix; None when none is."""
    if path.is_dir():
        return FOLDER_FORMAT
    return FILE_FORMATS.get(path.suffix.lower())


def input_format(source: BatchSource) -> InputFormat:
    """The format an opened source was opened as."""
    return {fmt.name: fmt for fmt in _registered()}[source.format]


def column_format_labels() -> str:
    """The formats whose rows have column names, for messages: "CSV and Parquet"."""
    names = [fmt.label for fmt in _registered() if fmt.has_column_names]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _registered() -> list[InputFormat]:
    return [*FILE_FORMATS.values(), FOLDER_FORMAT]

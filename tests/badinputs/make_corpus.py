"""Write the bad-input corpus: broken CSV, Parquet, npz and image-folder inputs, with what
each one must do, into `files/`, `expected.json` and the table of `README.md`.

Deterministic: the same bytes on every run (fixed seeds, fixed zip timestamps). Run it from
anywhere with the repository's venv: `.venv/bin/python tests/badinputs/make_corpus.py`.

Tabular files fit a model with features f0..f3 (the tests' `champion`), image folders a model
of 8x8 grayscale images. Each case says what is broken, the error (a substring) under the
"fail" policy and, under "skip", either the rejected (row, column) cells or why the whole
input still fails: "file" (the reader refuses it), "model" (readable, but it does not fit the
model) or "ok" (accepted: nothing to reject).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

HERE = Path(__file__).resolve().parent
FILES = HERE / "files"
FEATURES = ["f0", "f1", "f2", "f3"]
N_ROWS = 10
SIDE = 8


@dataclass
class Case:
    """One corpus input and what it must do."""

    path: str  # relative to files/
    kind: str  # "tabular" or "image": which model scores it
    broken: str
    error: str  # substring of the error under the "fail" policy
    where: list[str] = field(default_factory=list)  # more substrings: the row, the column
    skip: str | list[list] = "file"  # rejected [row, column] cells, or "file"/"model"/"ok"
    cli_error: str | None = None  # when `genad score` words it differently


def base_frame() -> pd.DataFrame:
    """Ten clean rows: features f0..f3 (3 significant digits) and a label."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(np.round(rng.normal(size=(N_ROWS, 4)), 3), columns=FEATURES)
    frame["label"] = 0
    return frame


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def with_cells(*cells: tuple[int, str, str]) -> str:
    """The base CSV with cells (row, column, text) replaced by the text as written."""
    frame = base_frame().astype(object)
    for i, (row, column, _) in enumerate(cells):
        frame.loc[row, column] = f"@CELL{i}@"
    text = csv_text(frame)
    for i, (_, _, value) in enumerate(cells):
        text = text.replace(f"@CELL{i}@", value)
    return text


def write_bytes(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """An npz with fixed zip timestamps (np.savez stamps the current time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=True)
            archive.writestr(
                zipfile.ZipInfo(f"{name}.npy", (1980, 1, 1, 0, 0, 0)), buffer.getvalue()
            )


def write_parquet(path: Path, table: pa.Table | pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(None), path)


def write_images(folder: Path, count: int = 4, *, mode: str = "L", size: int = SIDE) -> None:
    """`count` striped images img00.png... (grayscale 8x8 unless told)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(count):
        pixels = rng.integers(0, 40, size=(size, size)).astype(np.uint8)
        pixels[i % size, :] = 230
        image = Image.fromarray(pixels)
        image.convert(mode).save(folder / f"img{i:02d}.png")


Writer = Callable[[Path], object]


def case(
    path: str,
    broken: str,
    error: str,
    write: Writer,
    where: tuple[str, ...] = (),
    skip: str | list[list] = "file",
    cli_error: str | None = None,
) -> tuple[Case, Writer]:
    """A case and the function writing its input; image folders are scored by the image
    model, the rest by the tabular one."""
    kind = "image" if path.startswith("images/") else "tabular"
    return Case(path, kind, broken, error, list(where), skip, cli_error), write  # fmt: skip


def csv_cases() -> list[tuple[Case, Writer]]:
    """The CSV cases: missing rows and bad cells, then bad layouts and encodings."""
    return [*csv_cell_cases(), *csv_layout_cases()]


def csv_cell_cases() -> list[tuple[Case, Writer]]:
    """CSV inputs without rows, and with bad or unused cells."""
    frame = base_frame()
    header = csv_text(frame).splitlines(keepends=True)[0]
    extra = frame.assign(id=np.arange(N_ROWS), comment="fine")
    # fmt: off
    return [
        case("csv/empty.csv", "0 bytes", "empty file", lambda p: write_bytes(p, b"")),
        case("csv/header_only.csv", "a header line, no rows (a 0-row batch)", "no data rows",
             lambda p: write_bytes(p, header)),
        case("csv/blank_lines_only.csv", "a header, then blank lines", "no data rows",
             lambda p: write_bytes(p, header + "\n \n\r\n")),
        case("csv/missing_column.csv", "no column f3", "missing columns ['f3']",
             lambda p: write_bytes(p, csv_text(frame.drop(columns="f3")))),
        case("csv/extra_columns.csv", "extra columns id, comment: ignored", "",
             lambda p: write_bytes(p, csv_text(extra)), skip="ok"),
        case("csv/string_in_numeric.csv", "'abc' in numeric column f1",
             "non-numeric value 'abc'", lambda p: write_bytes(p, with_cells((3, "f1", "abc"))),
             ("'f1'", "data row 3"), [[3, "f1"]]),
        case("csv/nan_literal.csv", "NaN written in f2", "missing value",
             lambda p: write_bytes(p, with_cells((5, "f2", "NaN"))),
             ("'f2'", "data row 5"), [[5, "f2"]]),
        case("csv/empty_cell.csv", "an empty f0 cell", "missing value",
             lambda p: write_bytes(p, with_cells((0, "f0", ""))),
             ("'f0'", "data row 0"), [[0, "f0"]]),
        case("csv/inf.csv", "inf in f3 (row 7), -inf in f0 (row 8)", "infinite value inf",
             lambda p: write_bytes(p, with_cells((7, "f3", "inf"), (8, "f0", "-inf"))),
             ("'f3'", "data row 7"), [[7, "f3"], [8, "f0"]]),
        case("csv/huge_1e308.csv", "1e308: finite in float64, not in float32",
             "outside the float32 range", lambda p: write_bytes(p, with_cells((2, "f1", "1e308"))),
             ("'f1'", "data row 2"), [[2, "f1"]]),
        case("csv/overflow_1e400.csv", "1e400 overflows float64 to inf", "infinite value inf",
             lambda p: write_bytes(p, with_cells((4, "f2", "1e400"))),
             ("'f2'", "data row 4"), [[4, "f2"]]),
    ]
    # fmt: on


def csv_layout_cases() -> list[tuple[Case, Writer]]:
    """CSV inputs with other delimiters, ragged lines, other encodings, or not CSV at all."""
    frame, text = base_frame(), csv_text(base_frame())
    lines = text.splitlines(keepends=True)
    ragged = "".join(lines[:7]) + lines[7].rstrip("\n") + ",99\n" + "".join(lines[8:])
    short = "".join(lines[:2]) + "0.1,0.2,0.3\n" + "".join(lines[3:])
    multiline = csv_text(frame.assign(note="x")).replace("x\n", '"two\nlines"\n', 1)
    latin1 = with_cells((4, "f0", "@")).encode().replace(b"@", b"1.5\xb0")
    mixed = csv_text(frame.assign(note="caf@")).encode()
    mixed = mixed.replace(b"caf@", "café".encode(), 5).replace(b"caf@", b"caf\xe9")
    # fmt: off
    return [
        case("csv/semicolon_delimiter.csv", "';' as the delimiter", "';'-separated",
             lambda p: write_bytes(p, text.replace(",", ";"))),
        case("csv/tab_delimiter.csv", "tabs as the delimiter", "tab-separated",
             lambda p: write_bytes(p, text.replace(",", "\t"))),
        case("csv/ragged_extra_field.csv", "row 6 has 6 fields, the header 5",
             "line has 6 fields but the header has 5", lambda p: write_bytes(p, ragged),
             ("data row 6",), [[6, None]]),
        case("csv/ragged_short_line.csv", "row 1 has 3 fields: f3 is missing", "missing value",
             lambda p: write_bytes(p, short), ("'f3'", "data row 1"), [[1, "f3"]]),
        case("csv/duplicate_columns.csv", "the header names f1 twice",
             "duplicated column names ['f1']",
             lambda p: write_bytes(p, text.replace("label", "f1", 1))),
        case("csv/utf16.csv", "UTF-16 text (with its BOM)", "not UTF-8",
             lambda p: write_bytes(p, text.encode("utf-16"))),
        case("csv/utf8_bom.csv", "a UTF-8 byte order mark: accepted", "",
             lambda p: write_bytes(p, text.encode("utf-8-sig")), skip="ok"),
        case("csv/latin1_in_numeric.csv", "a latin-1 degree sign in f0 ('1.5\\xb0')",
             "non-numeric value", lambda p: write_bytes(p, latin1),
             ("not UTF-8", "'f0'", "data row 4"), [[4, "f0"]]),
        case("csv/mixed_encoding_note.csv",
             "UTF-8 and latin-1 text in an unused column: accepted", "",
             lambda p: write_bytes(p, mixed), skip="ok"),
        case("csv/quoted_multiline.csv", "a quoted field spanning two lines",
             "quoted fields spanning lines", lambda p: write_bytes(p, multiline)),
        case("csv/binary_png.csv", "PNG bytes named .csv", "not UTF-8",
             lambda p: write_bytes(p, png_bytes())),
        case("csv/no_header.csv", "numbers where the header should be", "missing columns",
             lambda p: write_bytes(p, "".join(lines[1:]))),
        case("csv/folder.csv", "a folder named .csv", "a folder, not a .csv file",
             lambda p: write_bytes(p / "README.txt", "a folder, not a CSV file\n")),
        case("csv/symlink_loop.csv", "a symbolic link to itself", "loop",
             lambda p: os.symlink(p.name, p), cli_error="input not found"),
        case("csv/table.txt", "an unsupported suffix", "unsupported input format '.txt'",
             lambda p: write_bytes(p, text)),
    ]
    # fmt: on


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def parquet_cases() -> list[tuple[Case, Writer]]:
    frame = base_frame()
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    whole = buffer.getvalue()
    nulls = pa.Table.from_pandas(frame, preserve_index=False)
    f1 = nulls["f1"].to_pylist()
    f1[2] = None
    nulls = nulls.set_column(1, "f1", pa.array(f1, pa.float64()))
    special = frame.copy()
    special.loc[0, "f0"], special.loc[9, "f3"] = np.inf, np.nan
    huge = frame.copy()
    huge.loc[5, "f2"] = 1e300
    duplicated = pa.table([frame[name] for name in [*FEATURES, "f0"]], names=[*FEATURES, "f0"])
    # fmt: off
    return [
        case("parquet/truncated.parquet", "the first half of a Parquet file",
             "not a readable Parquet file", lambda p: write_bytes(p, whole[: len(whole) // 2])),
        case("parquet/csv_text.parquet", "CSV text named .parquet",
             "not a readable Parquet file", lambda p: write_bytes(p, csv_text(frame))),
        case("parquet/zero_rows.parquet", "the schema, 0 rows", "no data rows",
             lambda p: write_parquet(p, frame.iloc[:0])),
        case("parquet/string_feature.parquet", "f2 stored as strings",
             "column 'f2' has non-numeric type",
             lambda p: write_parquet(p, frame.astype({"f2": str}))),
        case("parquet/null_cell.parquet", "a null in f1", "missing value",
             lambda p: write_parquet(p, nulls), ("'f1'", "data row 2"), [[2, "f1"]]),
        case("parquet/inf_and_nan.parquet", "inf in f0 (row 0), NaN in f3 (row 9)",
             "infinite value inf", lambda p: write_parquet(p, special),
             ("'f0'", "data row 0"), [[0, "f0"], [9, "f3"]]),
        case("parquet/huge_value.parquet", "1e300 in f2", "outside the float32 range",
             lambda p: write_parquet(p, huge), ("'f2'", "data row 5"), [[5, "f2"]]),
        case("parquet/missing_column.parquet", "no column f3", "missing columns ['f3']",
             lambda p: write_parquet(p, frame.drop(columns="f3"))),
        case("parquet/duplicate_columns.parquet", "two columns named f0",
             "duplicated column names ['f0']", lambda p: write_parquet(p, duplicated)),
    ]
    # fmt: on


def npz_cases() -> list[tuple[Case, Writer]]:
    X = base_frame()[FEATURES].to_numpy()
    with_bad = X.copy()
    with_bad[3, 1], with_bad[6, 0] = np.nan, -np.inf
    objects = np.empty(3, dtype=object)
    objects[:] = [{"a": 1}, [1, 2], "text"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("X.npy", (1980, 1, 1, 0, 0, 0)), b"\x00" * 4000)
    # fmt: off
    return [
        case("npz/no_X.npz", "arrays 'features' and 'y', no 'X'", "no array 'X'",
             lambda p: write_npz(p, features=X, y=np.zeros(N_ROWS))),
        case("npz/object_pickled.npz", "X is a pickled object array", "object dtype",
             lambda p: write_npz(p, X=objects)),
        case("npz/one_dimensional.npz", "X is 1-D", "expected 2-D",
             lambda p: write_npz(p, X=X[:, 0])),
        case("npz/five_dimensional.npz", "X is 5-D", "expected 2-D, 3-D or 4-D",
             lambda p: write_npz(p, X=np.zeros((2, 1, 1, 2, 2)))),
        case("npz/wrong_width.npz", "X has 3 columns, the model 4",
             "rows have shape (3,) but the model expects (4,)",
             lambda p: write_npz(p, X=X[:, :3]), skip="model"),
        case("npz/nan_and_inf.npz", "NaN at [3, 1], -inf at [6, 0]", "missing value",
             lambda p: write_npz(p, X=with_bad), ("'X[1]'", "data row 3"),
             [[3, "X[1]"], [6, "X[0]"]]),
        case("npz/strings.npz", "X holds strings", "non-numeric dtype <U",
             lambda p: write_npz(p, X=X.astype(str))),
        case("npz/complex.npz", "X is complex", "non-numeric dtype complex128",
             lambda p: write_npz(p, X=X.astype(complex))),
        case("npz/zero_rows.npz", "X has 0 rows", "no data rows",
             lambda p: write_npz(p, X=X[:0])),
        case("npz/truncated.npz", "the first 200 bytes of an npz", "not a valid .npz file",
             lambda p: (write_npz(p, X=X), write_bytes(p, p.read_bytes()[:200]))),
        case("npz/garbage_header.npz", "X.npy holds zeros, no .npy header",
             "corrupt .npy header", lambda p: write_bytes(p, buffer.getvalue())),
    ]
    # fmt: on


def image_cases() -> list[tuple[Case, Writer]]:
    def non_image(folder: Path) -> None:
        write_images(folder)
        write_bytes(folder / "img02.png", "not an image\n")

    def wrong_size(folder: Path) -> None:
        write_images(folder, 3)
        Image.fromarray(np.zeros((8, 10), np.uint8)).save(folder / "img03.png")

    def truncated(folder: Path) -> None:
        write_images(folder)
        data = (folder / "img01.png").read_bytes()
        write_bytes(folder / "img01.png", data[: len(data) // 2])

    def first_unreadable(folder: Path) -> None:
        write_images(folder)
        write_bytes(folder / "img00.png", b"\x89PNG\r\n\x1a\n garbage")

    # fmt: off
    return [
        case("images/non_image_file", "img02.png holds text", "image img02.png", non_image,
             ("not a readable image", "data row 2"), [[2, None]]),
        case("images/wrong_size", "img03.png is 10x8, the others 8x8", "image img03.png",
             wrong_size, ("image size (10, 8)", "data row 3"), [[3, None]]),
        case("images/truncated_png", "img01.png cut in half", "image img01.png", truncated,
             ("not a readable image", "data row 1"), [[1, None]]),
        case("images/first_unreadable", "img00.png (sets the shape) is garbage",
             "img00.png: not a readable image", first_unreadable),
        case("images/no_images", "a folder with a .txt file only", "no PNG or JPEG images",
             lambda p: write_bytes(p / "notes.txt", "no images here\n")),
        case("images/rgb_for_gray_model", "RGB images, the model is grayscale",
             "rows have shape (3, 8, 8) but the model expects (1, 8, 8)",
             lambda p: write_images(p, mode="RGB"), skip="model"),
    ]
    # fmt: on


def all_cases() -> list[tuple[Case, Writer]]:
    return [*csv_cases(), *parquet_cases(), *npz_cases(), *image_cases()]


def readme_table(cases: list[Case]) -> str:
    rows = ["| file | what is broken | error (fail policy) | skip policy |", "|---|---|---|---|"]
    outcomes = {"file": "fails (file-level)", "model": "fails (does not fit the model)",
                "ok": "scored, nothing rejected"}  # fmt: skip
    for one in cases:
        error = f"`{one.error}`" if one.error else "none: scored"
        if isinstance(one.skip, list):
            skip = "rejects " + ", ".join(f"row {r} ({c or 'whole row'})" for r, c in one.skip)
        else:
            skip = outcomes[one.skip]
        rows.append(f"| `{one.path}` | {one.broken} | {error} | {skip} |")
    return "\n".join(rows) + "\n"


def build(folder: Path) -> list[Case]:
    """Write every case's input under `folder` (emptied first); return the cases."""
    shutil.rmtree(folder, ignore_errors=True)
    cases = all_cases()
    for one, write in cases:
        target = folder / one.path
        target.parent.mkdir(parents=True, exist_ok=True)
        write(target)
    return [one for one, _ in cases]


def main() -> None:
    only = build(FILES)
    payload = [asdict(case) for case in only]
    (HERE / "expected.json").write_text(json.dumps(payload, indent=1) + "\n")
    readme = (HERE / "README.md").read_text()
    marker = "<!-- table -->\n"
    head = readme.split(marker)[0] if marker in readme else readme
    (HERE / "README.md").write_text(head + marker + readme_table(only))
    print(f"wrote {len(only)} cases under {FILES}")


if __name__ == "__main__":
    main()

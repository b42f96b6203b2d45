"""The batch scoring engine: score an input file partition by partition, in bounded memory.

`plan_batch` opens the input (CSV, Parquet, npz or an image folder) without reading it and
splits it into row ranges. `score_partition` scores one range chunk by chunk into its own part
file; parts are independent, so they can run in any order or process (a row's score depends
only on the model, the row and K), and `merge_parts` streams them, in order, into the output,
written to a temp path renamed on success, and computes the summary (`anomaly.manifest` keeps
the parts of a job so that a killed job resumes); `apply_batch_fdr` re-flags a scored file by
Benjamini-Hochberg over all its rows. Memory is bounded by the chunk size plus 8 bytes per row
(score and log_px as float32) for the exact quantiles.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from anomaly.atomic import atomic_file
from anomaly.batchio import (
    AtomicParquetWriter,
    BadRow,
    BatchSource,
    Partition,
    check_policy,
    input_format,
    iter_chunks,
    open_source,
    plan_partitions,
    with_columns,
)
from anomaly.data.readers import DatasetFormatError
from anomaly.packaged.scoring import ScoringModel, load_bundle
from anomaly.thresholds import benjamini_hochberg
from anomaly.typicality import TypicalityTest

REJECTED_COLUMNS = ("row_id", "column", "reason")
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


@dataclass(frozen=True)
class BatchPlan:
    """An opened input, its partitions and what to do with bad rows: "fail" (raise naming the
    file, row and column) or "skip" (leave them out and report them)."""

    source: BatchSource
    partitions: list[Partition]
    bad_rows: str = "fail"


def output_schema(with_files: bool) -> pa.Schema:
    """Columns of the scored output; image folders add the file name of each row."""
    fields = [pa.field("row_id", pa.int64())]
    if with_files:
        fields.append(pa.field("file", pa.string()))
    fields += [
        pa.field("log_px", pa.float64()),
        pa.field("normality", pa.float64()),
        pa.field("score", pa.float64()),
        pa.field("p_value", pa.float64()),
        pa.field("is_anomaly", pa.bool_()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
    ]
    return pa.schema(fields)


def plan_batch(
    input_path: str | os.PathLike,
    model: ScoringModel,
    *,
    rows_per_partition: int = 100_000,
    bad_rows: str = "fail",
) -> BatchPlan:
    """Open `input_path`, check it fits the model, and split it into partitions; `bad_rows`
    ("fail" or "skip") is what reading them will do with bad rows."""
    check_policy(bad_rows)
    if rows_per_partition < 1:
        raise ValueError(f"rows_per_partition must be >= 1, got {rows_per_partition}")
    source = open_source(Path(input_path).expanduser())  # one pass: a CSV's lines are counted
    if input_format(source).has_column_names:
        source = with_columns(source, model.feature_names)
    else:
        _check_row_shape(source, model)
    return BatchPlan(source, plan_partitions(source, rows_per_partition), bad_rows)


def _check_row_shape(source: BatchSource, model: ScoringModel) -> None:
    expected = model.input_shape
    got = tuple(source.row_shape)
    flat = (int(np.prod(expected)),)
    if got not in (expected, flat) and not (len(expected) == 3 and got == expected[1:]):
        raise DatasetFormatError(
            f"{source.path}: rows have shape {got} but the model expects {expected}"
            + (f" or flattened {flat}" if len(expected) == 3 else "")
        )


@functools.lru_cache(maxsize=4)
def cached_bundle(path: str) -> ScoringModel:
    """`load_bundle` once per process (Dask workers score many partitions with one model)."""
    return load_bundle(path)


def scored_tables(
    model: ScoringModel,
    plan: BatchPlan,
    partition: Partition,
    *,
    chunk_rows: int = 8192,
    rejected: list[BadRow] | None = None,
) -> Iterator[pa.Table]:
    """The output rows of one partition, one Arrow table per input chunk. Rows the plan's
    `bad_rows="skip"` policy left out are appended to `rejected` (when given)."""
    fmt = input_format(plan.source)
    with_files = fmt.per_row_files
    schema = output_schema(with_files)
    columns = model.feature_names if fmt.has_column_names else None
    chunks = iter_chunks(
        plan.source, partition, chunk_rows=chunk_rows, columns=columns, bad_rows=plan.bad_rows
    )
    for chunk in chunks:
        if rejected is not None:
            rejected.extend(chunk.rejected)
        scored = model.score_columns(chunk.X)
        n = len(chunk.row_ids)
        arrays = {"row_id": chunk.row_ids.astype(np.int64)}
        if with_files:
            arrays["file"] = chunk.keys
        arrays |= scored
        arrays["model_name"] = pa.repeat(pa.scalar(model.name), n)
        arrays["model_version"] = pa.repeat(pa.scalar(str(model.version)), n)
        yield pa.table(arrays, schema=schema)


def score_partition(
    model: ScoringModel,
    plan: BatchPlan,
    partition: Partition,
    part_path: str | os.PathLike,
    *,
    chunk_rows: int = 8192,
    rejected_path: str | os.PathLike | None = None,
) -> dict[str, int]:
    """Score one partition chunk by chunk into the Parquet file `part_path` (atomically).
    Under the plan's "skip" policy the rows left out go to the CSV `rejected_path` (written
    first, atomically, even when empty)."""
    rows = flagged = 0
    rejected: list[BadRow] = []
    schema = output_schema(input_format(plan.source).per_row_files)
    with AtomicParquetWriter(part_path, schema) as writer:
        for table in scored_tables(
            model, plan, partition, chunk_rows=chunk_rows, rejected=rejected
        ):
            writer.write(table)
            rows += table.num_rows
            flagged += int(pc.sum(table["is_anomaly"]).as_py() or 0)
        if plan.bad_rows == "skip" and rejected_path is not None:
            write_rejected(rejected, rejected_path)
    counts = {"partition": partition.index, "rows": rows, "flagged": flagged}
    return counts | ({"rejected": len(rejected)} if plan.bad_rows == "skip" else {})


def write_rejected(rejected: Sequence[BadRow], path: str | os.PathLike) -> None:
    """The rows left out, as CSV (row_id, column, reason; column empty for a whole row)."""
    frame = pd.DataFrame(
        {
            "row_id": [bad.row_id for bad in rejected],
            "column": [bad.column or "" for bad in rejected],
            "reason": [bad.reason for bad in rejected],
        },
        columns=list(REJECTED_COLUMNS),
    )
    with atomic_file(path) as staging:
        frame.to_csv(staging, index=False)


def merge_rejected(paths: Sequence[str | os.PathLike], output: str | os.PathLike) -> int:
    """Concatenate per-partition rejected-row CSVs in order into `output` (atomically); the
    number of rows listed."""
    listed = 0
    with atomic_file(output) as staging, open(staging, "w", encoding="utf-8") as merged:
        merged.write(",".join(REJECTED_COLUMNS) + "\n")
        for path in paths:
            with open(path, encoding="utf-8") as part:
                next(part)  # the header
                for line in part:
                    merged.write(line)
                    listed += 1
    return listed


def merge_parts(
    part_paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    schema: pa.Schema,
    *,
    top_k: int = 20,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Concatenate part files in order into `output` (atomically); return the summary. With
    `labels` (one per part), each row also gets its part's label in an `input_file` column."""
    if labels is not None and len(labels) != len(part_paths):
        raise ValueError(f"{len(labels)} labels for {len(part_paths)} parts")
    summary = _SummaryBuilder(top_k)
    merged = schema if labels is None else schema.append(pa.field("input_file", pa.string()))
    with AtomicParquetWriter(output, merged) as writer:
        for index, part in enumerate(part_paths):
            parquet = pq.ParquetFile(part)
            for batch in parquet.iter_batches(batch_size=65536):
                table = pa.Table.from_batches([batch], schema=schema)
                if labels is not None:
                    label = pa.array([labels[index]] * table.num_rows, pa.string())
                    table = table.append_column("input_file", label)
                writer.write(table)
                summary.add(table)
    return summary.result()


class _SummaryBuilder:
    """Rows, anomaly rate, exact quantiles (float32) and the top-k most anomalous rows."""

    def __init__(self, top_k: int) -> None:
        self.top_k = top_k
        self.scores: list[np.ndarray] = []
        self.log_px: list[np.ndarray] = []
        self.flagged = 0
        self.top = pd.DataFrame()
        self.model: dict[str, str] = {}

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        score = table["score"].to_numpy()
        self.scores.append(score.astype(np.float32))
        self.log_px.append(table["log_px"].to_numpy().astype(np.float32))
        self.flagged += int(pc.sum(table["is_anomaly"]).as_py() or 0)
        columns = ("input_file", "row_id", "file", "log_px", "normality", "score")
        keep = [c for c in columns if c in table.column_names]
        k = min(self.top_k, len(score))
        best = np.argpartition(-score, k - 1)[:k] if k else np.empty(0, np.int64)
        candidates = pd.concat([self.top, table.take(best).select(keep).to_pandas()])
        self.top = candidates.nlargest(self.top_k, "score", keep="first")
        self.model = {
            "model_name": str(table["model_name"][0]),
            "model_version": str(table["model_version"][0]),
        }

    def result(self) -> dict[str, Any]:
        rows = int(sum(len(s) for s in self.scores))
        summary: dict[str, Any] = {"rows": rows, "anomalies": self.flagged, **self.model}
        summary["anomaly_rate"] = self.flagged / rows if rows else 0.0
        for name, parts in (("score", self.scores), ("log_px", self.log_px)):
            values = np.concatenate(parts) if parts else np.empty(0, np.float32)
            summary[f"{name}_quantiles"] = (
                {f"q{q:g}": float(np.quantile(values, q)) for q in QUANTILES} if rows else {}
            )
        summary["top_anomalies"] = self.top.sort_values(
            ["score", "row_id"], ascending=[False, True]
        ).to_dict("records")
        return summary


def apply_batch_fdr(
    scored: str | os.PathLike, output: str | os.PathLike, level: float, summary: dict[str, Any]
) -> dict[str, Any]:
    """Re-flag a scored file by Benjamini-Hochberg at `level` over all its p-values, writing
    `output` atomically; return `summary` with the new counts. Holds 8 bytes per row."""
    p_values = pq.read_table(scored, columns=["p_value"])["p_value"].to_numpy()
    flagged = benjamini_hochberg(p_values, level)
    cutoff = float(p_values[flagged].max()) if flagged.any() else -1.0
    parquet = pq.ParquetFile(scored)
    column = parquet.schema_arrow.get_field_index("is_anomaly")
    with AtomicParquetWriter(output, parquet.schema_arrow) as writer:
        for batch in parquet.iter_batches(batch_size=65536):
            table = pa.Table.from_batches([batch])
            flags = pc.less_equal(table["p_value"], cutoff)
            writer.write(table.set_column(column, "is_anomaly", flags))
    rate = float(flagged.mean()) if len(p_values) else 0.0
    return {**summary, "anomalies": int(flagged.sum()), "anomaly_rate": rate}


def apply_typicality(
    scored: str | os.PathLike,
    groups_path: str | os.PathLike,
    test: TypicalityTest,
    group_size: int,
    level: float,
) -> dict[str, Any]:
    """Test consecutive groups of `group_size` rows of a scored file (in row order) for
    typicality of their mean `normality`, and the whole file as one group; write the group
    table (group, first_row, rows, mean_score, statistic, p_value, is_atypical) to
    `groups_path` atomically and return its summary. Holds 8 bytes per row."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"the typicality level must be in (0, 1), got {level}")
    normality = pq.read_table(scored, columns=["normality"])["normality"].to_numpy()
    if len(normality) == 0:
        return {"group_size": group_size, "level": level, "groups": 0, "atypical_groups": 0}
    groups = test.test_groups(normality, group_size)
    groups["is_atypical"] = groups["p_value"] <= level
    with atomic_file(groups_path) as staging:
        pq.write_table(pa.table(groups), staging)
    return {
        "group_size": group_size,
        "level": level,
        "groups": len(groups["group"]),
        "atypical_groups": int(groups["is_atypical"].sum()),
        "whole_input_p_value": test.p_value(normality),
        "groups_file": str(groups_path),
    }

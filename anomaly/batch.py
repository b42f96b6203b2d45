"""The batch scoring engine: score an input file partition by partition, in bounded memory.

`plan_batch` opens the input (CSV, Parquet, npz or an image folder) without reading it and
splits it into row ranges. `score_partition` scores one range chunk by chunk into its own
Parquet part file; parts are independent, so they can run in any order or process (the
scores are batch-invariant: a row's score depends only on the model, the row and K).
`merge_parts` streams the parts, in order, into the final Parquet file (written to a temp
path and renamed) and computes the summary. Memory is bounded by the chunk size plus 8 bytes
per row (score and log_px as float32) for the exact quantiles.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from anomaly.atomic import atomic_file
from anomaly.batchio import (
    AtomicParquetWriter,
    BatchSource,
    Partition,
    iter_chunks,
    open_source,
    plan_partitions,
)
from anomaly.data.readers import DatasetFormatError
from anomaly.scoring import ScoringModel, load_bundle

QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


@dataclass(frozen=True)
class BatchPlan:
    """An opened input and its partitions."""

    source: BatchSource
    partitions: list[Partition]


def output_schema(with_files: bool) -> pa.Schema:
    """Columns of the scored output; image folders add the file name of each row."""
    fields = [pa.field("row_id", pa.int64())]
    if with_files:
        fields.append(pa.field("file", pa.string()))
    fields += [
        pa.field("log_px", pa.float64()),
        pa.field("score", pa.float64()),
        pa.field("is_anomaly", pa.bool_()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
    ]
    return pa.schema(fields)


def plan_batch(
    input_path: str | os.PathLike, model: ScoringModel, *, rows_per_partition: int = 100_000
) -> BatchPlan:
    """Open `input_path`, check it fits the model, and split it into partitions."""
    if rows_per_partition < 1:
        raise ValueError(f"rows_per_partition must be >= 1, got {rows_per_partition}")
    path = Path(input_path).expanduser()
    probe = open_source(path)
    tabular_file = probe.format in ("csv", "parquet")
    source = open_source(path, columns=model.feature_names) if tabular_file else probe
    if not tabular_file:
        _check_row_shape(source, model)
    return BatchPlan(source, plan_partitions(source, rows_per_partition))


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


def score_partition(
    model: ScoringModel,
    plan: BatchPlan,
    partition: Partition,
    part_path: str | os.PathLike,
    *,
    chunk_rows: int = 8192,
) -> dict[str, int]:
    """Score one partition chunk by chunk into the Parquet file `part_path` (atomically)."""
    with_files = plan.source.format == "images"
    columns = model.feature_names if plan.source.format in ("csv", "parquet") else None
    rows = flagged = 0
    with AtomicParquetWriter(part_path, output_schema(with_files)) as writer:
        for chunk in iter_chunks(plan.source, partition, chunk_rows=chunk_rows, columns=columns):
            scored = model.score_array(chunk.X)
            frame = pd.DataFrame({"row_id": chunk.row_ids.astype(np.int64)})
            if with_files:
                frame["file"] = chunk.keys
            frame = pd.concat([frame, scored], axis=1)
            frame["model_name"] = model.name
            frame["model_version"] = str(model.version)
            writer.write(frame)
            rows += len(frame)
            flagged += int(scored["is_anomaly"].sum())
    return {"partition": partition.index, "rows": rows, "flagged": flagged}


def merge_parts(
    part_paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    schema: pa.Schema,
    *,
    top_k: int = 20,
) -> dict[str, Any]:
    """Concatenate part files in order into `output` (atomically); return the summary."""
    summary = _SummaryBuilder(top_k)
    with AtomicParquetWriter(output, schema) as writer:
        for part in part_paths:
            parquet = pq.ParquetFile(part)
            for batch in parquet.iter_batches(batch_size=65536):
                table = pa.Table.from_batches([batch], schema=schema)
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
        frame = table.to_pandas()
        if frame.empty:
            return
        self.scores.append(frame["score"].to_numpy(np.float32))
        self.log_px.append(frame["log_px"].to_numpy(np.float32))
        self.flagged += int(frame["is_anomaly"].sum())
        keep = [c for c in ("row_id", "file", "log_px", "score") if c in frame.columns]
        candidates = pd.concat([self.top, frame.nlargest(self.top_k, "score")[keep]])
        self.top = candidates.nlargest(self.top_k, "score", keep="first")
        self.model = {
            "model_name": str(frame["model_name"].iloc[0]),
            "model_version": str(frame["model_version"].iloc[0]),
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


def write_json_atomic(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write JSON to a temp file beside `path`, then rename it over `path`."""
    with atomic_file(path) as staging:
        staging.write_text(json.dumps(payload, indent=2, default=_json_default))
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

"""Atomic Parquet output: a temp file beside the target, renamed into place on success."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from anomaly.formats.dataset import to_path


class AtomicParquetWriter:
    """Context manager writing Parquet to a temp file renamed onto `path` on success only.

    On an exception the temp file is removed and any existing file at `path` is left as is.
    Zero writes still produce a valid, empty Parquet file with the schema.
    """

    def __init__(self, path: str | os.PathLike[str], schema: pa.Schema) -> None:
        self.path = to_path(path)
        self.schema = schema
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> AtomicParquetWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            self._writer = pq.ParquetWriter(self._tmp, self.schema)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        return self

    def write(self, table_or_frame: pa.Table | pd.DataFrame) -> None:
        """Append a pyarrow Table or pandas DataFrame (converted to the schema)."""
        if self._writer is None:
            raise RuntimeError("AtomicParquetWriter.write() outside its with-block")
        table = table_or_frame
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, schema=self.schema, preserve_index=False)
        elif not table.schema.equals(self.schema, check_metadata=False):
            table = table.select(self.schema.names).cast(self.schema)
        self._writer.write_table(table)

    def __exit__(self, exc_type: type[BaseException] | None, *exc_rest: object) -> None:
        assert self._writer is not None and self._tmp is not None
        try:
            self._writer.close()
        except Exception:
            if exc_type is None:  # else the with-block's own exception propagates
                raise
        else:
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            self._writer = None
            self._tmp.unlink(missing_ok=True)

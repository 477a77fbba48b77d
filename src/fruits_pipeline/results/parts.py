"""Outputs written by the executors, one file per task: parquet tables and text.

Spark's own writers encode every row in the JVM.  For the job's tables that is slow where
it matters most: parquet-mr writes a row's 1280 floats one value at a time, and Spark's
float-to-string cast is Java's ``Float.toString`` per number (docs/performance.md has the
figures).  Here each task gets its rows as arrow batches (``mapInArrow``); the Python worker
computes what the batch needs (a projection, CSV lines) and writes one file with Arrow's
C++ writers, atomically, under a name made of the task's partition number and a token of
the write, so a retried task replaces its file rather than adding one.  The driver gets one
``Part`` per file and never sees a row.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame

from fruits_pipeline.results import storage
from fruits_pipeline.results.arrays import array_matrix, matrix_array
from fruits_pipeline.session import session_conf

#: What a task returns per file it wrote.
PART_SUMMARY = "part string, rows long"
#: Rows per arrow batch a task gets: one matrix product, one parquet row group each
#: (1024 rows of 1280 floats: 5 MB).
ROWS_PER_BATCH = 1024


@dataclass(frozen=True)
class Part:
    """One file the executors wrote: its name under the folder, and its rows."""

    name: str
    rows: int


@dataclass(frozen=True)
class DerivedColumn:
    """A float32 array column computed, a batch of rows at a time, from another one:
    ``compute`` maps a rows x n matrix of ``source`` to a rows x m one."""

    name: str
    source: str
    compute: Callable[[np.ndarray], np.ndarray]

    def append_to(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Return ``batch`` with this column added last."""
        values = self.compute(array_matrix(batch.column(self.source)))
        return pa.RecordBatch.from_arrays(
            [*batch.columns, matrix_array(values)],
            schema=batch.schema.append(pa.field(self.name, pa.list_(pa.float32()))),
        )


def part_name(token: str, suffix: str) -> str:
    """Return the name of the file the running task writes: ``part-NNNNN-TOKEN.SUFFIX``,
    NNNNN its partition, so that names sort as the partitions do."""
    from pyspark import TaskContext

    return f"part-{TaskContext.get().partitionId():05d}-{token}{suffix}"


def write_parquet_parts(
    frame: DataFrame, uri: str, derived: DerivedColumn | None = None
) -> list[Part]:
    """Write ``frame`` (with ``derived`` appended) as a parquet table at the folder ``uri``
    (local or ``s3://``), replacing whatever is there: one file per task, snappy, no
    dictionary encoding (as ``storage.PARQUET_OPTIONS``); return the files.  A frame without
    rows gets one empty file, so that the table can be read (and has its schema)."""
    storage.remove(uri)
    token = uuid.uuid4().hex[:12]

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = (batch for batch in batches if batch.num_rows)
        first = next(batches, None)
        if first is None:
            return
        if derived is not None:
            first = derived.append_to(first)
        name = part_name(token, ".snappy.parquet")
        rows = 0
        with (
            storage.atomic_file(storage.join(uri, name)) as handle,
            pq.ParquetWriter(
                handle, first.schema, compression="snappy", use_dictionary=False
            ) as writer,
        ):
            batch = first
            while batch is not None:
                writer.write_batch(batch)
                rows += batch.num_rows
                batch = next(batches, None)
                if batch is not None and derived is not None:
                    batch = derived.append_to(batch)
        yield pa.RecordBatch.from_pydict({"part": [name], "rows": [rows]})

    parts = collect_parts(frame, write)
    if not parts:
        from pyspark.sql.pandas.types import to_arrow_schema

        schema = to_arrow_schema(frame.schema)
        if derived is not None:
            schema = schema.append(pa.field(derived.name, pa.list_(pa.float32())))
        name = f"part-00000-{token}.snappy.parquet"
        with storage.atomic_file(storage.join(uri, name)) as handle:
            pq.write_table(schema.empty_table(), handle, compression="snappy")
        parts = [Part(name, 0)]
    return parts


def write_text_parts(
    frame: DataFrame, uri: str, text: Callable[[pa.RecordBatch], bytes]
) -> list[Part]:
    """Write ``text(batch)`` of every batch of ``frame``, in the frame's order, into one file
    per task under the folder ``uri``; return the files in partition order (a sorted frame's
    parts, read in that order, are sorted).  Tasks without rows write nothing."""
    token = uuid.uuid4().hex[:12]

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = (batch for batch in batches if batch.num_rows)
        first = next(batches, None)
        if first is None:
            return
        name = part_name(token, ".txt")
        rows = 0
        with storage.atomic_file(storage.join(uri, name)) as handle:
            batch = first
            while batch is not None:
                handle.write(text(batch))
                rows += batch.num_rows
                batch = next(batches, None)
        yield pa.RecordBatch.from_pydict({"part": [name], "rows": [rows]})

    return sorted(collect_parts(frame, write), key=lambda part: part.name)


def collect_parts(frame: DataFrame, write) -> list[Part]:
    """Run ``write`` over ``frame``'s partitions in the executors; return its parts."""
    spark = frame.sparkSession
    with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(ROWS_PER_BATCH)}):
        rows = frame.mapInArrow(write, PART_SUMMARY).collect()
    return [Part(row["part"], int(row["rows"])) for row in rows]

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
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

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


@dataclass(frozen=True)
class SourceFiles:
    """Parquet files the workers read themselves (``uris``: a DataFrame of their URIs as
    Spark's ``inputFiles`` gives them, column ``uri``; ``count`` of them), what they keep of
    each (``select``: a file's table to the rows and columns wanted) and the schema of what
    is kept."""

    uris: DataFrame
    count: int
    select: Callable[[pa.Table], pa.Table]
    schema: pa.Schema


#: Source files per task, at most: the stored units hold 256 rows each, so a task writes
#: a part of up to 16,384 rows (80 MB of features).
FILES_PER_TASK = 64


def write_parquet_parts(
    spark: SparkSession, source: SourceFiles, uri: str, derived: DerivedColumn | None = None
) -> list[Part]:
    """Write what ``source`` keeps of its files (with ``derived`` appended) as a parquet
    table at the folder ``uri`` (local or ``s3://``; the caller removes an old one); return
    the files written.  The workers read the source files with Arrow, never through the
    JVM's rows: one task per ``FILES_PER_TASK`` files, at least one per core, one part file
    each, snappy, no dictionary encoding (as ``storage.PARQUET_OPTIONS``).  Without rows
    the table is one empty file, so that it can be read (and has its schema)."""
    token = uuid.uuid4().hex[:12]
    # what the workers need of ``source``: never its DataFrame
    select, kept = source.select, source.schema
    schema = kept
    if derived is not None:
        schema = schema.append(pa.field(derived.name, pa.list_(pa.float32())))

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        name = part_name(token, ".snappy.parquet")
        rows = 0
        with ExitStack() as open_files:
            writer = None
            for file_uri in (u for batch in batches for u in batch.column("uri").to_pylist()):
                table = select(storage.read_parquet(file_uri)).cast(kept)
                for batch in table.to_batches(max_chunksize=ROWS_PER_BATCH):
                    if derived is not None:
                        batch = derived.append_to(batch)
                    if writer is None:
                        handle = open_files.enter_context(
                            storage.atomic_file(storage.join(uri, name))
                        )
                        writer = open_files.enter_context(
                            pq.ParquetWriter(
                                handle, schema, compression="snappy", use_dictionary=False
                            )
                        )
                    writer.write_batch(batch)
                    rows += batch.num_rows
        if rows:
            yield pa.RecordBatch.from_pydict({"part": [name], "rows": [rows]})

    parts = []
    if source.count:
        cores = spark.sparkContext.defaultParallelism
        tasks = max(min(source.count, cores), -(-source.count // FILES_PER_TASK))
        # A DataFrame made in the JVM, not a Python list or an RDD: the SQL functions' Python
        # workers are the extraction's, already started and warm; an RDD job, or a DataFrame
        # made from a Python list, starts others (2-3 s, and their memory).
        parts = collect_parts(source.uris.repartition(tasks), write)
    if not parts:
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

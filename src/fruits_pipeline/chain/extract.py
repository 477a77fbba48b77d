"""Step 3 of the job: images to features, in the workers, once per image.

``featurize_units`` runs the CNN in the Python workers (``mapInPandas``): it decodes,
resizes and preprocesses a batch of images and runs the engine's extractor on the decodable
ones.  An image that cannot be decoded becomes a row with an ``error`` and no features: it
never fails the job.  Each worker writes its rows itself, as units of the run's staging
(``results/staging.py``), so that a run that dies keeps all but the units in progress.

``extract`` runs it over the images a run must featurize and returns the stored rows, one
per listed image (features, or the error; the files Spark's scan skips included), reused
ones too, so that the later steps read the CNN's output instead of recomputing it.
``count_rows`` counts what was stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_pipeline import __version__
from fruits_pipeline.chain.images import (
    MODEL_INPUT_SIZE,
    REJECT_REASONS,
    ImageDecodeError,
    decode_image,
    preprocess,
    reject_reason,
)
from fruits_pipeline.chain.listing import (
    IDENTITY,
    Listing,
    input_files,
    label_column,
    partition_conf,
)
from fruits_pipeline.chain.provenance import provenance
from fruits_pipeline.chain.weights import LoadedWeights
from fruits_pipeline.engines import Engine, PreparedNetwork
from fruits_pipeline.memory import driver_jvm_pid, own_peak_rss_mb, process_peak_rss_mb
from fruits_pipeline.progress import log_progress
from fruits_pipeline.results import storage
from fruits_pipeline.results.parts import SourceFiles
from fruits_pipeline.results.report import (
    CnnFacts,
    Counts,
    LabelCount,
    MemoryFacts,
    ModelBuilds,
    ProvenanceFacts,
    Settings,
)
from fruits_pipeline.results.staging import UNIT_IMAGES, Staging, write_unit
from fruits_pipeline.session import session_conf, versions

log = logging.getLogger(__name__)

#: One stored row per listed image: its identity and label, then features or the error.
STORED_COLUMNS = ["path", "label", "length", "modificationTime", "features", "error"]
STORED_SCHEMA = (
    "path string, label string, length long, modificationTime timestamp, "
    "features array<float>, error string"
)

#: What a worker returns per unit it wrote: the unit's file name and its rows (never their
#: paths: the driver's Python must not hold one string per image).
UNIT_SUMMARY = "unit string, rows long"

EMPTY_ERROR = "empty: the file has 0 bytes"
UNREADABLE_ERROR = "unreadable: listed, but it vanished or could not be read"


class StagedRowsLostError(RuntimeError):
    """Rows this run staged went missing before it could read them: the run fails (exit 1)
    rather than report its own images as unreadable inputs."""


def stored_arrow_schema():
    """``STORED_SCHEMA`` as arrow types, as the workers write the units."""
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("label", pa.string()),
            ("length", pa.int64()),
            ("modificationTime", pa.timestamp("us", tz="UTC")),
            ("features", pa.list_(pa.float32())),
            ("error", pa.string()),
        ]
    )


@dataclass
class ExtractionCounters:
    """Accumulators the UDF adds to, read on the driver after the stage has run."""

    model_builds: object
    images_inferred: object
    batches: object
    #: ``{HOST:PID: peak RSS in MB}`` of every Python worker that ran the UDF.
    worker_peak_rss_mb: object
    #: Seconds the workers spent decoding batches and in inference, summed over workers.
    decode_seconds: object
    inference_seconds: object

    @classmethod
    def create(cls, spark: SparkSession) -> ExtractionCounters:
        from fruits_pipeline.memory import PeakPerProcessParam

        context = spark.sparkContext
        return cls(
            context.accumulator(0),
            context.accumulator(0),
            context.accumulator(0),
            context.accumulator({}, PeakPerProcessParam()),
            context.accumulator(0.0),
            context.accumulator(0.0),
        )


def featurize_batch(contents: pd.Series, extract) -> pd.DataFrame:
    """Decode a batch of image bytes and run ``extract`` once on all decodable images.

    Returns a frame with ``features`` (float32 arrays, None on error) and ``error`` (None on
    success), in the order of ``contents``.
    """
    count = len(contents)
    buffer = np.empty((count, MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3), dtype=np.uint8)
    errors: list[str | None] = [None] * count
    good: list[int] = []
    for position, content in enumerate(contents):
        try:
            buffer[len(good)] = decode_image(content)
            good.append(position)
        except ImageDecodeError as error:
            errors[position] = str(error)
        except Exception as error:  # never let one image fail the job
            errors[position] = f"corrupt: {type(error).__name__}: {error}"
    features: list[np.ndarray | None] = [None] * count
    if good:
        output = extract(preprocess(buffer[: len(good)]))
        for row, position in enumerate(good):
            features[position] = output[row]
    return pd.DataFrame({"features": features, "error": errors})


def featurize_units(
    images: DataFrame,
    network: NetworkOnWorkers,
    counters: ExtractionCounters,
    batch_size: int,
    folder: str,
    threads_per_task: int = 1,
) -> DataFrame:
    """Return a DataFrame that, when collected, runs the CNN over ``images`` and writes their
    rows (``STORED_COLUMNS``: ``features``, null on error, and ``error``, null on success) as
    units in ``folder``; one row per unit written (``UNIT_SUMMARY``).

    ``network`` names the engine, the broadcast payload, and the key under which each
    Python worker builds its extractor once and reuses it for every task.
    """
    engine, broadcast, key = network.engine, network.broadcast, network.key
    model_builds = counters.model_builds
    images_inferred = counters.images_inferred
    batches = counters.batches
    worker_peak = counters.worker_peak_rss_mb
    decode_seconds = counters.decode_seconds
    inference_seconds = counters.inference_seconds
    driver_version = __version__

    def featurize(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # Imported here, on the worker: the cache must be the worker process's own.
        from fruits_pipeline import __version__ as worker_version
        from fruits_pipeline.engines.base import EXTRACTORS
        from fruits_pipeline.memory import own_peak_rss_mb, process_name

        if worker_version != driver_version:
            raise RuntimeError(
                f"executor runs fruits-pipeline {worker_version}, the driver {driver_version}: "
                "ship the same package with --py-files or install the same wheel on every node"
            )
        extract = None
        inferring = [0.0]  # seconds in extract() during the current batch

        def timed_extract(batch: np.ndarray) -> np.ndarray:
            started = time.perf_counter()
            try:
                return extract(batch)
            finally:
                inferring[0] = time.perf_counter() - started

        def rows() -> Iterator[pd.DataFrame]:
            nonlocal extract
            for frame in frames:
                if extract is None:
                    extract, built = EXTRACTORS.get(
                        key, lambda: engine.extractor(broadcast.value, threads_per_task)
                    )
                    if built:
                        model_builds.add(1)
                for start in range(0, len(frame), batch_size):
                    part = frame.iloc[start : start + batch_size]
                    started, inferring[0] = time.perf_counter(), 0.0
                    result = featurize_batch(part["content"], timed_extract)
                    inference_seconds.add(inferring[0])
                    decode_seconds.add(time.perf_counter() - started - inferring[0])
                    images_inferred.add(int(result["features"].notna().sum()))
                    batches.add(1)
                    stored = part[IDENTITY + ["label"]].reset_index(drop=True)
                    yield stored.assign(features=result["features"], error=result["error"])

        yield from write_units(rows(), folder)
        worker_peak.add({process_name(): own_peak_rss_mb()})

    return images.mapInPandas(featurize, UNIT_SUMMARY)


def store_units(rows: DataFrame, folder: str) -> DataFrame:
    """Return a DataFrame that, when collected, writes ``rows`` (``STORED_COLUMNS``, e.g. a
    previous run's) as units in ``folder``; one row per unit written (``UNIT_SUMMARY``)."""

    def store(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from write_units(frames, folder)

    return rows.select(*STORED_COLUMNS).mapInPandas(store, UNIT_SUMMARY)


def write_units(frames: Iterator[pd.DataFrame], folder: str) -> Iterator[pd.DataFrame]:
    """Write the row frames of one task as units of ``UNIT_IMAGES`` rows (the last one
    smaller) in ``folder``; yield one ``UNIT_SUMMARY`` row per unit.  Runs in a worker."""
    schema = stored_arrow_schema()
    pending: list[pd.DataFrame] = []
    count = 0

    def flush() -> pd.DataFrame:
        nonlocal count
        unit = pd.concat(pending, ignore_index=True)[STORED_COLUMNS]
        pending.clear()
        count = 0
        name, _ = write_unit(folder, unit, schema)
        return pd.DataFrame({"unit": [name], "rows": [len(unit)]})

    for frame in frames:
        while len(frame):
            room = UNIT_IMAGES - count
            pending.append(frame.iloc[:room])
            count += len(pending[-1])
            frame = frame.iloc[room:]
            if count >= UNIT_IMAGES:
                yield flush()
    if pending:
        yield flush()


def valid_rows(table):
    """The featurized rows of an arrow table of stored rows, without the ``error`` column
    (what ``Extraction.valid`` is in Spark)."""
    import pyarrow.compute as pc

    return table.filter(pc.is_null(table["error"])).drop_columns(["error"])


@dataclass
class Extraction:
    """The extraction's result: the stored rows (read back from parquet) and the UDF's
    counters; ``counts`` counts the rows on first use."""

    stored: DataFrame
    counters: ExtractionCounters

    @cached_property
    def counts(self) -> Counts:
        """What the stored rows say (``files_seen`` is the rows stored, ``csv_rows`` 0)."""
        return count_rows(self.stored)

    @property
    def valid(self) -> DataFrame:
        """The featurized rows, without the ``error`` column."""
        return self.stored.where(F.col("error").isNull()).drop("error")

    def valid_files(self) -> SourceFiles:
        """The stored rows' files, as the workers read the featurized rows from them
        (``valid_rows``): the table writer reads them with Arrow, not through the JVM."""
        schema = stored_arrow_schema()
        uris, count = input_files(self.stored.sparkSession, self.stored)
        return SourceFiles(
            uris=uris,
            count=count,
            select=valid_rows,
            schema=schema.remove(schema.get_field_index("error")),
        )

    @property
    def rejected(self) -> DataFrame:
        """The rejected rows, without the ``features`` column."""
        return self.stored.where(F.col("error").isNotNull()).drop("features")

    def check_featurized(self, rows: int) -> None:
        """Raise StagedRowsLostError unless ``rows`` (what ``features/`` got from the stored
        files) is the number of featurized images the stored rows count."""
        if rows != self.counts.featurized:
            raise StagedRowsLostError(
                f"features/ got {rows} rows for {self.counts.featurized} featurized images: "
                "staged rows went missing or were doubled; nothing was published"
            )

    def report_counts(self, files_seen: int, csv_rows: int) -> Counts:
        """Return the report's counts section: the stored rows' counts, with the files the
        listing saw and the rows the CSV got.

        Raises StagedRowsLostError when the rows stored are not one per file seen."""
        if self.counts.files_seen != files_seen:
            raise StagedRowsLostError(
                f"{self.counts.files_seen} rows were stored for {files_seen} listed images: "
                "staged rows went missing or were doubled; nothing was published"
            )
        return replace(self.counts, files_seen=files_seen, csv_rows=csv_rows)


@dataclass(frozen=True)
class NetworkOnWorkers:
    """A prepared network as the workers get it: the engine, its broadcast payload, the key
    of each worker's cache (the engine and the payload's sha256), and the provenance of the
    features it makes."""

    engine: Engine
    broadcast: Broadcast
    key: str
    provenance: ProvenanceFacts

    def __enter__(self) -> NetworkOnWorkers:
        return self

    def __exit__(self, *exc_info) -> None:
        self.broadcast.unpersist()


def broadcast_network(
    spark: SparkSession,
    engine: Engine,
    weights: LoadedWeights,
    prepared: PreparedNetwork | None = None,
) -> NetworkOnWorkers:
    """Broadcast ``prepared`` (``engine``'s network from ``weights``, prepared on the
    driver: by default ``engine.prepare(weights)``)."""
    prepared = prepared or engine.prepare(weights)
    broadcast = spark.sparkContext.broadcast(prepared.payload)
    return NetworkOnWorkers(
        engine,
        broadcast,
        f"{engine.name}:{prepared.sha256}",
        provenance(engine, prepared, weights.arrays_sha256),
    )


@dataclass
class ExtractionWork:
    """What an extraction does: the images it featurizes, and the rows it reuses."""

    #: the images to featurize (``read_images``' columns), None when there are none
    images: DataFrame | None
    #: how many they are, and their bytes (they size the input partitions)
    files: int
    bytes: int
    #: rows (``STORED_COLUMNS``) this run copies into its own units: a previous run's
    copied: DataFrame | None = None
    #: rows (``STORED_COLUMNS``) interrupted runs staged, read where they are
    staged: DataFrame | None = None

    @classmethod
    def everything(cls, listing: Listing) -> ExtractionWork:
        """Every image of ``listing`` through the CNN, nothing reused."""
        return cls(listing.images, listing.scanned, listing.total_bytes)


def extract(
    spark: SparkSession,
    listing: Listing,
    work: ExtractionWork,
    network: NetworkOnWorkers,
    batch_size: int,
    threads_per_task: int,
    staging: Staging,
) -> Extraction:
    """Run the CNN over ``work.images``, the workers storing the rows as units of this
    run's ``staging``; copy ``work.copied`` there too, add rows for the listed files that
    got none (empty, vanished or unreadable), and return every stored row, ``work.staged``
    included: one per listed image.

    Raises StagedRowsLostError when a unit this run wrote is gone before it is read.
    Input partitions are sized from the images to featurize.
    """
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    counters = ExtractionCounters.create(spark)
    folder = staging.units_folder()
    spark_folder = storage.spark_uri(folder)
    written = []
    if work.images is not None and work.files:
        featurized = featurize_units(
            work.images, network, counters, batch_size, spark_folder, threads_per_task
        )
        sizing = partition_conf(work.files, work.bytes, spark.sparkContext.defaultParallelism)
        with log_progress(spark, "extract"), session_conf(spark, sizing):
            written += featurized.collect()
    if work.copied is not None:
        written += store_units(work.copied, spark_folder).collect()
    # Every listed file without a row gets one that says why: found by a join in Spark.  The
    # units are checked first: rows this run staged that went missing must fail the run,
    # not come back as unreadable inputs.
    has_rows = []
    if written:
        has_rows.append(spark.read.schema(STORED_SCHEMA).parquet(spark_folder))
        check_units(folder, [unit["unit"] for unit in written], has_rows[0].inputFiles())
    if work.staged is not None:
        has_rows.append(work.staged)
    skipped = skipped_rows(listing, has_rows)
    reasons = dict(skipped.groupBy("error").count().collect())
    if reasons.get(UNREADABLE_ERROR):
        unreadable = skipped.where(F.col("error") == UNREADABLE_ERROR).select("path").limit(5)
        log.warning(
            "%d listed files could not be read: %s",
            reasons[UNREADABLE_ERROR],
            [row["path"] for row in unreadable.collect()],
        )
    if reasons:
        written += store_units(skipped, spark_folder).collect()
    stored = None
    if written:
        stored = spark.read.schema(STORED_SCHEMA).parquet(spark_folder)
        check_units(folder, [unit["unit"] for unit in written], stored.inputFiles())
    if work.staged is not None:
        stored = work.staged if stored is None else stored.unionByName(work.staged)
    if stored is None:
        stored = spark.createDataFrame([], STORED_SCHEMA)
    return Extraction(stored, counters)


def skipped_rows(listing: Listing, stored: list[DataFrame]) -> DataFrame:
    """Rejected rows (``STORED_COLUMNS``) for the listed files that none of ``stored`` has a
    row for: ``EMPTY_ERROR`` for the zero-byte files, ``UNREADABLE_ERROR`` for the others."""
    missing = listing.files
    for rows in stored:
        missing = missing.join(rows.select("path"), "path", "left_anti")
    empty = listing.empty.select("path", F.lit(True).alias("is_empty"))
    is_empty = F.col("is_empty").isNotNull()
    return missing.join(empty, "path", "left").select(
        "path",
        label_column("path", root=listing.root).alias("label"),
        F.when(is_empty, F.lit(0)).cast("long").alias("length"),
        F.lit(None).cast("timestamp").alias("modificationTime"),
        F.lit(None).cast("array<float>").alias("features"),
        F.when(is_empty, F.lit(EMPTY_ERROR)).otherwise(F.lit(UNREADABLE_ERROR)).alias("error"),
    )


def check_units(folder: str, units: list[str], files: list[str]) -> None:
    """Raise StagedRowsLostError unless every unit in ``units`` is among ``files`` (what
    Spark's reader will read): rows this run staged must never pass for unread inputs."""
    present = {file.rstrip("/").rsplit("/", 1)[-1] for file in files}
    missing = [unit for unit in units if unit not in present]
    if missing:
        raise StagedRowsLostError(
            f"{len(missing)} of the {len(units)} units of rows this run staged in {folder} "
            "went missing while it ran (was its staging removed?): nothing was published"
        )


def count_rows(stored: DataFrame) -> Counts:
    """Count featurized and rejected images, per label and per rejection reason."""
    ok = F.col("error").isNull()
    rows = (
        stored.groupBy("label", F.substring_index("error", ":", 1).alias("reason"))
        .agg(F.sum(ok.cast("int")).alias("ok"), F.sum((~ok).cast("int")).alias("bad"))
        .collect()
    )
    per_label: dict[str, LabelCount] = {}
    by_reason = dict.fromkeys(REJECT_REASONS, 0)
    for row in rows:
        entry = per_label.setdefault(row["label"], LabelCount())
        entry.featurized += int(row["ok"] or 0)
        entry.rejected += int(row["bad"] or 0)
        if row["bad"]:
            by_reason[reject_reason(row["reason"])] += int(row["bad"])
    featurized = sum(entry.featurized for entry in per_label.values())
    rejected = sum(entry.rejected for entry in per_label.values())
    return Counts(
        files_seen=featurized + rejected,
        featurized=featurized,
        rejected=rejected,
        csv_rows=0,
        rejected_by_reason=by_reason,
        per_label=dict(sorted(per_label.items())),
    )


def extraction_sections(
    spark: SparkSession,
    extraction: Extraction,
    network: NetworkOnWorkers,
    batch_size: int,
    limit: int | None,
    featurized_now: int,
    incremental: bool | None = None,
) -> dict[str, object]:
    """Return the report sections the extraction decides, by ``RunReport`` field: model
    builds, the CNN's facts, peak memory (the driver's Python measured now), the settings and
    the versions.  ``featurized_now`` is how many images this run sent through the CNN
    successfully (reused rows not counted)."""
    counters = extraction.counters
    pid = driver_jvm_pid(spark)
    workers = counters.worker_peak_rss_mb.value
    inferred = counters.images_inferred.value
    return {
        "model_builds": ModelBuilds(driver=1, workers=counters.model_builds.value),
        "cnn": CnnFacts(
            images_inferred=inferred,
            batches=counters.batches.value,
            calls_per_image=round(inferred / max(1, featurized_now), 4),
            # summed over the Python workers: what the extract stage's CPU went to
            decode_seconds=round(counters.decode_seconds.value, 2),
            inference_seconds=round(counters.inference_seconds.value, 2),
        ),
        "memory_peak_mb": MemoryFacts(
            python_worker_max=max(workers.values()) if workers else None,
            python_workers=dict(sorted(workers.items())),
            driver_jvm=process_peak_rss_mb(pid) if pid else None,
            driver_python=own_peak_rss_mb(),
        ),
        "settings": Settings(
            batch_size=batch_size,
            engine=network.engine.name,
            limit=limit,
            master=spark.sparkContext.master,
            default_parallelism=spark.sparkContext.defaultParallelism,
            incremental=incremental,
        ),
        "versions": {**versions(spark), **network.engine.versions()},
        "provenance": network.provenance,
    }

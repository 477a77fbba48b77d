"""Step 3 of the job: images to features, in the workers, once per image.

``extract_features`` is an iterator pandas UDF: it decodes, resizes and preprocesses a batch
of images and runs the engine's extractor on the decodable ones.  An image that cannot be
decoded becomes a row with an ``error`` and no features: it never fails the job.

``extract`` runs it over a listing and stores one row per listed image as parquet (features,
or the error; the files Spark's scan skips included), so that the later steps read the CNN's
output instead of recomputing it.  ``count_rows`` counts what was stored.
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
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from fruits_pipeline import __version__
from fruits_pipeline.chain.images import (
    MODEL_INPUT_SIZE,
    REJECT_REASONS,
    ImageDecodeError,
    decode_image,
    label_from_path,
    preprocess,
    reject_reason,
)
from fruits_pipeline.chain.listing import Listing, partition_conf
from fruits_pipeline.chain.weights import LoadedWeights
from fruits_pipeline.engines import Engine
from fruits_pipeline.memory import driver_jvm_pid, own_peak_rss_mb, process_peak_rss_mb
from fruits_pipeline.progress import log_progress
from fruits_pipeline.results import storage
from fruits_pipeline.results.report import (
    CnnFacts,
    Counts,
    LabelCount,
    MemoryFacts,
    ModelBuilds,
    Settings,
)
from fruits_pipeline.session import session_conf, versions

log = logging.getLogger(__name__)

#: What the UDF returns per image: features (null on error) and the error (null on success).
EXTRACTION_TYPE = StructType(
    [
        StructField("features", ArrayType(FloatType()), True),
        StructField("error", StringType(), True),
    ]
)

#: The columns that identify one version of an image file.
IDENTITY = ["path", "length", "modificationTime"]

#: One stored row per listed image: its identity and label, then features or the error.
STORED_COLUMNS = ["path", "label", "length", "modificationTime", "features", "error"]
STORED_SCHEMA = (
    "path string, label string, length long, modificationTime timestamp, "
    "features array<float>, error string"
)

EMPTY_ERROR = "empty: the file has 0 bytes"
UNREADABLE_ERROR = "unreadable: listed, but it vanished or could not be read"


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


def extract_features(
    images: DataFrame,
    network: Broadcast,
    engine: Engine,
    key: str,
    counters: ExtractionCounters,
    batch_size: int,
    threads_per_task: int = 1,
) -> DataFrame:
    """Return the columns of ``images`` but ``content``, plus ``features``
    (``array<float>`` of 1280, null on error) and ``error`` (null on success).

    ``network`` is the broadcast payload ``engine`` prepared; ``key`` names that network
    (its sha256), so that each Python worker builds its extractor once and reuses it for
    every task.  Nothing runs until the result is written or counted.
    """
    model_builds = counters.model_builds
    images_inferred = counters.images_inferred
    batches = counters.batches
    worker_peak = counters.worker_peak_rss_mb
    decode_seconds = counters.decode_seconds
    inference_seconds = counters.inference_seconds
    driver_version = __version__

    def featurize(contents: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
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

        for series in contents:
            if extract is None:
                extract, built = EXTRACTORS.get(
                    key, lambda: engine.extractor(network.value, threads_per_task)
                )
                if built:
                    model_builds.add(1)
            for start in range(0, len(series), batch_size):
                started, inferring[0] = time.perf_counter(), 0.0
                frame = featurize_batch(series.iloc[start : start + batch_size], timed_extract)
                inference_seconds.add(inferring[0])
                decode_seconds.add(time.perf_counter() - started - inferring[0])
                images_inferred.add(int(frame["features"].notna().sum()))
                batches.add(1)
                yield frame
        worker_peak.add({process_name(): own_peak_rss_mb()})

    udf = F.pandas_udf(featurize, EXTRACTION_TYPE)  # type: ignore[call-overload]
    kept = [name for name in images.columns if name != "content"]
    result = images.select(*kept, udf("content").alias("_x"))
    return result.select(*kept, "_x.features", "_x.error")


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

    @property
    def rejected(self) -> DataFrame:
        """The rejected rows, without the ``features`` column."""
        return self.stored.where(F.col("error").isNotNull()).drop("features")

    def report_counts(self, files_seen: int, csv_rows: int) -> Counts:
        """Return the report's counts section: the stored rows' counts, with the files the
        listing saw and the rows the CSV got."""
        return replace(self.counts, files_seen=files_seen, csv_rows=csv_rows)


@dataclass(frozen=True)
class NetworkOnWorkers:
    """A prepared network as the workers get it: the engine, its broadcast payload, and
    the key of each worker's cache (the engine and the payload's sha256)."""

    engine: Engine
    broadcast: Broadcast
    key: str

    def __enter__(self) -> NetworkOnWorkers:
        return self

    def __exit__(self, *exc_info) -> None:
        self.broadcast.unpersist()


def broadcast_network(
    spark: SparkSession, engine: Engine, weights: LoadedWeights
) -> NetworkOnWorkers:
    """Prepare ``engine``'s network from ``weights`` on the driver and broadcast it."""
    prepared = engine.prepare(weights)
    broadcast = spark.sparkContext.broadcast(prepared.payload)
    return NetworkOnWorkers(engine, broadcast, f"{engine.name}:{prepared.sha256}")


def extract(
    spark: SparkSession,
    listing: Listing,
    images: DataFrame,
    network: NetworkOnWorkers,
    batch_size: int,
    threads_per_task: int,
    uri: str,
    reused: DataFrame | None = None,
) -> Extraction:
    """Run the CNN over ``images`` and store one row per listed image as parquet at ``uri``:
    features or an error, plus the ``reused`` rows (``STORED_COLUMNS``) and rows for the
    files the scan skipped (empty, vanished or unreadable).

    Input partitions are sized from the listing.
    """
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    counters = ExtractionCounters.create(spark)
    extracted = extract_features(
        images,
        network.broadcast,
        network.engine,
        network.key,
        counters,
        batch_size=batch_size,
        threads_per_task=threads_per_task,
    )
    if reused is not None:
        extracted = extracted.unionByName(reused)
    if listing.empty_paths:
        extracted = extracted.unionByName(
            missing_rows(spark, listing, listing.empty_paths, EMPTY_ERROR)
        )
    sizing = partition_conf(
        listing.files_seen, listing.total_bytes, spark.sparkContext.defaultParallelism
    )
    with log_progress(spark, "extract"), session_conf(spark, sizing):
        storage.write_parquet(extracted, uri, mode="overwrite")
    report_unreadable(spark, listing, uri)
    return Extraction(spark.read.parquet(uri), counters)


def missing_rows(spark: SparkSession, listing: Listing, paths: list[str], error: str) -> DataFrame:
    """Rejected rows (``STORED_SCHEMA``) for files the scan never returned, with ``error``."""
    size = 0 if error == EMPTY_ERROR else None
    rows = [(p, label_from_path(p, listing.root), size, None, None, error) for p in paths]
    return spark.createDataFrame(rows, STORED_SCHEMA)


def report_unreadable(spark: SparkSession, listing: Listing, extracted_uri: str) -> None:
    """Append rejected rows for listed files the scan skipped (vanished or unreadable)."""
    written = {row["path"] for row in spark.read.parquet(extracted_uri).select("path").collect()}
    lost = [p for p in listing.paths if p not in written]
    if lost:
        log.warning("%d listed files could not be read: %s", len(lost), lost[:5])
        storage.write_parquet(
            missing_rows(spark, listing, lost, UNREADABLE_ERROR), extracted_uri, mode="append"
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
    }

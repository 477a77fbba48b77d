"""The job, step by step: read images, prepare the model, extract features, PCA, write.

``run_job`` returns the run report (a dict, also written as ``report.json``).
"""

from __future__ import annotations

import logging
import platform
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_pipeline.chain.extract import ExtractionCounters, extract_features
from fruits_pipeline.chain.images import REJECT_REASONS
from fruits_pipeline.chain.incremental import find_previous_run, plan_incremental
from fruits_pipeline.chain.listing import (
    InputError,
    Listing,
    list_images,
    missing_rows,
    partition_conf,
)
from fruits_pipeline.chain.pca import fit_two_pass_pca, linear_algebra, project
from fruits_pipeline.chain.weights import WeightsSpec, load_weights, network_payload
from fruits_pipeline.defaults import DEFAULT_BATCH_SIZE, DEFAULT_ENGINE
from fruits_pipeline.memory import driver_jvm_pid, own_peak_rss_mb, process_peak_rss_mb
from fruits_pipeline.progress import log_progress
from fruits_pipeline.results import storage as outputs
from fruits_pipeline.results.storage import OutputLocation
from fruits_pipeline.session import engine_threads, session_conf

log = logging.getLogger(__name__)

EXTRACTED = "extracted.incomplete"
FEATURES = "features"
REJECTED = "rejected"
CSV_NAME = "features_pca.csv"
PCA_MODEL = "pca_model"
EMPTY_ERROR = "empty: the file has 0 bytes"
UNREADABLE_ERROR = "unreadable: listed, but it vanished or could not be read"


@dataclass
class JobConfig:
    """What to run: every option of ``fruits-pipeline run``."""

    input: str
    output: str
    weights: WeightsSpec
    variance_threshold: float = 0.95
    batch_size: int = DEFAULT_BATCH_SIZE
    limit: int | None = None
    overwrite: bool = False
    incremental: bool = False
    engine: str = DEFAULT_ENGINE


class StageClock:
    """Seconds spent per named stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        log.info("stage %s: started", name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 3)
            log.info("stage %s: %.1f s", name, self.seconds[name])


def run_job(spark: SparkSession, config: JobConfig, spark_start_seconds: float = 0.0) -> dict:
    """Run the whole chain and return the run report.

    Raises InputError (and outputs.OutputExistsError, model.WeightsError,
    pca.PCAInputError) for inputs that cannot make a run; in every failure case nothing
    at OUTPUT looks like a finished run.
    """
    started_at = datetime.now(UTC)
    clock = StageClock()
    if spark_start_seconds:
        clock.seconds["spark_start"] = round(spark_start_seconds, 3)
    location = OutputLocation.prepare(config.output, config.overwrite or config.incremental)

    # 1. Read: list the images (the CNN runs later, once, on their bytes).
    with clock.stage("list"):
        listing = list_images(spark, config.input, config.limit)
        if listing.files_seen == 0:
            raise InputError(f"no images (.jpg, .jpeg, .png) found under {config.input!r}")
        if listing.files_seen < 2:
            raise InputError(f"only 1 image under {config.input!r}: PCA needs at least 2")
        log.info("found %d images under %s", listing.files_seen, config.input)

    # 2. Model: load the weights once on the driver and broadcast the network built from
    #    them (the ONNX model for onnxruntime, the arrays for tensorflow).
    with clock.stage("model"):
        weights = load_weights(config.weights)
        broadcast = spark.sparkContext.broadcast(network_payload(weights, config.engine))

    previous = None
    if config.incremental:
        previous = find_previous_run(
            spark, location.final, weights.arrays_sha256, FEATURES, REJECTED
        )
    location.begin(keep_previous=previous is not None)
    try:
        report = _featurize_and_reduce(
            spark, config, location, clock, listing, weights, broadcast, previous
        )
        report["memory_peak_mb"]["driver_python"] = own_peak_rss_mb()
        publish_run(spark, location, report, clock, started_at)
    except BaseException:
        location.discard()
        raise
    finally:
        broadcast.unpersist()
    return report


def publish_run(
    spark,
    location: OutputLocation,
    report: dict,
    clock: StageClock,
    started_at: datetime,
    visuals: bool = True,
) -> None:
    """Finish a run's output: add its id, times and stage seconds to ``report``, write the
    plots and report.html (when ``visuals``), then ``report.json`` and ``_SUCCESS`` last,
    and publish the staging folder."""
    from fruits_pipeline.results.page import write_visuals  # plots/ and report.html

    report.update(
        {
            "run_id": uuid.uuid4().hex,
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    clock.seconds["total"] = round(sum(clock.seconds.values()), 3)
    report["seconds"] = clock.seconds
    if visuals:
        write_visuals(spark, location, report)
    # Written last: on S3 a folder without report.json and _SUCCESS is not a finished run.
    outputs.write_json(location.path(outputs.REPORT_NAME), report)
    outputs.write_text(location.path(outputs.SUCCESS_NAME), "")
    location.publish()


def _featurize_and_reduce(spark, config, location, clock, listing, weights, broadcast, previous):
    # 3. Features: the CNN runs once per image; its output is written before the PCA
    #    passes, which read it back instead of recomputing it.
    with clock.stage("extract"):
        images, plan = listing.images, None
        if previous is not None:
            plan = plan_incremental(images, previous)
            images = plan.to_featurize
        counters = write_extracted(
            spark,
            listing,
            images,
            broadcast,
            weights.arrays_sha256,
            config.batch_size,
            location.spark_path(EXTRACTED),
            reused=plan.reused if plan else None,
            engine=config.engine,
        )
    stored = spark.read.parquet(location.spark_path(EXTRACTED))
    counts = count_rows(stored)
    log.info("featurized %d images, rejected %d", counts["featurized"], counts["rejected"])
    if counts["featurized"] < 2:
        raise InputError(
            f"only {counts['featurized']} of {listing.files_seen} images could be decoded: "
            "PCA needs at least 2"
        )

    # 4. PCA in two passes over the stored features.
    valid = stored.where(F.col("error").isNull()).drop("error")
    with clock.stage("pca"):
        algebra = linear_algebra(spark)
        pca = fit_two_pass_pca(valid, config.variance_threshold)

    # 5. Write: parquet, the PCA model, the CSV.
    with clock.stage("write"):
        outputs.write_parquet(
            project(pca.model, valid), location.spark_path(FEATURES), mode="overwrite"
        )
        outputs.write_parquet(
            stored.where(F.col("error").isNotNull()).drop("features"),
            location.spark_path(REJECTED),
            mode="overwrite",
        )
        pca.model.write().overwrite().save(location.spark_path(PCA_MODEL))
        written = spark.read.parquet(location.spark_path(FEATURES))
        csv_rows = write_features_csv(written, location.path(CSV_NAME), pca.k)
        outputs.remove(location.path(EXTRACTED))

    report = {
        "status": "succeeded",
        "input": config.input,
        "output": location.final,
        "counts": {
            "files_seen": listing.files_seen,
            "featurized": counts["featurized"],
            "rejected": counts["rejected"],
            "csv_rows": csv_rows,
            "rejected_by_reason": counts["by_reason"],
            "per_label": counts["per_label"],
        },
        "pca": {
            "k": pca.k,
            "variance_threshold": config.variance_threshold,
            "variance_kept": pca.variance_kept,
            "fitted_on_rows": pca.rows,
            "cumulative_explained_variance": pca.cumulative_variance,
            "linear_algebra": algebra,
        },
        "weights": {
            "source": weights.spec.describe(),
            "kind": weights.spec.kind,
            "meaningful": weights.meaningful,
            "file_sha256": weights.file_sha256,
            "arrays_sha256": weights.arrays_sha256,
        },
        **extraction_facts(
            spark, counters, counts["featurized"] - (plan.counts["reused"] if plan else 0)
        ),
        "settings": {
            "batch_size": config.batch_size,
            "engine": config.engine,
            "limit": config.limit,
            "incremental": config.incremental,
            "master": spark.sparkContext.master,
            "default_parallelism": spark.sparkContext.defaultParallelism,
        },
        "versions": versions(spark),
        "outputs": {
            "features": location.final_path(FEATURES),
            "rejected": location.final_path(REJECTED),
            "csv": location.final_path(CSV_NAME),
            "pca_model": location.final_path(PCA_MODEL),
            "report": location.final_path(outputs.REPORT_NAME),
        },
    }
    if config.incremental:
        report["incremental"] = {
            "previous_run": plan is not None,
            **(
                plan.counts
                if plan
                else {"reused": 0, "new": listing.files_seen, "changed": 0, "removed": 0}
            ),
        }
    return report


def write_extracted(
    spark: SparkSession,
    listing: Listing,
    images: DataFrame,
    broadcast,
    weights_key: str,
    batch_size: int,
    uri: str,
    reused: DataFrame | None = None,
    engine: str = DEFAULT_ENGINE,
) -> ExtractionCounters:
    """Run the CNN over ``images`` and write one row per listed image to parquet at ``uri``:
    features or an error, plus ``reused`` rows and rows for files the scan skipped.

    Input partitions are sized from the listing; returns the extraction's counters.
    """
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    counters = ExtractionCounters.create(spark)
    extracted = extract_features(
        images,
        broadcast,
        weights_key=weights_key,
        counters=counters,
        batch_size=batch_size,
        threads_per_task=engine_threads(spark),
        engine=engine,
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
        outputs.write_parquet(extracted, uri, mode="overwrite")
    report_unreadable(spark, listing, uri)
    return counters


def report_unreadable(spark: SparkSession, listing: Listing, extracted_uri: str) -> None:
    """Append rejected rows for listed files the scan skipped (vanished or unreadable)."""
    written = {row["path"] for row in spark.read.parquet(extracted_uri).select("path").collect()}
    lost = [p for p in listing.paths if p not in written]
    if lost:
        log.warning("%d listed files could not be read: %s", len(lost), lost[:5])
        outputs.write_parquet(
            missing_rows(spark, listing, lost, UNREADABLE_ERROR), extracted_uri, mode="append"
        )


def extraction_facts(spark: SparkSession, counters: ExtractionCounters, featurized: int) -> dict:
    """Return the report's ``model_builds``, ``cnn`` and ``memory_peak_mb`` sections;
    ``featurized`` is how many images this run sent through the CNN successfully."""
    pid = driver_jvm_pid(spark)
    workers = counters.worker_peak_rss_mb.value
    return {
        "model_builds": {"driver": 1, "workers": counters.model_builds.value},
        "cnn": {
            "images_inferred": counters.images_inferred.value,
            "batches": counters.batches.value,
            "calls_per_image": round(counters.images_inferred.value / max(1, featurized), 4),
            # summed over the Python workers: what the extract stage's CPU went to
            "decode_seconds": round(counters.decode_seconds.value, 2),
            "inference_seconds": round(counters.inference_seconds.value, 2),
        },
        "memory_peak_mb": {
            "python_worker_max": max(workers.values()) if workers else None,
            "python_workers": dict(sorted(workers.items())),
            "driver_jvm": process_peak_rss_mb(pid) if pid else None,
        },
    }


def count_rows(stored: DataFrame) -> dict:
    """Count featurized and rejected images, per label and per rejection reason."""
    ok = F.col("error").isNull()
    rows = (
        stored.groupBy("label", F.regexp_extract("error", r"^([a-z_]+):", 1).alias("reason"))
        .agg(F.sum(ok.cast("int")).alias("ok"), F.sum((~ok).cast("int")).alias("bad"))
        .collect()
    )
    per_label: dict[str, dict[str, int]] = {}
    by_reason = {reason: 0 for reason in REJECT_REASONS}
    for row in rows:
        entry = per_label.setdefault(row["label"], {"featurized": 0, "rejected": 0})
        entry["featurized"] += int(row["ok"] or 0)
        entry["rejected"] += int(row["bad"] or 0)
        if row["bad"]:
            reason = row["reason"] if row["reason"] in by_reason else "corrupt"
            by_reason[reason] += int(row["bad"])
    return {
        "featurized": sum(e["featurized"] for e in per_label.values()),
        "rejected": sum(e["rejected"] for e in per_label.values()),
        "per_label": dict(sorted(per_label.items())),
        "by_reason": by_reason,
    }


def write_features_csv(features: DataFrame, uri: str, k: int) -> int:
    """Stream ``path``, ``label``, ``pc_1`` … ``pc_k`` into one CSV at ``uri``, sorted by path.

    Rows reach the driver one partition at a time (``toLocalIterator``), so memory stays
    flat.  Returns the number of rows written.
    """
    ordered = features.select("path", "label", "pca_features").orderBy("path")
    header = ["path", "label", *[f"pc_{i}" for i in range(1, k + 1)]]
    rows = (
        [row["path"], row["label"], *(f"{value:.9g}" for value in row["pca_features"])]
        for row in ordered.toLocalIterator()
    )
    return outputs.write_csv(uri, header, rows)


def versions(spark: SparkSession) -> dict[str, str]:
    """Return the versions that decide the features: Python, Spark, TensorFlow, Keras…"""
    import keras
    import numpy
    import onnxruntime
    import PIL
    import pyarrow
    import tensorflow

    from fruits_pipeline import __version__

    return {
        "fruits_pipeline": __version__,
        "python": platform.python_version(),
        "spark": spark.version,
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "pyarrow": pyarrow.__version__,
    }

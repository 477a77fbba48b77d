"""The job, step by step: read images, prepare the model, extract features, PCA, write.

``run_job`` returns the run report (a dict, also written as ``report.json``).
"""

from __future__ import annotations

import logging
import os
import platform
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from fruits_pipeline import outputs
from fruits_pipeline.features import ExtractionCounters, extract_features, read_images
from fruits_pipeline.images import REJECT_REASONS, label_from_path
from fruits_pipeline.model import WeightsSpec, load_weights
from fruits_pipeline.outputs import OutputLocation
from fruits_pipeline.pca import fit_two_pass_pca, project

log = logging.getLogger(__name__)

EXTRACTED = "extracted.incomplete"
FEATURES = "features"
REJECTED = "rejected"
CSV_NAME = "features_pca.csv"
PCA_MODEL = "pca_model"


class InputError(ValueError):
    """The input cannot make a run: missing, empty, no images, too few valid images."""


@dataclass
class JobConfig:
    """What to run: every option of ``fruits-pipeline run``."""

    input: str
    output: str
    weights: WeightsSpec
    variance_threshold: float = 0.95
    batch_size: int = 64
    limit: int | None = None
    overwrite: bool = False


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
    is left at OUTPUT.
    """
    started_at = datetime.now(UTC)
    clock = StageClock()
    if spark_start_seconds:
        clock.seconds["spark_start"] = round(spark_start_seconds, 3)
    location = OutputLocation.prepare(config.output, config.overwrite)

    # 1. Read: list the images (the CNN runs later, once, on their bytes).
    with clock.stage("list"):
        listing = list_images(spark, config.input, config.limit)
        files_seen = listing.files_seen
        if files_seen == 0:
            raise InputError(f"no images (.jpg, .jpeg, .png) found under {config.input!r}")
        if files_seen < 2:
            raise InputError(
                f"only {files_seen} image under {config.input!r}: PCA needs at least 2"
            )
        log.info("found %d images under %s", files_seen, config.input)

    # 2. Model: load the weights once on the driver and broadcast them.
    with clock.stage("model"):
        weights = load_weights(config.weights)
        broadcast = spark.sparkContext.broadcast(weights.arrays)

    location.begin()
    try:
        report = _featurize_and_reduce(spark, config, location, clock, listing, weights, broadcast)
        report.update(
            {
                "run_id": uuid.uuid4().hex,
                "started_at": started_at.isoformat(timespec="seconds"),
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        clock.seconds["total"] = round(sum(clock.seconds.values()), 3)
        report["seconds"] = clock.seconds
        # Written last: on S3 a folder without report.json is not a finished run.
        outputs.write_json(location.path(outputs.REPORT_NAME), report)
        location.publish()
    except BaseException:
        location.discard()
        raise
    finally:
        broadcast.unpersist()
    return report


@dataclass
class Listing:
    """The images a run will read: ``images`` (see ``features.read_images``) and the
    zero-byte image files, which Spark's scan skips and the run reports as rejected."""

    images: DataFrame
    files_seen: int
    empty_paths: list[str]


def list_images(spark: SparkSession, uri: str, limit: int | None) -> Listing:
    """List the images under ``uri``; keep the first ``limit`` by path when given.

    Reads no image bytes.  Raises InputError when ``uri`` does not exist.
    """
    if not outputs.is_remote(uri):
        path = outputs.local_path(uri)
        if not os.path.exists(path):
            raise InputError(f"input {uri!r} does not exist")
        if not os.path.isdir(path):
            raise InputError(f"input {uri!r} is not a folder")
    try:
        images = read_images(spark, outputs.spark_uri(uri))
        scanned = {row["path"] for row in images.select("path").collect()}
        indexed = {hadoop_path_string(name) for name in images.inputFiles()}
    except AnalysisException as error:
        raise InputError(f"cannot read input {uri!r}: {str(error).splitlines()[0]}") from None
    every = sorted(indexed | scanned)
    if limit and limit < len(every):
        every = every[:limit]
        keep = spark.createDataFrame([(p,) for p in every], "path string")
        images = images.join(F.broadcast(keep), "path", "left_semi")
    empty = [p for p in every if p not in scanned]
    return Listing(images=images, files_seen=len(every), empty_paths=empty)


def hadoop_path_string(uri: str) -> str:
    """Return a file URI as Spark's ``path`` column writes it (``DataFrame.inputFiles``
    gives ``file:///a%20b/x.jpg`` where the column holds ``file:/a b/x.jpg``)."""
    text = unquote(uri)
    return "file:/" + text[len("file:///") :] if text.startswith("file:///") else text


def _featurize_and_reduce(spark, config, location, clock, listing, weights, broadcast):
    files_seen = listing.files_seen
    # 3. Features: the CNN runs once per image; its output is written before the PCA
    #    passes, which read it back instead of recomputing it.
    with clock.stage("extract"):
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.batch_size))
        counters = ExtractionCounters.create(spark)
        extracted = extract_features(
            listing.images,
            broadcast,
            weights_key=weights.arrays_sha256,
            counters=counters,
            batch_size=config.batch_size,
            threads_per_task=int(spark.conf.get("spark.task.cpus", "1")),
        )
        if listing.empty_paths:
            extracted = extracted.unionByName(_empty_file_rows(spark, listing.empty_paths))
        extracted.write.mode("overwrite").parquet(location.spark_path(EXTRACTED))
    stored = spark.read.parquet(location.spark_path(EXTRACTED))
    counts = _count(stored)
    log.info("featurized %d images, rejected %d", counts["featurized"], counts["rejected"])
    if counts["featurized"] < 2:
        raise InputError(
            f"only {counts['featurized']} of {files_seen} images could be decoded: "
            "PCA needs at least 2"
        )

    # 4. PCA in two passes over the stored features.
    valid = stored.where(F.col("error").isNull()).select("path", "label", "features")
    with clock.stage("pca"):
        pca = fit_two_pass_pca(valid, config.variance_threshold)

    # 5. Write: parquet, the PCA model, the CSV.
    with clock.stage("write"):
        project(pca.model, valid).write.parquet(location.spark_path(FEATURES))
        stored.where(F.col("error").isNotNull()).select("path", "label", "error").write.parquet(
            location.spark_path(REJECTED)
        )
        pca.model.write().save(location.spark_path(PCA_MODEL))
        written = spark.read.parquet(location.spark_path(FEATURES))
        csv_rows = write_features_csv(written, location.path(CSV_NAME), pca.k)
        outputs.remove(location.path(EXTRACTED))

    return {
        "status": "succeeded",
        "input": config.input,
        "output": location.final,
        "counts": {
            "files_seen": files_seen,
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
        },
        "weights": {
            "source": weights.spec.describe(),
            "kind": weights.spec.kind,
            "meaningful": weights.meaningful,
            "file_sha256": weights.file_sha256,
            "arrays_sha256": weights.arrays_sha256,
        },
        "model_builds": {"driver": 1, "workers": counters.model_builds.value},
        "cnn": {
            "images_inferred": counters.images_inferred.value,
            "batches": counters.batches.value,
            "calls_per_image": round(counters.images_inferred.value / counts["featurized"], 4),
        },
        "settings": {
            "batch_size": config.batch_size,
            "limit": config.limit,
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


def _empty_file_rows(spark: SparkSession, paths: list[str]) -> DataFrame:
    """Rejected rows for zero-byte image files, shaped like ``extract_features``' output."""
    rows = [(p, label_from_path(p), None, "empty: the file has 0 bytes") for p in paths]
    return spark.createDataFrame(
        rows, "path string, label string, features array<float>, error string"
    )


def _count(stored: DataFrame) -> dict:
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
    import PIL
    import pyarrow
    import tensorflow

    return {
        "python": platform.python_version(),
        "spark": spark.version,
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "pyarrow": pyarrow.__version__,
    }

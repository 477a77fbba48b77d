"""Incremental runs: reuse the features of images that did not change since the last run.

An image is unchanged when its path, size (bytes) and modification time are the same as in
the previous run's ``features/`` or ``rejected/`` table.  Only new and changed images go
through the CNN; images that disappeared are dropped; the PCA is refitted over all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_pipeline.results import storage as outputs

log = logging.getLogger(__name__)

#: Columns that identify one version of an image file.
IDENTITY = ["path", "length", "modificationTime"]

#: Columns of a stored extraction row (features/ and rejected/ share them).
STORED = ["path", "label", "length", "modificationTime", "features", "error"]


@dataclass
class PreviousRun:
    """A finished run at OUTPUT whose rows can be reused."""

    rows: DataFrame  # STORED columns, one row per image of the previous run
    report: dict


@dataclass
class IncrementalPlan:
    """What an incremental run reuses and what it featurizes, with the counts."""

    reused: DataFrame  # STORED columns
    to_featurize: DataFrame  # rows of the listing that go through the CNN
    counts: dict[str, int]


def find_previous_run(
    spark: SparkSession, output: str, arrays_sha256: str, features: str, rejected: str
) -> PreviousRun | None:
    """Return the finished run at ``output`` if its rows can be reused, else None.

    A run is reusable when its report and ``_SUCCESS`` marker exist and it used the same
    weights (same sha256 of the weight arrays): features of other weights are never mixed
    in.  ``features`` and ``rejected`` are the sub-folder names.
    """
    report_uri = outputs.join(output, outputs.REPORT_NAME)
    if not (outputs.exists(report_uri) and outputs.exists(outputs.join(output, "_SUCCESS"))):
        log.info("incremental: no finished run at %s, featurizing everything", output)
        return None
    report = outputs.read_json(report_uri)
    if report.get("weights", {}).get("arrays_sha256") != arrays_sha256:
        log.warning(
            "incremental: the run at %s used other weights (%s): featurizing everything",
            output,
            report.get("weights", {}).get("source"),
        )
        return None
    kept = spark.read.parquet(outputs.spark_uri(outputs.join(output, features)))
    failed = spark.read.parquet(outputs.spark_uri(outputs.join(output, rejected)))
    rows = (
        kept.withColumn("error", F.lit(None).cast("string"))
        .select(*STORED)
        .unionByName(
            failed.withColumn("features", F.lit(None).cast("array<float>")).select(*STORED)
        )
    )
    return PreviousRun(rows=rows, report=report)


def plan_incremental(images: DataFrame, previous: PreviousRun) -> IncrementalPlan:
    """Split the listed ``images`` into rows to reuse and rows to featurize.

    Counts: ``reused`` (same path, size and time), ``new`` (path not seen before),
    ``changed`` (path seen, size or time differ), ``removed`` (in the previous run, gone).
    """
    current = images.select(*IDENTITY)
    before = previous.rows.select(*IDENTITY)
    reused = previous.rows.join(current, IDENTITY, "left_semi")
    to_featurize = images.join(F.broadcast(reused.select(*IDENTITY)), IDENTITY, "left_anti")
    counts = {
        "reused": reused.count(),
        "new": current.join(before, "path", "left_anti").count(),
        "removed": before.join(current, "path", "left_anti").count(),
    }
    counts["changed"] = current.count() - counts["reused"] - counts["new"]
    log.info(
        "incremental: %(reused)d reused, %(new)d new, %(changed)d changed, %(removed)d removed",
        counts,
    )
    return IncrementalPlan(reused=reused, to_featurize=to_featurize, counts=counts)

"""Incremental runs: reuse the features of images that did not change since the last run.

An image is unchanged when its path, size (bytes) and modification time are the same as in
the previous run's ``features/`` or ``rejected/`` table.  Only new and changed images go
through the CNN; images that disappeared are dropped; the PCA is refitted over all.  What
``train`` made from the previous features (the classifier) is not kept: the new run's
features and PCA are other ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_pipeline.chain.extract import IDENTITY, STORED_COLUMNS
from fruits_pipeline.results import layout, storage
from fruits_pipeline.results.location import OutputLocation
from fruits_pipeline.results.report import IncrementalFacts, read_report

log = logging.getLogger(__name__)


@dataclass
class IncrementalPlan:
    """What an incremental run reuses and what it featurizes, with the counts."""

    reused: DataFrame  # STORED_COLUMNS
    to_featurize: DataFrame  # rows of the listing that go through the CNN
    facts: IncrementalFacts


def previous_rows(spark: SparkSession, output: str, arrays_sha256: str) -> DataFrame | None:
    """Return the stored rows (``STORED_COLUMNS``) of the finished run at ``output`` if they
    can be reused, else None.

    A run is reusable when its report and ``_SUCCESS`` marker exist and it used the same
    weights (same sha256 of the weight arrays): features of other weights are never mixed in.
    """
    report_uri = storage.join(output, layout.REPORT_JSON)
    if not (storage.exists(report_uri) and storage.exists(storage.join(output, layout.SUCCESS))):
        log.info("incremental: no finished run at %s, featurizing everything", output)
        return None
    weights = read_report(report_uri).weights
    if weights.arrays_sha256 != arrays_sha256:
        log.warning(
            "incremental: the run at %s used other weights (%s): featurizing everything",
            output,
            weights.source,
        )
        return None
    kept = spark.read.parquet(storage.spark_uri(storage.join(output, layout.FEATURES)))
    failed = spark.read.parquet(storage.spark_uri(storage.join(output, layout.REJECTED)))
    return (
        kept.withColumn("error", F.lit(None).cast("string"))
        .select(*STORED_COLUMNS)
        .unionByName(
            failed.withColumn("features", F.lit(None).cast("array<float>")).select(*STORED_COLUMNS)
        )
    )


def plan_incremental(images: DataFrame, previous: DataFrame) -> IncrementalPlan:
    """Split the listed ``images`` into rows of ``previous`` to reuse and rows to featurize.

    Counts: ``reused`` (same path, size and time), ``new`` (path not seen before),
    ``changed`` (path seen, size or time differ), ``removed`` (in the previous run, gone).
    """
    current = images.select(*IDENTITY)
    before = previous.select(*IDENTITY)
    reused = previous.join(current, IDENTITY, "left_semi")
    to_featurize = images.join(F.broadcast(reused.select(*IDENTITY)), IDENTITY, "left_anti")
    reused_count = reused.count()
    new = current.join(before, "path", "left_anti").count()
    facts = IncrementalFacts(
        previous_run=True,
        reused=reused_count,
        new=new,
        changed=current.count() - reused_count - new,
        removed=before.join(current, "path", "left_anti").count(),
    )
    log.info(
        "incremental: %d reused, %d new, %d changed, %d removed",
        facts.reused,
        facts.new,
        facts.changed,
        facts.removed,
    )
    return IncrementalPlan(reused=reused, to_featurize=to_featurize, facts=facts)


def trained_outputs(output: str) -> list[str]:
    """Return the outputs ``train`` left in the run at ``output`` (``layout``'s
    ``TRAINED_ON_FEATURES`` that exist there)."""
    return [
        name for name in layout.TRAINED_ON_FEATURES if storage.exists(storage.join(output, name))
    ]


def remove_trained_outputs(location: OutputLocation, names: list[str]) -> None:
    """Remove ``names`` (``trained_outputs`` of the previous run) from the run being
    written.  A local run is built in a fresh staging folder, where they are not; on S3 the
    run is rewritten in place, where they would otherwise survive beside other features."""
    for name in names:
        storage.remove(location.path(name))
    if names:
        log.warning(
            "incremental: removed the classifier trained on the previous features (%s): "
            "run `fruits-pipeline train %s` again",
            ", ".join(names),
            location.final,
        )

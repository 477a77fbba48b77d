"""What a run reuses instead of featurizing again, and what it sends through the CNN.

Two sources, both already checked against the run's provenance key: the rows that
interrupted runs staged (``--resume``, ``results/staging.py``) and the rows of the finished
run at OUTPUT (``--incremental``).  A row is reused only for an image whose path, size and
modification time are the listing's (``extract.IDENTITY``), and only when its source holds
one row for that path; staged rows come first.  Staged rows are read where they are; a
previous run's are copied into this run's units (on S3 the run rewrites OUTPUT in place).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_pipeline.chain.extract import STORED_SCHEMA, ExtractionWork
from fruits_pipeline.chain.incremental import PreviousRun
from fruits_pipeline.chain.listing import Listing, read_images, stamp_micros
from fruits_pipeline.results import storage
from fruits_pipeline.results.report import IncrementalFacts, ResumeFacts
from fruits_pipeline.results.staging import Staging

log = logging.getLogger(__name__)


@dataclass
class ReusePlan:
    """The extraction's work, and what the report says about the reuse."""

    work: ExtractionWork
    resume: ResumeFacts | None
    incremental: IncrementalFacts | None
    #: rows with features reused, from either source
    reused_featurized: int


def plan_reuse(
    spark: SparkSession,
    listing: Listing,
    staging: Staging,
    resume: bool,
    previous: PreviousRun | None,
) -> ReusePlan:
    """Split ``listing`` into rows reused from ``staging``'s adopted runs and from the
    ``previous`` run (given with ``--incremental``), and images to featurize."""
    stamps = listing.stamps
    staged = None
    kept_staged: set[str] = set()
    reused_featurized = 0
    if staging.adopted:
        folders = [storage.spark_uri(staging.units_folder(run)) for run in staging.adopted]
        staged = spark.read.schema(STORED_SCHEMA).parquet(*folders)
        versions = versions_of(staged)
        kept_staged = unchanged(stamps, versions)
        reused_featurized += len(kept_staged & versions.featurized)
    kept_previous: set[str] = set()
    incremental = None
    if previous is not None and previous.rows is None:
        incremental = IncrementalFacts(
            previous_run=False,
            reused=0,
            new=len(stamps),
            changed=0,
            removed=0,
            note=previous.note,
        )
    elif previous is not None:
        before = versions_of(previous.rows)
        same = unchanged(stamps, before)
        kept_previous = same - kept_staged
        reused_featurized += len(kept_previous & before.featurized)
        new = sum(1 for path in stamps if path not in before.stamps)
        incremental = IncrementalFacts(
            previous_run=True,
            reused=len(same),
            new=new,
            changed=len(stamps) - len(same) - new,
            removed=sum(1 for path in before.stamps if path not in stamps),
        )
        log.info(
            "incremental: %d reused, %d new, %d changed, %d removed",
            incremental.reused,
            incremental.new,
            incremental.changed,
            incremental.removed,
        )
    paths = [p for p in listing.scanned_paths if p not in kept_staged and p not in kept_previous]
    if not (kept_staged or kept_previous):
        images = listing.images
    else:  # scan only the files to featurize, not every file then filter
        images = read_images(spark, listing.root, files=paths) if paths else None
    work = ExtractionWork(
        images=images,
        paths=paths,
        copied=only(spark, previous.rows, kept_previous) if kept_previous else None,
        staged=only(spark, staged, kept_staged) if kept_staged else None,
    )
    facts = None
    if resume:
        facts = ResumeFacts(
            reused=len(kept_staged),
            new=len(paths),
            from_runs=[run[:12] for run in staging.adopted],
            note=staging.note,
        )
        log.info(
            "resume: %d images reused from the staging of %d interrupted run(s), %d to featurize",
            len(kept_staged),
            len(staging.adopted),
            len(paths),
        )
    return ReusePlan(work, facts, incremental, reused_featurized)


@dataclass
class Versions:
    """The rows of a source by path: the file version each was made from (None for a path
    held twice: which row is right?), and the paths whose row has features."""

    stamps: dict[str, tuple[int, int] | None]
    featurized: set[str]


def versions_of(rows: DataFrame) -> Versions:
    """Collect the version (bytes, µs) of the file each of ``rows`` was made from."""
    collected = rows.select(
        "path", "length", stamp_micros().alias("micros"), F.col("error").isNull().alias("ok")
    ).collect()
    counts = Counter(row["path"] for row in collected)
    return Versions(
        stamps={
            row["path"]: (row["length"], row["micros"]) if counts[row["path"]] == 1 else None
            for row in collected
        },
        featurized={row["path"] for row in collected if row["ok"]},
    )


def unchanged(stamps: dict[str, tuple[int, int]], versions: Versions) -> set[str]:
    """The paths whose version in ``versions`` is the listing's (``stamps``)."""
    return {
        path for path, version in versions.stamps.items() if version and stamps.get(path) == version
    }


def only(spark: SparkSession, rows: DataFrame, paths: set[str]) -> DataFrame:
    """``rows`` of the given ``paths`` only."""
    wanted = spark.createDataFrame([(path,) for path in sorted(paths)], "path string")
    return rows.join(F.broadcast(wanted), "path", "left_semi")

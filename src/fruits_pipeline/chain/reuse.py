"""What a run reuses instead of featurizing again, and what it sends through the CNN.

Two sources, both already checked against the run's provenance key: the rows that
interrupted runs staged (``--resume``, ``results/staging.py``) and the rows of the finished
run at OUTPUT (``--incremental``).  A row is reused only for an image whose path, size and
modification time are the listing's (``listing.IDENTITY``), and only when its source holds
one row for that path; staged rows come first, and only from units that pass their check.
A staged unit whose rows are all reused is read where it is; the reused rows of the others
(a unit holding an image changed since) and a previous run's rows are copied into this
run's units (on S3 the run rewrites OUTPUT in place), so that the run's tables, which are
written from whole files, get exactly the rows it reuses.

Every set of paths here is a Spark DataFrame and every comparison a join: only counts reach
the driver's Python, whatever the number of images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_pipeline.chain.extract import STORED_COLUMNS, STORED_SCHEMA, ExtractionWork
from fruits_pipeline.chain.incremental import PreviousRun
from fruits_pipeline.chain.listing import IDENTITY, Listing, read_images
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
    current = listing.identities
    reusable: list[DataFrame] = []  # ``path``, ``ok`` of the rows reused, per source
    staged = kept_staged = None
    whole_units: list[str] = []
    reused_staged = reused_featurized = 0
    units = staging.verified_units() if staging.adopted else []
    if units:
        staged = spark.read.schema(STORED_SCHEMA).parquet(*map(storage.spark_uri, units))
        kept_staged = unchanged(staged, current)
        reused_staged, featurized = reused_counts(kept_staged)
        reused_featurized += featurized
        reusable.append(kept_staged)
        whole_units = fully_kept(staged, kept_staged, units)
    kept_previous = None
    incremental = None
    if previous is not None and previous.rows is None:
        incremental = IncrementalFacts(
            previous_run=False,
            reused=0,
            new=listing.scanned,
            changed=0,
            removed=0,
            note=previous.note,
        )
    elif previous is not None:
        same = unchanged(previous.rows, current)
        same_count = same.count()
        if kept_staged is not None:  # staged rows come first
            same = same.join(kept_staged.select("path"), "path", "left_anti")
        kept_previous = same
        reused_featurized += reused_counts(kept_previous)[1]
        reusable.append(kept_previous)
        before = previous.rows.select("path").distinct()
        new = current.join(before, "path", "left_anti").count()
        incremental = IncrementalFacts(
            previous_run=True,
            reused=same_count,
            new=new,
            changed=listing.scanned - same_count - new,
            removed=before.join(current, "path", "left_anti").count(),
        )
        log.info(
            "incremental: %d reused, %d new, %d changed, %d removed",
            incremental.reused,
            incremental.new,
            incremental.changed,
            incremental.removed,
        )
    if not reusable:
        work = ExtractionWork(listing.images, listing.scanned, listing.total_bytes)
    else:  # scan only the files to featurize, not every file then filter
        todo = current
        for rows in reusable:
            todo = todo.join(rows.select("path"), "path", "left_anti")
        totals = todo.agg(F.count("*").alias("n"), F.sum("length").alias("bytes")).first()
        files = int(totals["n"])
        copied = [only(previous.rows, kept_previous)] if kept_previous is not None else []
        if kept_staged is not None and len(whole_units) < len(units):
            partly = [u for u in units if u not in whole_units]
            rows = spark.read.schema(STORED_SCHEMA).parquet(*map(storage.spark_uri, partly))
            copied.append(only(rows, kept_staged))
        work = ExtractionWork(
            images=read_images(spark, listing.root, files=todo) if files else None,
            files=files,
            bytes=int(totals["bytes"] or 0),
            copied=union(copied),
            staged=(
                spark.read.schema(STORED_SCHEMA).parquet(*map(storage.spark_uri, whole_units))
                if whole_units
                else None
            ),
        )
    facts = None
    if resume:
        facts = ResumeFacts(
            reused=reused_staged,
            new=work.files,
            from_runs=[run[:12] for run in staging.adopted],
            note=staging.note,
        )
        log.info(
            "resume: %d images reused from the staging of %d interrupted run(s), %d to featurize",
            reused_staged,
            len(staging.adopted),
            work.files,
        )
    return ReusePlan(work, facts, incremental, reused_featurized)


def unchanged(rows: DataFrame, current: DataFrame) -> DataFrame:
    """``path`` and ``ok`` (has features) of the ``rows`` made from the file version the
    listing found (``current``: ``IDENTITY``), for the paths ``rows`` hold once (a path held
    twice: which row is right?)."""
    once = rows.groupBy("path").count().where(F.col("count") == 1).select("path")
    return (
        rows.join(once, "path", "left_semi")
        .join(current, IDENTITY, "left_semi")
        .select("path", F.col("error").isNull().alias("ok"))
    )


def reused_counts(paths: DataFrame) -> tuple[int, int]:
    """How many rows ``paths`` (``path``, ``ok``) holds, and how many of them have features."""
    row = paths.agg(F.count("*").alias("n"), F.sum(F.col("ok").cast("int")).alias("ok")).first()
    return int(row["n"]), int(row["ok"] or 0)


def fully_kept(staged: DataFrame, kept: DataFrame, units: list[str]) -> list[str]:
    """The ``units`` (URIs, the files ``staged`` reads) all of whose rows are in ``kept``.

    Units are told apart by their run's folder and their name (``run-…/unit-….parquet``,
    hex digits only), which is how ``input_file_name`` and ``units`` both end."""
    tail = F.regexp_extract(F.input_file_name(), r"([^/]+/[^/]+)$", 1).alias("unit")
    tagged = staged.select("path", tail)
    held = tagged.groupBy("unit").count()
    reused = tagged.join(kept.select("path"), "path", "left_semi").groupBy("unit").count()
    whole = {r["unit"] for r in held.join(reused, ["unit", "count"], "left_semi").collect()}
    return [uri for uri in units if "/".join(uri.rsplit("/", 2)[-2:]) in whole]


def union(frames: list[DataFrame]) -> DataFrame | None:
    """The rows of ``frames`` together, or None when there are none."""
    if not frames:
        return None
    rows = frames[0].select(*STORED_COLUMNS)
    for more in frames[1:]:
        rows = rows.unionByName(more.select(*STORED_COLUMNS))
    return rows


def only(rows: DataFrame, paths: DataFrame) -> DataFrame:
    """``rows`` of the ``path`` values in ``paths`` only."""
    return rows.join(paths.select("path"), "path", "left_semi")

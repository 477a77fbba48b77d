"""Incremental runs: the finished run at OUTPUT, whose rows may be reused.

Its rows are reusable only when it was made under the run's own provenance key
(``chain/provenance.py``): the same engine, network, precision and code.  Rows of another
engine, other weights, or of a run that recorded no key (made before keys existed), are
never mixed in: everything is featurized again, and the report says why.  Which images keep
their rows (same path, size and modification time) is ``chain/reuse.py``'s business.

What ``train`` made from the previous features (the classifier) is never kept: the new run's
features and PCA are other ones (``remove_trained_outputs``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_pipeline.chain.extract import STORED_COLUMNS
from fruits_pipeline.results import layout, storage
from fruits_pipeline.results.location import OutputLocation
from fruits_pipeline.results.report import ProvenanceFacts, read_report

log = logging.getLogger(__name__)


@dataclass
class PreviousRun:
    """The finished run at OUTPUT: its stored rows when they may be reused, else why not."""

    rows: DataFrame | None
    note: str | None = None


def previous_run(spark: SparkSession, output: str, provenance: ProvenanceFacts) -> PreviousRun:
    """Return the rows (``STORED_COLUMNS``) of the finished run at ``output`` if they were
    made under ``provenance``'s key, else why they cannot be reused.

    A run is finished when its report and ``_SUCCESS`` marker exist.
    """
    report_uri = storage.join(output, layout.REPORT_JSON)
    if not (storage.exists(report_uri) and storage.exists(storage.join(output, layout.SUCCESS))):
        return _nothing(output, "no finished run at OUTPUT")
    theirs = read_report(report_uri).provenance
    if theirs is None:
        return _nothing(
            output,
            "the run at OUTPUT recorded no provenance key (it predates them): the engine "
            "and network that made its features are unknown",
        )
    if theirs.key != provenance.key:
        return _nothing(output, "the run at OUTPUT was made with " + provenance.differences(theirs))
    kept = spark.read.parquet(storage.spark_uri(storage.join(output, layout.FEATURES)))
    failed = spark.read.parquet(storage.spark_uri(storage.join(output, layout.REJECTED)))
    rows = (
        kept.withColumn("error", F.lit(None).cast("string"))
        .select(*STORED_COLUMNS)
        .unionByName(
            failed.withColumn("features", F.lit(None).cast("array<float>")).select(*STORED_COLUMNS)
        )
    )
    return PreviousRun(rows)


def _nothing(output: str, note: str) -> PreviousRun:
    log.warning("incremental: featurizing everything: %s (%s)", note, output)
    return PreviousRun(None, note)


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
        location.remove(name)
    if names:
        log.warning(
            "incremental: removed the classifier trained on the previous features (%s): "
            "run `fruits-pipeline train %s` again",
            ", ".join(names),
            location.final,
        )

"""Step 1 of the job: list the input images and account for every file found.

Spark's binaryFile scan silently skips two kinds of files that a user must hear about:
zero-byte files, and files that vanish or cannot be read between listing and reading.  The
listing keeps the full file index so that the job can report both as rejected rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.utils import AnalysisException

from fruits_pipeline.chain.extract import read_images
from fruits_pipeline.chain.images import label_from_path
from fruits_pipeline.results import storage as outputs

#: The stored row of an image: what ``extract_features`` writes, plus file identity.
ROW_SCHEMA = (
    "path string, label string, length long, modificationTime timestamp, "
    "features array<float>, error string"
)


class InputError(ValueError):
    """The input cannot make a run: missing, empty, no images, too few valid images."""


@dataclass
class Listing:
    """The images a run will read."""

    images: DataFrame  # see features.read_images; nothing is read until an action runs
    root: str  # the input as Spark writes paths (``file:/abs`` or ``s3://bucket/prefix``)
    paths: list[str]  # every image file found, sorted; zero-byte files included
    empty_paths: list[str]  # zero-byte image files, which the scan skips
    total_bytes: int = 0  # of all image files listed

    @property
    def files_seen(self) -> int:
        return len(self.paths)


def list_images(spark: SparkSession, uri: str, limit: int | None) -> Listing:
    """List the images under ``uri``; keep the first ``limit`` by path when given.

    Reads no image bytes (only paths and sizes reach the driver).  Raises InputError when
    ``uri`` does not exist or is not a folder.
    """
    if not outputs.is_remote(uri):
        path = outputs.local_path(uri)
        if not os.path.exists(path):
            raise InputError(f"input {uri!r} does not exist")
        if not os.path.isdir(path):
            raise InputError(f"input {uri!r} is not a folder")
    root = outputs.spark_uri(uri).rstrip("/")
    try:
        images = read_images(spark, root)
        sizes = {row["path"]: row["length"] for row in images.select("path", "length").collect()}
        scanned = set(sizes)
        indexed = {hadoop_path_string(name) for name in images.inputFiles()}
    except AnalysisException as error:
        raise InputError(f"cannot read input {uri!r}: {str(error).splitlines()[0]}") from None
    every = sorted(indexed | scanned)
    if limit and limit < len(every):
        every = every[:limit]
        # Read only the kept files (not every file, filtered): the scan and its input
        # partitions then follow the limit.
        kept = [p for p in every if p in scanned]
        images = read_images(spark, root, files=kept) if kept else images.limit(0)
    empty = [p for p in every if p not in scanned]
    total = sum(sizes.get(p, 0) for p in every)
    return Listing(images=images, root=root, paths=every, empty_paths=empty, total_bytes=total)


#: Images per extraction task: enough to amortise a task's start (tiny JPEGs otherwise make
#: one task per 32 files: Spark counts each file as 4 MB, spark.sql.files.openCostInBytes),
#: few enough that a lost task costs little and the cores stay balanced.
IMAGES_PER_TASK = 256

#: Tasks per core at least, so that a slow task or a retry does not leave cores idle.
TASKS_PER_CORE = 3


def partition_conf(
    file_count: int, total_bytes: int, cores: int, images_per_task: int = IMAGES_PER_TASK
) -> dict[str, str]:
    """Return ``spark.sql.files.*`` settings that pack about ``images_per_task`` images
    into each input partition, with at least ``TASKS_PER_CORE`` tasks per core.

    Spark packs files into a partition until their bytes plus ``openCostInBytes`` each
    reach ``maxPartitionBytes``; with the open cost set to the mean file size, each file
    counts twice its mean size.
    """
    if file_count == 0:
        return {}
    mean = max(1, total_bytes // file_count)
    tasks = max(cores * TASKS_PER_CORE, -(-file_count // images_per_task))
    per_task = max(1, -(-file_count // tasks))
    return {
        "spark.sql.files.openCostInBytes": str(mean),
        "spark.sql.files.maxPartitionBytes": str(per_task * 2 * mean),
    }


def hadoop_path_string(uri: str) -> str:
    """Return a file URI as Spark's ``path`` column writes it (``DataFrame.inputFiles``
    gives ``file:///a%20b/x.jpg`` where the column holds ``file:/a b/x.jpg``)."""
    text = unquote(uri)
    return "file:/" + text[len("file:///") :] if text.startswith("file:///") else text


def missing_rows(spark: SparkSession, listing: Listing, paths: list[str], error: str) -> DataFrame:
    """Rejected rows (ROW_SCHEMA) for files the scan never returned, with ``error``."""
    rows = [
        (p, label_from_path(p, listing.root), 0 if "0 bytes" in error else None, None, None, error)
        for p in paths
    ]
    return spark.createDataFrame(rows, ROW_SCHEMA)

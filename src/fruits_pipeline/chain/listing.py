"""Step 1 of the job: list the input images with Spark's ``binaryFile`` source, label them,
and account for every file found.

Spark's binaryFile scan silently skips two kinds of files that a user must hear about:
zero-byte files, and files that vanish or cannot be read between listing and reading.  The
listing keeps the full file index so that the extraction can report both as rejected rows.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from fruits_pipeline.chain.images import IMAGE_GLOB, URI_PATH
from fruits_pipeline.errors import BadInput
from fruits_pipeline.results import storage


class InputError(BadInput):
    """The input cannot make a run: missing, empty, no images, too few valid images."""


@dataclass
class Listing:
    """The images a run will read."""

    images: DataFrame  # see features.read_images; nothing is read until an action runs
    root: str  # the input as Spark writes paths (``file:/abs`` or ``s3://bucket/prefix``)
    paths: list[str]  # every image file found, sorted; zero-byte files included
    empty_paths: list[str]  # zero-byte image files, which the scan skips
    total_bytes: int = 0  # of all image files listed
    #: path -> (bytes, modification time in µs since the epoch) of every scanned image: the
    #: version of a file that reused rows must match (``extract.IDENTITY``)
    stamps: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    @property
    def files_seen(self) -> int:
        return len(self.paths)

    @property
    def scanned_paths(self) -> list[str]:
        """The listed paths that the scan returns (every one but the zero-byte files)."""
        return [path for path in self.paths if path in self.stamps]


def list_images(spark: SparkSession, uri: str, limit: int | None) -> Listing:
    """List the images under ``uri``; keep the first ``limit`` by path when given.

    Reads no image bytes (only paths and sizes reach the driver).  Raises InputError when
    ``uri`` does not exist or is not a folder.
    """
    if not storage.is_remote(uri):
        path = storage.local_path(uri)
        if not os.path.exists(path):
            raise InputError(f"input {uri!r} does not exist")
        if not os.path.isdir(path):
            raise InputError(f"input {uri!r} is not a folder")
    root = storage.spark_uri(uri).rstrip("/")
    try:
        images = read_images(spark, root)
        stamps = {
            row["path"]: (row["length"], row["micros"])
            for row in images.select("path", "length", stamp_micros().alias("micros")).collect()
        }
        scanned = set(stamps)
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
    kept = {p: stamps[p] for p in every if p in scanned}
    total = sum(length for length, _ in kept.values())
    return Listing(
        images=images, root=root, paths=every, empty_paths=empty, total_bytes=total, stamps=kept
    )


def stamp_micros(column: str = "modificationTime") -> Column:
    """Spark column: a modification time as whole µs since the epoch (exact, whatever the
    time zones of the driver and the session)."""
    return F.unix_micros(F.col(column))


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


def read_images(spark: SparkSession, uri: str, files: list[str] | None = None) -> DataFrame:
    """Return ``path``, ``label``, ``content`` (bytes), ``length`` (bytes) and
    ``modificationTime`` for every image under ``uri`` (a Spark URI), searched recursively,
    or for only ``files`` (paths as the ``path`` column writes them) when given.

    Only ``.jpg``, ``.jpeg`` and ``.png`` files in any letter case are kept; hidden files
    and folders (``.name``, ``_name``) are skipped by Spark's listing.  The label is the
    image's parent folder name, ``""`` for files directly in ``uri``.  A file that vanishes
    or cannot be read after listing is skipped by the scan instead of failing the job; the
    extraction reports it as ``unreadable``.
    """
    frame = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", IMAGE_GLOB)
        .option("ignoreMissingFiles", "true")
        .option("ignoreCorruptFiles", "true")
        .load([escape_glob(name) for name in files] if files is not None else escape_glob(uri))
    )
    return frame.select(
        "path",
        label_column("path", root=uri).alias("label"),
        "content",
        "length",
        "modificationTime",
    )


def escape_glob(path: str) -> str:
    """Return ``path`` with Hadoop's glob characters escaped, so that Spark loads exactly
    that file (``a[1].jpg`` is otherwise a pattern that matches ``a1.jpg``)."""
    return re.sub(r"([\\*?\[\]{}])", r"\\\1", path)


def path_parts(path_col: str) -> Column:
    """Spark column: the folders and file name of a path or URI column, as an array
    (``s3://bucket/a/b.jpg`` -> ``["", "a", "b.jpg"]``; scheme and bucket dropped)."""
    return F.split(F.regexp_extract(F.col(path_col), URI_PATH, 1), "/")


def label_column(path_col: str, root: str | None = None) -> Column:
    """Spark column computing ``images.label_from_path``: the parent folder's name."""
    parts = path_parts(path_col)
    label = F.when(F.size(parts) >= 2, F.element_at(parts, -2)).otherwise(F.lit(""))
    if root is None:
        return label
    parent = F.regexp_extract(F.col(path_col), r"(?s)^(.*)/[^/]*$", 1)
    return F.when(parent == F.lit(root.rstrip("/")), F.lit("")).otherwise(label)

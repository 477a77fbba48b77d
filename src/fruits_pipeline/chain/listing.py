"""Step 1 of the job: list the input images with Spark's ``binaryFile`` source, label them,
and account for every file found.

Spark's binaryFile scan silently skips two kinds of files that a user must hear about:
zero-byte files, and files that vanish or cannot be read between listing and reading.  The
listing keeps Spark's file index as a DataFrame so that the extraction can report both as
rejected rows.

Nothing here brings the paths into the driver's Python: the file index stays in the driver's
JVM (Spark holds it there anyway) and every set operation on paths is a Spark join, so the
driver's Python memory does not grow with the number of images.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from fruits_pipeline.chain.images import IMAGE_GLOB, URI_PATH
from fruits_pipeline.errors import BadInput
from fruits_pipeline.results import storage


class InputError(BadInput):
    """The input cannot make a run: missing, empty, no images, too few valid images."""


#: The columns that identify one version of an image file: a reused row must have been made
#: from the very version the listing found.
IDENTITY = ["path", "length", "modificationTime"]


@dataclass
class Listing:
    """The images a run will read.  Every DataFrame here is lazy and stays in Spark."""

    images: DataFrame  # see read_images; nothing is read until an action runs
    root: str  # the input as Spark writes paths (``file:/abs`` or ``s3://bucket/prefix``)
    #: ``path`` of every image file found, zero-byte files included (Spark's file index),
    #: cached in the executors
    files: DataFrame
    #: ``IDENTITY`` of every scanned image (no bytes read), cached in the executors
    identities: DataFrame
    #: ``path`` of the zero-byte image files, which the scan skips (cached in the executors)
    empty: DataFrame
    files_seen: int  # rows of ``files``
    scanned: int  # rows of ``identities``: every image file but the zero-byte ones
    total_bytes: int = 0  # of all image files listed

    def __enter__(self) -> Listing:
        return self

    def __exit__(self, *exc_info) -> None:
        # What the listing keeps in the executors goes with it: the session may run more jobs.
        for frame in (self.files, self.identities, self.empty):
            frame.unpersist()


def list_images(spark: SparkSession, uri: str, limit: int | None) -> Listing:
    """List the images under ``uri``; keep the first ``limit`` by path when given.

    Reads no image bytes, and brings no path into the driver's Python: only counts.  Raises
    InputError when ``uri`` does not exist or is not a folder.
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
        files = file_index(spark, images)
        if limit:
            files = files.orderBy("path").limit(limit)
        # Kept in the executors: the index is built in the driver's JVM, and every use would
        # ship it in the tasks again.
        files = files.persist(StorageLevel.MEMORY_AND_DISK)
        files_seen = files.count()
        if limit:
            # Read only the kept files (not every file, filtered): the scan and its input
            # partitions then follow the limit.
            images = read_images(spark, root, files=files)
        # One scan of the files' metadata, kept: the empty files, the totals and the
        # comparisons of --incremental and --resume all read it.
        tasks = metadata_tasks(files_seen, spark.sparkContext.defaultParallelism)
        identities = images.select(*IDENTITY).coalesce(tasks).persist(StorageLevel.MEMORY_AND_DISK)
        totals = identities.agg(F.count("*").alias("n"), F.sum("length").alias("bytes")).first()
    except AnalysisException as error:
        raise InputError(f"cannot read input {uri!r}: {str(error).splitlines()[0]}") from None
    # Fixed now: a file that vanishes later is then reported unreadable, never empty.
    empty = files.join(identities.select("path"), "path", "left_anti")
    empty = empty.persist(StorageLevel.MEMORY_AND_DISK)
    empty.count()
    return Listing(
        images=images,
        root=root,
        files=files,
        identities=identities,
        empty=empty,
        files_seen=files_seen,
        scanned=int(totals["n"]),
        total_bytes=int(totals["bytes"] or 0),
    )


#: Files per task of the listing's metadata scan (no image bytes read: a task per 32 files,
#: Spark's packing for tiny files, made that scan and every join on it mostly task overhead).
FILES_PER_METADATA_TASK = 20_000


def metadata_tasks(files: int, cores: int) -> int:
    """Tasks of the metadata scan of ``files`` files: ``TASKS_PER_CORE`` per core at least,
    at most ``FILES_PER_METADATA_TASK`` files each."""
    return max(1, cores * TASKS_PER_CORE, -(-files // FILES_PER_METADATA_TASK))


def input_files(spark: SparkSession, frame: DataFrame) -> tuple[DataFrame, int]:
    """Return the files Spark reads for ``frame``, as URIs (column ``uri``: ``file:///a%20b``,
    ``s3://bucket/key``) in a DataFrame made in the JVM, and how many they are.

    ``DataFrame.inputFiles`` would copy them into a Python list; its Java array is wrapped
    as a Scala ``Seq`` and made a Dataset in the JVM instead."""
    jvm = spark.sparkContext._jvm
    files = frame._jdf.inputFiles()
    names = jvm.scala.collection.mutable.WrappedArray.make(files)
    strings = jvm.org.apache.spark.sql.Encoders.STRING()
    dataset = DataFrame(spark._jsparkSession.createDataset(names, strings).toDF(), spark)
    return dataset.withColumnRenamed("value", "uri"), len(files)


def file_index(spark: SparkSession, images: DataFrame) -> DataFrame:
    """Return the ``path`` of every file Spark's file index holds for ``images``, as the
    ``path`` column writes them, without the paths passing through Python.

    Spark's index gives URIs (``input_files``: ``file:///a%20b/x+y.jpg``) where the column
    has ``file:/a b/x+y.jpg``: decode them (``+`` is a plus in a URI path, not a space as
    ``url_decode`` would make it).
    """
    index, _ = input_files(spark, images)
    decoded = F.expr("url_decode(replace(uri, '+', '%2B'))")
    return index.select(F.regexp_replace(decoded, "^file:///", "file:/").alias("path"))


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


def read_images(spark: SparkSession, uri: str, files: DataFrame | None = None) -> DataFrame:
    """Return ``path``, ``label``, ``content`` (bytes), ``length`` (bytes) and
    ``modificationTime`` for every image under ``uri`` (a Spark URI), searched recursively,
    or for only the ``path`` rows of ``files`` (as the ``path`` column writes them) when given.

    Only ``.jpg``, ``.jpeg`` and ``.png`` files in any letter case are kept; hidden files
    and folders (``.name``, ``_name``) are skipped by Spark's listing.  The label is the
    image's parent folder name, ``""`` for files directly in ``uri``.  A file that vanishes
    or cannot be read after listing is skipped by the scan instead of failing the job; the
    extraction reports it as ``unreadable``.
    """
    reader = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", IMAGE_GLOB)
        .option("ignoreMissingFiles", "true")
        .option("ignoreCorruptFiles", "true")
    )
    frame = reader.load(escape_glob(uri)) if files is None else load_files(spark, reader, files)
    return frame.select(
        "path",
        label_column("path", root=uri).alias("label"),
        "content",
        "length",
        "modificationTime",
    )


def load_files(spark: SparkSession, reader, files: DataFrame) -> DataFrame:
    """``reader.load`` of exactly the files in ``files``' ``path`` column (none: no rows).

    The paths are collected into the driver's JVM, never into Python (``DataFrameReader``'s
    Python ``load`` takes a Python list), glob characters escaped by Spark.
    """
    jvm = spark.sparkContext._jvm
    escaped = files.select(F.regexp_replace("path", GLOB_CHARACTERS, r"\\$1"))
    names = getattr(escaped._jdf, "as")(jvm.org.apache.spark.sql.Encoders.STRING()).collect()
    if len(names) == 0:
        return spark.createDataFrame([], BINARY_FILE_SCHEMA)
    paths = jvm.scala.collection.mutable.WrappedArray.make(names)
    return DataFrame(reader._jreader.load(paths), spark)


#: The columns of Spark's ``binaryFile`` source.
BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"


#: Hadoop's glob characters, escaped with a backslash to name one file exactly.
GLOB_CHARACTERS = r"([\\*?\[\]{}])"


def escape_glob(path: str) -> str:
    """Return ``path`` with Hadoop's glob characters escaped, so that Spark loads exactly
    that file (``a[1].jpg`` is otherwise a pattern that matches ``a1.jpg``)."""
    return re.sub(GLOB_CHARACTERS, r"\\\1", path)


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

"""Reading images with Spark and turning them into MobileNetV2 features.

``read_images`` lists the images with the ``binaryFile`` source; ``extract_features`` runs
an iterator pandas UDF that decodes, resizes and preprocesses each image and runs the
broadcast network in batches.  An image that cannot be decoded becomes a row with an
``error`` and no features: it never fails the job.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from fruits_pipeline import __version__
from fruits_pipeline.chain.images import (
    IMAGE_GLOB,
    MODEL_INPUT_SIZE,
    ImageDecodeError,
    decode_image,
)
from fruits_pipeline.defaults import DEFAULT_BATCH_SIZE, DEFAULT_ENGINE

log = logging.getLogger(__name__)

#: What the UDF returns per image: features (null on error) and the error (null on success).
EXTRACTION_TYPE = StructType(
    [
        StructField("features", ArrayType(FloatType()), True),
        StructField("error", StringType(), True),
    ]
)


def read_images(spark: SparkSession, uri: str, files: list[str] | None = None) -> DataFrame:
    """Return ``path``, ``label``, ``content`` (bytes), ``length`` (bytes) and
    ``modificationTime`` for every image under ``uri`` (a Spark URI), searched recursively,
    or for only ``files`` (paths as the ``path`` column writes them) when given.

    Only ``.jpg``, ``.jpeg`` and ``.png`` files in any letter case are kept; hidden files
    and folders (``.name``, ``_name``) are skipped by Spark's listing.  The label is the
    image's parent folder name, ``""`` for files directly in ``uri``.  A file that vanishes
    or cannot be read after listing is skipped by the scan instead of failing the job; the
    job reports it as ``unreadable``.
    """
    frame = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", IMAGE_GLOB)
        .option("ignoreMissingFiles", "true")
        .option("ignoreCorruptFiles", "true")
        .load([escape_glob(name) for name in files] if files is not None else uri)
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


#: Strips ``scheme://authority`` or ``scheme:`` from a URI, keeping the path.
_URI_PATH = r"^(?:[A-Za-z][A-Za-z0-9+.-]*://[^/]*|[A-Za-z][A-Za-z0-9+.-]*:)?(.*)$"


def label_column(path_col: str, root: str | None = None):
    """Spark column computing ``images.label_from_path``: the parent folder's name."""
    key = F.regexp_extract(F.col(path_col), _URI_PATH, 1)
    parts = F.split(key, "/")
    label = F.when(F.size(parts) >= 2, F.element_at(parts, -2)).otherwise(F.lit(""))
    if root is None:
        return label
    parent = F.regexp_extract(F.col(path_col), r"^(.*)/[^/]*$", 1)
    return F.when(parent == F.lit(root.rstrip("/")), F.lit("")).otherwise(label)


#: Test hook: when this variable names a file that does not exist yet, the first Python
#: worker to finish a batch creates the file and dies with ``os._exit`` (a hard crash, as a
#: killed executor).  Only tests set it; it fires exactly once per marker file.
CRASH_ONCE_ENV = "FRUITS_PIPELINE_TEST_CRASH_ONCE"


@dataclass
class ExtractionCounters:
    """Accumulators the UDF adds to, read on the driver after the stage has run."""

    model_builds: object
    images_inferred: object
    batches: object
    #: ``{HOST:PID: peak RSS in MB}`` of every Python worker that ran the UDF.
    worker_peak_rss_mb: object
    #: Seconds the workers spent decoding batches and in inference, summed over workers.
    decode_seconds: object
    inference_seconds: object

    @classmethod
    def create(cls, spark: SparkSession) -> ExtractionCounters:
        from fruits_pipeline.memory import PeakPerProcessParam

        context = spark.sparkContext
        return cls(
            context.accumulator(0),
            context.accumulator(0),
            context.accumulator(0),
            context.accumulator({}, PeakPerProcessParam()),
            context.accumulator(0.0),
            context.accumulator(0.0),
        )


def extract_features(
    images: DataFrame,
    weights: Broadcast,
    weights_key: str,
    counters: ExtractionCounters,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads_per_task: int = 1,
    engine: str = DEFAULT_ENGINE,
) -> DataFrame:
    """Return the columns of ``images`` but ``content``, plus ``features``
    (``array<float>`` of 1280, null on error) and ``error`` (null on success).

    ``weights`` is the broadcast ``model.network_payload`` for ``engine``; ``weights_key``
    names the weights, so that each Python worker builds its extractor once and reuses it.
    Nothing runs until the result is written or counted.
    """
    model_builds = counters.model_builds
    images_inferred = counters.images_inferred
    batches = counters.batches
    worker_peak = counters.worker_peak_rss_mb
    decode_seconds = counters.decode_seconds
    inference_seconds = counters.inference_seconds

    driver_version = __version__

    def featurize(contents: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        from fruits_pipeline import __version__ as worker_version
        from fruits_pipeline.chain.weights import cached_extractor
        from fruits_pipeline.memory import own_peak_rss_mb, process_name

        if worker_version != driver_version:
            raise RuntimeError(
                f"executor runs fruits-pipeline {worker_version}, the driver {driver_version}: "
                "ship the same package with --py-files or install the same wheel on every node"
            )
        extract = None
        inferring = [0.0]  # seconds in extract() during the current batch

        def timed_extract(batch: np.ndarray) -> np.ndarray:
            started = time.perf_counter()
            try:
                return extract(batch)
            finally:
                inferring[0] = time.perf_counter() - started

        for series in contents:
            if extract is None:
                extract, built = cached_extractor(
                    weights_key, lambda: weights.value, threads_per_task, engine
                )
                if built:
                    model_builds.add(1)
            for start in range(0, len(series), batch_size):
                started, inferring[0] = time.perf_counter(), 0.0
                frame = featurize_batch(series.iloc[start : start + batch_size], timed_extract)
                inference_seconds.add(inferring[0])
                decode_seconds.add(time.perf_counter() - started - inferring[0])
                images_inferred.add(int(frame["features"].notna().sum()))
                batches.add(1)
                _crash_once_for_tests()
                yield frame
        worker_peak.add({process_name(): own_peak_rss_mb()})

    udf = F.pandas_udf(featurize, EXTRACTION_TYPE)  # type: ignore[call-overload]
    kept = [name for name in images.columns if name != "content"]
    result = images.select(*kept, udf("content").alias("_x"))
    return result.select(*kept, "_x.features", "_x.error")


def _crash_once_for_tests() -> None:
    marker = os.environ.get(CRASH_ONCE_ENV)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    log.error("test hook %s: this Python worker dies now", CRASH_ONCE_ENV)
    os._exit(17)


def featurize_batch(contents: pd.Series, extract) -> pd.DataFrame:
    """Decode a batch of image bytes and run ``extract`` once on all decodable images.

    Returns a frame with ``features`` (float32 arrays, None on error) and ``error`` (None on
    success), in the order of ``contents``.
    """
    from fruits_pipeline.chain.images import preprocess

    count = len(contents)
    buffer = np.empty((count, MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3), dtype=np.uint8)
    errors: list[str | None] = [None] * count
    good: list[int] = []
    for position, content in enumerate(contents):
        try:
            buffer[len(good)] = decode_image(content)
            good.append(position)
        except ImageDecodeError as error:
            errors[position] = str(error)
        except Exception as error:  # never let one image fail the job
            errors[position] = f"corrupt: {type(error).__name__}: {error}"
    features: list[np.ndarray | None] = [None] * count
    if good:
        batch = preprocess(buffer[: len(good)])
        output = extract(batch)
        for row, position in enumerate(good):
            features[position] = output[row]
    return pd.DataFrame({"features": features, "error": errors})

"""The same chain written the notebook way: the benchmark's baseline, not part of the job.

This is how the chain is usually written in a notebook (and how this project's job was
first sketched), kept here so that ``make bench`` can measure what the job's design buys.
It runs the same five steps on the same images with the same weights, but:

- the images are read with Spark's default input packing and ``repartition(20)``;
- each call of the pandas UDF (one per partition) rebuilds MobileNetV2 and sets the
  broadcast weights on it: 20 model builds;
- each image is decoded into its own array with Keras' ``img_to_array`` and
  ``preprocess_input``, and each batch goes through ``model.predict``;
- Arrow batches keep Spark's default size (10,000 records: a whole partition);
- the features are written to Parquet and read back (so the CNN runs once per image, as in
  the job: the baseline is not charged for recomputation it could avoid);
- PCA is fitted twice on the standardised features, ``PCA(k=1280)`` to choose k and then
  ``PCA(k)``, each one a full decomposition of the 1280x1280 covariance on the driver, in
  the pure-Java LAPACK of a stock Spark (``--lapack native`` lets it find OpenBLAS).

``python -m fruits_pipeline.bench.notebook_baseline --input DIR --output DIR --json FILE`` runs
it in a process of its own, with a JVM of its own, as ``make bench`` does.  Nothing here
is used by the job; do not copy these patterns into it.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.ml.feature import PCA, StandardScaler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fruits_pipeline.chain.images import MODEL_INPUT_SIZE
from fruits_pipeline.chain.pca import choose_k
from fruits_pipeline.chain.weights import FEATURE_DIM, load_weights, parse_weights_spec
from fruits_pipeline.memory import own_peak_rss_mb

log = logging.getLogger(__name__)

#: Partitions of the notebook's ``images.repartition(20)``.
NOTEBOOK_PARTITIONS = 20


def run_notebook_job(
    spark: SparkSession,
    input_dir: str,
    output_dir: str,
    weights_arrays: list[np.ndarray],
    limit: int | None = None,
    variance_threshold: float = 0.95,
    partitions: int = NOTEBOOK_PARTITIONS,
) -> dict:
    """Run the notebook-style chain on ``input_dir``; write under ``output_dir``.
    ``partitions`` is its ``repartition``'s (each builds the network once).

    Returns seconds per stage (``model``, ``extract``, ``pca``, ``write``), model builds on
    the workers, CNN calls per image, the number of images featurized and the k chosen.
    """
    context = spark.sparkContext
    builds = context.accumulator(0)
    cnn_images = context.accumulator(0)
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    broadcast = context.broadcast(weights_arrays)
    seconds["model"] = time.perf_counter() - started

    def model_fn():
        from keras import Model
        from keras.applications import MobileNetV2

        network = MobileNetV2(
            weights=None, include_top=True, input_shape=(MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3)
        )
        network.set_weights(broadcast.value)
        for layer in network.layers:
            layer.trainable = False
        model = Model(inputs=network.input, outputs=network.layers[-2].output)
        builds.add(1)
        return model

    def preprocess(content: bytes) -> np.ndarray:
        from keras.applications.mobilenet_v2 import preprocess_input
        from keras.utils import img_to_array
        from PIL import Image

        image = Image.open(io.BytesIO(content)).convert("RGB")
        image = image.resize([MODEL_INPUT_SIZE, MODEL_INPUT_SIZE])
        return preprocess_input(img_to_array(image))

    def featurize_series(model, content_series: pd.Series) -> pd.Series:
        batch = np.stack(content_series.map(preprocess))
        predictions = model.predict(batch, verbose=0)
        cnn_images.add(len(batch))
        return pd.Series([p.flatten() for p in predictions])

    @F.pandas_udf("array<float>")
    def featurize_udf(content_series_iter: Iterator[pd.Series]) -> Iterator[pd.Series]:
        model = model_fn()
        for content_series in content_series_iter:
            yield featurize_series(model, content_series)

    images = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", "*.jpg")
        .option("recursiveFileLookup", "true")
        .load(input_dir)
    )
    if limit:
        images = images.orderBy("path").limit(limit)
    images = images.withColumn("label", F.element_at(F.split(F.col("path"), "/"), -2))
    features_uri = f"{output_dir}/features"

    started = time.perf_counter()
    features = images.repartition(partitions).select(
        F.col("path"), F.col("label"), featurize_udf("content").alias("features")
    )
    features.write.mode("overwrite").parquet(features_uri)
    seconds["extract"] = time.perf_counter() - started
    log.info("notebook: extract %.1f s, %d model builds", seconds["extract"], builds.value)

    started = time.perf_counter()
    stored = spark.read.parquet(features_uri).withColumn(
        "features_vec", array_to_vector("features")
    )
    scaler = StandardScaler(
        inputCol="features_vec", outputCol="scaled", withMean=True, withStd=True
    ).fit(stored)
    scaled = scaler.transform(stored)
    full = PCA(k=FEATURE_DIM, inputCol="scaled", outputCol="pca").fit(scaled)
    k = choose_k(full.explainedVariance.toArray(), variance_threshold)
    reduced = PCA(k=k, inputCol="scaled", outputCol="pca").fit(scaled)
    seconds["pca"] = time.perf_counter() - started
    log.info("notebook: PCA %.1f s, k=%d", seconds["pca"], k)

    started = time.perf_counter()
    projected = reduced.transform(scaled).withColumn("pca_features", vector_to_array("pca"))
    projected.select("path", "label", "pca_features").write.mode("overwrite").parquet(
        f"{output_dir}/pca"
    )
    table = projected.select("label", "pca_features").toPandas()
    table.to_csv(f"{output_dir}/features.csv", index=False)
    seconds["write"] = time.perf_counter() - started
    broadcast.unpersist()

    featurized = spark.read.parquet(features_uri).count()
    return {
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
        "model_builds_workers": builds.value,
        "cnn_calls_per_image": round(cnn_images.value / featurized, 3) if featurized else None,
        "featurized": featurized,
        "k": k,
    }


#: JVM options that keep Spark ML on its pure-Java BLAS and LAPACK even where native
#: libraries are installed: a stock Spark, as a notebook usually runs it.
JAVA_LINEAR_ALGEBRA = (
    "-Ddev.ludovic.netlib.blas.nativeLib=none.so -Ddev.ludovic.netlib.lapack.nativeLib=none.so"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="folder of images")
    parser.add_argument("--output", required=True, help="folder for the outputs")
    parser.add_argument("--json", required=True, help="where to write the figures")
    parser.add_argument("--weights", default="random:0", help="weights spec (random:0)")
    parser.add_argument("--limit", type=int, default=None, help="first N images by path")
    parser.add_argument(
        "--lapack",
        choices=("java", "native"),
        default="java",
        help="java: Spark's pure-Java fallback, as on a stock Spark (default); "
        "native: whatever libblas.so.3/liblapack.so.3 the machine has",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    started = time.perf_counter()
    builder = SparkSession.builder.master("local[*]").appName("notebook-baseline")
    if args.lapack == "java":
        builder = builder.config("spark.driver.extraJavaOptions", JAVA_LINEAR_ALGEBRA)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    spark_seconds = time.perf_counter() - started
    netlib = spark.sparkContext._jvm.dev.ludovic.netlib
    lapack = netlib.lapack.LAPACK.getInstance().getClass().getSimpleName()

    started = time.perf_counter()
    arrays = load_weights(parse_weights_spec(args.weights)).arrays
    weights_seconds = time.perf_counter() - started
    try:
        result = run_notebook_job(spark, args.input, args.output, arrays, args.limit)
    finally:
        spark.stop()
    seconds = result["seconds"]
    seconds["model"] = round(seconds["model"] + weights_seconds, 3)
    result["seconds"] = {"spark_start": round(spark_seconds, 3), **seconds}
    result["seconds"]["total"] = round(sum(result["seconds"].values()), 3)
    result["lapack"] = lapack
    result["driver_python_peak_mb"] = own_peak_rss_mb()
    with open(args.json, "w", encoding="utf-8") as out:
        json.dump(result, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Two-pass PCA with Spark ML: standardise, measure the variance, keep the smallest k.

Pass one fits ``PCA(k=min(1280, n))`` and reads its explained variance; ``choose_k`` picks
the smallest k whose cumulative ratio reaches the threshold; pass two is the ``PCAModel``
of the first k components (what ``PCA(k).fit`` returns, without decomposing again).  The
result is a ``PipelineModel`` (scaler + PCA) that can project new images later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.feature import PCA, PCAModel, StandardScaler
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame, SparkSession

from fruits_pipeline.errors import BadInput
from fruits_pipeline.results.report import LinearAlgebra
from fruits_pipeline.session import BLAS_THREADS_ENV

log = logging.getLogger(__name__)

VECTOR_COL = "_features_vector"
SCALED_COL = "_scaled"
PCA_VECTOR_COL = "_pca_vector"


class PCAInputError(BadInput):
    """Too few valid images to fit a PCA."""


def choose_k(explained_variance: np.ndarray | list[float], threshold: float) -> int:
    """Return the smallest k whose cumulative explained-variance ratio reaches ``threshold``.

    ``explained_variance`` holds per-component ratios in decreasing order (Spark's
    ``PCAModel.explainedVariance``).  ``threshold`` is in (0, 1]; 1.0 keeps every component.
    """
    ratios = np.asarray(explained_variance, dtype=np.float64)
    if ratios.size == 0:
        raise ValueError("no explained variance to choose from")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"variance threshold must be in (0, 1], got {threshold}")
    if threshold >= 1.0:
        return int(ratios.size)
    cumulative = np.cumsum(ratios)
    reached = np.nonzero(cumulative >= threshold - 1e-12)[0]
    return int(reached[0] + 1) if reached.size else int(ratios.size)


@dataclass
class PCAResult:
    """The fitted pipeline and what pass one measured."""

    model: PipelineModel
    k: int
    cumulative_variance: list[float]
    variance_kept: float
    rows: int


def fit_two_pass_pca(
    features: DataFrame, threshold: float, input_col: str = "features"
) -> PCAResult:
    """Fit scaler + two-pass PCA on ``features`` (an ``array<float>`` column).

    ``features`` should be persisted or read from storage: it is scanned several times.
    Raises PCAInputError when it holds fewer than 2 rows.
    """
    vectors = features.select(array_to_vector(input_col).alias(VECTOR_COL))
    rows = vectors.count()
    if rows < 2:
        raise PCAInputError(f"PCA needs at least 2 valid images, got {rows}")
    scaler = StandardScaler(
        inputCol=VECTOR_COL, outputCol=SCALED_COL, withMean=True, withStd=True
    ).fit(vectors)
    scaled = scaler.transform(vectors).select(SCALED_COL).persist()
    try:
        dims = len(features.first()[input_col])
        first = PCA(k=min(dims, rows), inputCol=SCALED_COL, outputCol=PCA_VECTOR_COL).fit(scaled)
        ratios = first.explainedVariance.toArray()
        k = choose_k(ratios, threshold)
        cumulative = np.cumsum(ratios)
        log.info(
            "PCA pass one: %d components, k=%d keeps %.4f of the variance (threshold %.4f)",
            ratios.size,
            k,
            cumulative[k - 1],
            threshold,
        )
        second = first if k == ratios.size else truncate(first, k)
    finally:
        scaled.unpersist()
    return PCAResult(
        model=PipelineModel(stages=[scaler, second]),
        k=k,
        cumulative_variance=[float(v) for v in cumulative],
        variance_kept=float(cumulative[k - 1]),
        rows=rows,
    )


def truncate(model: PCAModel, k: int) -> PCAModel:
    """Return pass two: a ``PCAModel`` of the first ``k`` components of ``model``.

    ``PCA(k).fit`` would decompose the same 1280x1280 covariance matrix again on the driver
    (in pure-Java LAPACK when no native library is loaded) only to keep its first ``k``
    columns; this builds the identical model from pass one's result instead.  Same class,
    same parameters, saved and loaded like any Spark ML ``PCAModel``.
    """
    from pyspark import SparkContext
    from pyspark.ml.common import _py2java
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    components = model.pc.toArray()[:, :k]
    variance = model.explainedVariance.toArray()[:k]
    context = SparkContext._active_spark_context
    java_model = context._jvm.org.apache.spark.ml.feature.PCAModel(
        model.uid,
        _py2java(context, DenseMatrix(components.shape[0], k, components.ravel(order="F"))),
        _py2java(context, DenseVector(variance)),
    )
    java_model.setInputCol(model.getInputCol()).setOutputCol(model.getOutputCol())
    java_model.set(java_model.k(), k)
    truncated = PCAModel(java_model)
    truncated._transfer_params_from_java()
    return truncated


#: Debian/Ubuntu packages that give Spark a native BLAS and LAPACK (OpenBLAS).
NATIVE_LAPACK_HINT = "apt-get install libopenblas0-pthread liblapack3 (dnf install openblas)"


def linear_algebra(spark: SparkSession) -> LinearAlgebra:
    """Return which BLAS and LAPACK Spark ML uses in the driver's JVM: the class names of
    ``dev.ludovic.netlib``'s instances, ``native`` (True when LAPACK is JNILAPACK) and
    ``openblas_threads`` (the JVM's ``OPENBLAS_NUM_THREADS``, None when unset).

    PCA's decomposition of the 1280x1280 covariance runs in the driver's LAPACK, several
    times faster with OpenBLAS than in the pure-Java fallback (F2jLAPACK).  Logs a warning,
    with the packages to install, when LAPACK is not native.
    """
    netlib = spark.sparkContext._jvm.dev.ludovic.netlib
    lapack = netlib.lapack.LAPACK.getInstance().getClass().getSimpleName()
    blas = netlib.blas.BLAS.getInstance().getClass().getSimpleName()
    native = lapack == "JNILAPACK"
    if not native:
        log.warning(
            "Spark ML uses the pure-Java LAPACK (%s): PCA will be about 5x slower; "
            "install a native one: %s",
            lapack,
            NATIVE_LAPACK_HINT,
        )
    threads = spark.sparkContext._jvm.java.lang.System.getenv(BLAS_THREADS_ENV)
    return LinearAlgebra(blas=blas, lapack=lapack, native=native, openblas_threads=threads)


@dataclass(frozen=True)
class Projection:
    """A fitted scaler + PCA as plain arrays: ``(features - mean) * scale @ components``.

    What ``PipelineModel.transform`` computes row by row (a matrix-vector product per row,
    which reads the whole 1280 x k matrix for every image), done for a batch of rows in one
    matrix product, in the Python workers; the same float64 arithmetic, then float32.
    """

    #: the scaler's per-feature mean, and 1/std (0 where std is 0, as Spark does)
    mean: np.ndarray
    scale: np.ndarray
    #: the principal components, one column each (features x k)
    components: np.ndarray

    @classmethod
    def of(cls, model: PipelineModel) -> Projection:
        """Return the projection of a scaler + PCA ``PipelineModel`` (``fit_two_pass_pca``'s,
        or one loaded from ``pca_model/``)."""
        scaler, pca = model.stages
        std = scaler.std.toArray()
        mean = scaler.mean.toArray() if scaler.getWithMean() else np.zeros_like(std)
        if scaler.getWithStd():
            scale = np.divide(1.0, std, out=np.zeros_like(std), where=std != 0)
        else:
            scale = np.ones_like(std)
        return cls(mean=mean, scale=scale, components=pca.pc.toArray())

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Project ``features`` (rows x features) to float32 rows x k."""
        scaled = (np.asarray(features, dtype=np.float64) - self.mean) * self.scale
        return (scaled @ self.components).astype(np.float32)

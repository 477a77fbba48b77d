"""Two-pass PCA: standardise in Spark ML, decompose the covariance in NumPy, keep the
smallest k.

Pass one measures every component: Spark ML's ``StandardScaler`` (its mean and std are the
same in any row order), then the scaled rows' covariance, summed from per-task NumPy
partials, and its symmetric eigendecomposition (``numpy.linalg.eigh``) on the driver.
``choose_k`` picks the smallest k whose cumulative ratio reaches the threshold; pass two is
a Spark ML ``PCAModel`` of the first k components, built from pass one's arrays.  The
result is a ``PipelineModel`` (scaler + PCA) that can project new images later.

Spark ML's own ``PCA.fit`` is not used: it hands the covariance to LAPACK's ``dgesdd`` in
the driver's JVM, and where no native LAPACK is installed the pure-Java fallback
(F2jLAPACK) returns a wrong spectrum for rank-deficient covariances (fewer rows than
features), one that changes with the rows' order and the partitioning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.ml import PipelineModel
from pyspark.ml.feature import PCA, PCAModel, StandardScaler, StandardScalerModel
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame, SparkSession

from fruits_pipeline.errors import BadInput
from fruits_pipeline.results.arrays import array_matrix
from fruits_pipeline.results.report import LinearAlgebra
from fruits_pipeline.session import BLAS_THREADS_ENV, session_conf

log = logging.getLogger(__name__)

VECTOR_COL = "_features_vector"
SCALED_COL = "_scaled"
PCA_VECTOR_COL = "_pca_vector"

#: Rows per arrow batch the covariance's tasks get: 1024 rows of 1280 float64 are 10 MB.
BATCH_ROWS = 1024
#: A task's share of the scaled rows' sums: one row per row of the upper triangle of
#: ``X^T X`` (key 0 to n-1, the values from the diagonal on), and key n for the column
#: sums and the row count; ``part`` is the task's partition.
PARTIAL_SCHEMA = "key int, part int, rows long, values binary"
SUM_SCHEMA = "key int, rows long, values binary"
#: How far from exact the decomposition may be, relative to the largest eigenvalue (or to
#: 1 for orthonormality and for the ratios' sum).  ``eigh``'s own error is near 1e-13;
#: a broken decomposition is off by percents.
CHECK_TOLERANCE = 1e-8


class PCAInputError(BadInput):
    """Too few valid images to fit a PCA, or features that do not vary."""


class PCACheckError(RuntimeError):
    """The PCA failed its check in the run: a wrong decomposition is not published."""


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
    Raises PCAInputError when it holds fewer than 2 rows or its features do not vary, and
    PCACheckError when the decomposition fails ``check_decomposition``.
    """
    vectors = features.select(array_to_vector(input_col).alias(VECTOR_COL))
    rows = vectors.count()
    if rows < 2:
        raise PCAInputError(f"PCA needs at least 2 valid images, got {rows}")
    scaler = StandardScaler(
        inputCol=VECTOR_COL, outputCol=SCALED_COL, withMean=True, withStd=True
    ).fit(vectors)
    mean, scale = scaler_arrays(scaler)
    covariance, scanned = scaled_covariance(features.select(input_col), mean, scale)
    if scanned != rows:
        raise PCACheckError(
            f"PCA check failed: the covariance summed {scanned} rows, the count {rows}: "
            "the features changed between the PCA's scans"
        )
    # NumPy's symmetric eigensolver in float64: exact to rounding on a rank-deficient
    # covariance, and the same with or without a native LAPACK (NumPy brings its own).
    values, components = decompose(covariance)
    total = float(values.sum())
    if total <= 0.0:
        raise PCAInputError(f"the {rows} valid images' features do not vary: nothing to reduce")
    # As many components as Spark ML's PCA(k=min(features, rows)) reported, ratios of all.
    ratios = values[: min(values.size, rows)] / total
    k = choose_k(ratios, threshold)
    check_decomposition(covariance, values, components[:, :k], ratios)
    cumulative = np.cumsum(ratios)
    log.info(
        "PCA pass one: %d components, k=%d keeps %.4f of the variance (threshold %.4f)",
        ratios.size,
        k,
        cumulative[k - 1],
        threshold,
    )
    second = pca_model(components[:, :k], ratios[:k])
    return PCAResult(
        model=PipelineModel(stages=[scaler, second]),
        k=k,
        cumulative_variance=[float(v) for v in cumulative],
        variance_kept=float(cumulative[k - 1]),
        rows=rows,
    )


def scaler_arrays(scaler: StandardScalerModel) -> tuple[np.ndarray, np.ndarray]:
    """Return what a fitted scaler subtracts and multiplies by: its mean (zeros without
    ``withMean``) and 1/std (0 where std is 0, as Spark does; ones without ``withStd``)."""
    std = scaler.std.toArray()
    mean = scaler.mean.toArray() if scaler.getWithMean() else np.zeros_like(std)
    if scaler.getWithStd():
        scale = np.divide(1.0, std, out=np.zeros_like(std), where=std != 0)
    else:
        scale = np.ones_like(std)
    return mean, scale


def scaled_covariance(
    features: DataFrame, mean: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, int]:
    """Return the covariance matrix of ``(features - mean) * scale`` (what the scaler
    outputs) in float64, divided by rows - 1 as Spark ML's is, and the rows it summed.

    ``features`` has one column, an ``array<float>``.  Each task sums its rows' ``X^T X``
    and column sums in NumPy; a shuffle by row of the matrix adds the tasks' sums in
    partition order (the same floats on every rerun of the same partitioning), and the
    driver gets one matrix, never a row of features.
    """
    summed = (
        features.mapInArrow(_partial_sums(mean, scale), PARTIAL_SCHEMA)
        .repartition("key")
        .sortWithinPartitions("key", "part")
        .mapInArrow(_add_partials, SUM_SCHEMA)
    )
    spark = features.sparkSession
    with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(BATCH_ROWS)}):
        got = summed.collect()
    dims = mean.size
    keys = sorted(row["key"] for row in got)
    if keys != list(range(dims + 1)):
        raise PCACheckError(
            f"PCA check failed: the covariance's sums came back as {len(keys)} rows for {dims + 1}"
        )
    upper = np.zeros((dims, dims))
    for row in got:
        values = np.frombuffer(row["values"], dtype=np.float64)
        if row["key"] == dims:
            rows, totals = int(row["rows"]), values
        else:
            upper[row["key"], row["key"] :] = values
    gram = upper + np.triu(upper, 1).T
    return (gram - np.outer(totals, totals) / rows) / (rows - 1), rows


def _partial_sums(mean: np.ndarray, scale: np.ndarray):
    """The covariance's map side: a task's ``X^T X``, column sums and row count."""

    def partial(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        dims = mean.size
        gram, totals, rows = np.zeros((dims, dims)), np.zeros(dims), 0
        for batch in batches:
            if batch.num_rows:
                scaled = (array_matrix(batch.column(0)).astype(np.float64) - mean) * scale
                gram += scaled.T @ scaled
                totals += scaled.sum(axis=0)
                rows += len(scaled)
        if rows:
            part = TaskContext.get().partitionId()
            keys = list(range(dims + 1))
            values = [gram[i, i:].tobytes() for i in range(dims)] + [totals.tobytes()]
            counts = [0] * dims + [rows]
            yield pa.RecordBatch.from_pydict(
                {"key": keys, "part": [part] * len(keys), "rows": counts, "values": values},
                schema=_arrow_schema(PARTIAL_SCHEMA),
            )

    return partial


def _add_partials(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The covariance's reduce side: the sum of each key's rows, which arrive sorted by
    key and then by partition, so that the floats are added in the same order every time."""
    keys, counts, sums = [], [], []
    for batch in batches:
        for key, rows, data in zip(
            batch.column("key").to_pylist(),
            batch.column("rows").to_pylist(),
            batch.column("values").to_pylist(),
            strict=True,
        ):
            if not keys or keys[-1] != key:
                keys.append(key)
                counts.append(0)
                sums.append(np.zeros(len(data) // 8))
            counts[-1] += rows
            sums[-1] += np.frombuffer(data, dtype=np.float64)
    if keys:
        values = [total.tobytes() for total in sums]
        yield pa.RecordBatch.from_pydict(
            {"key": keys, "rows": counts, "values": values}, schema=_arrow_schema(SUM_SCHEMA)
        )


def _arrow_schema(ddl: str) -> pa.Schema:
    """The arrow schema of PARTIAL_SCHEMA or SUM_SCHEMA."""
    types = {"int": pa.int32(), "long": pa.int64(), "binary": pa.binary()}
    return pa.schema([(name, types[kind]) for name, kind in map(str.split, ddl.split(", "))])


def decompose(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the eigenvalues of a symmetric ``covariance`` in decreasing order (rounding's
    tiny negatives as 0) and its eigenvectors, one column each, each with its largest
    entry (in absolute value) positive, so that a rerun gives the same components.

    Raises PCACheckError when the covariance is not finite."""
    if not np.isfinite(covariance).all():
        raise PCACheckError(
            "PCA check failed: the features' covariance holds NaN or infinite values"
        )
    values, vectors = np.linalg.eigh(covariance)
    values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1]
    pivots = np.argmax(np.abs(vectors), axis=0)
    return values, vectors * np.sign(vectors[pivots, np.arange(vectors.shape[1])])


def check_decomposition(
    covariance: np.ndarray, values: np.ndarray, components: np.ndarray, ratios: np.ndarray
) -> None:
    """Raise PCACheckError, one line saying what is off, unless ``values`` (every
    eigenvalue, decreasing) and ``components`` (the first k eigenvectors, one column each)
    decompose ``covariance``, and the explained-variance ``ratios`` sum to at most 1:
    the eigenvalues add up to the trace, the components are orthonormal, and
    Cov·v = λv for each of them, all within CHECK_TOLERANCE."""

    def fail(what: str) -> None:
        raise PCACheckError(f"PCA check failed: {what} (tolerance {CHECK_TOLERANCE:g})")

    ratios = np.asarray(ratios, dtype=np.float64)
    if not np.isfinite(ratios).all() or (ratios < 0).any():
        fail("an explained-variance ratio is negative or not finite")
    if ratios.sum() > 1.0 + CHECK_TOLERANCE:
        fail(f"the explained-variance ratios sum to {ratios.sum():.6f}, more than 1")
    trace = float(np.trace(covariance))
    if abs(float(values.sum()) - trace) > CHECK_TOLERANCE * max(trace, 1.0):
        fail(f"the eigenvalues sum to {values.sum():.6g}, the covariance's trace is {trace:.6g}")
    k = components.shape[1]
    gram = components.T @ components
    off = float(np.abs(gram - np.eye(k)).max()) if k else 0.0
    if off > CHECK_TOLERANCE:
        fail(f"the components are not orthonormal (|V^T V - I| reaches {off:.2e})")
    residuals = np.linalg.norm(covariance @ components - components * values[:k], axis=0)
    largest = max(float(values[0]), np.finfo(float).tiny) if values.size else 1.0
    worst = int(np.argmax(residuals)) if k else 0
    if k and residuals[worst] > CHECK_TOLERANCE * largest:
        fail(
            f"component {worst + 1}: |Cov·v - λv| is {residuals[worst] / largest:.2e} "
            "of the largest eigenvalue"
        )


def pca_model(components: np.ndarray, explained_variance: np.ndarray) -> PCAModel:
    """Return pass two: a Spark ML ``PCAModel`` of ``components`` (features x k) and their
    explained-variance ratios, built through the JVM's constructor (what ``PCA(k).fit``
    returns, without its decomposition).  Same class, same parameters, saved and loaded
    like any Spark ML ``PCAModel``."""
    from pyspark import SparkContext
    from pyspark.ml.common import _py2java
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    dims, k = components.shape
    estimator = PCA(k=k, inputCol=SCALED_COL, outputCol=PCA_VECTOR_COL)
    context = SparkContext._active_spark_context
    java_model = context._jvm.org.apache.spark.ml.feature.PCAModel(
        estimator.uid,
        _py2java(context, DenseMatrix(dims, k, np.asarray(components).ravel(order="F"))),
        _py2java(context, DenseVector(np.asarray(explained_variance, dtype=np.float64))),
    )
    java_model.setInputCol(SCALED_COL).setOutputCol(PCA_VECTOR_COL)
    java_model.set(java_model.k(), k)
    model = PCAModel(java_model)
    model._transfer_params_from_java()
    return model


#: Debian/Ubuntu packages that give Spark a native BLAS and LAPACK (OpenBLAS).
NATIVE_LAPACK_HINT = "apt-get install libopenblas0-pthread liblapack3 (dnf install openblas)"


def linear_algebra(spark: SparkSession) -> LinearAlgebra:
    """Return which BLAS and LAPACK Spark ML uses in the driver's JVM: the class names of
    ``dev.ludovic.netlib``'s instances, ``native`` (True when LAPACK is JNILAPACK) and
    ``openblas_threads`` (the JVM's ``OPENBLAS_NUM_THREADS``, None when unset).

    The PCA does not depend on them (NumPy decomposes, and the workers project); Spark ML's
    own models (``train``'s logistic regression, a saved model's ``transform``) run in them,
    faster with OpenBLAS than in the pure-Java fallback.  Logs, at info level, the packages
    to install when LAPACK is not native.
    """
    netlib = spark.sparkContext._jvm.dev.ludovic.netlib
    lapack = netlib.lapack.LAPACK.getInstance().getClass().getSimpleName()
    blas = netlib.blas.BLAS.getInstance().getClass().getSimpleName()
    native = lapack == "JNILAPACK"
    if not native:
        log.info(
            "Spark ML uses the pure-Java LAPACK (%s); the PCA does not, Spark ML's own "
            "models are faster with a native one: %s",
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
        mean, scale = scaler_arrays(scaler)
        return cls(mean=mean, scale=scale, components=pca.pc.toArray())

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Project ``features`` (rows x features) to float32 rows x k."""
        scaled = (np.asarray(features, dtype=np.float64) - self.mean) * self.scale
        return (scaled @ self.components).astype(np.float32)

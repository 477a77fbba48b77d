"""PCA: the pure choice of k, and the two-pass Spark ML fit against scikit-learn."""

from __future__ import annotations

import ctypes.util

import numpy as np
import pytest
from pyspark.ml.functions import array_to_vector

from fruits_pipeline.chain.pca import (
    PCAInputError,
    Projection,
    choose_k,
    fit_two_pass_pca,
    linear_algebra,
)


@pytest.mark.parametrize(
    "ratios, threshold, k",
    [
        ([0.5, 0.3, 0.15, 0.05], 0.5, 1),
        ([0.5, 0.3, 0.15, 0.05], 0.8, 2),
        ([0.5, 0.3, 0.15, 0.05], 0.81, 3),
        ([0.5, 0.3, 0.15, 0.05], 0.95, 3),
        ([0.5, 0.3, 0.15, 0.05], 0.96, 4),
        ([0.5, 0.3, 0.15, 0.05], 1.0, 4),
        ([0.9, 0.1, 0.0, 0.0], 1.0, 4),  # 1.0 keeps every component, even empty ones
        ([1 / 3, 1 / 3, 1 / 3], 2 / 3, 2),
        # 0.7 + 0.1 is 0.7999999999999999 in float64: an exact hit that a float sum misses
        ([0.7, 0.1, 0.2], 0.8, 2),
    ],
)
def test_choose_k(ratios, threshold, k):
    assert choose_k(ratios, threshold) == k


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01])
def test_choose_k_rejects_thresholds_outside_0_1(threshold):
    with pytest.raises(ValueError):
        choose_k([0.6, 0.4], threshold)


def low_rank_features(rows=240, dims=48, rank=6, seed=0) -> np.ndarray:
    """Features with a few strong directions plus noise, like CNN features."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, dims)) * np.linspace(6, 1, rank)[:, None]
    mixed = rng.normal(size=(rows, rank)) @ basis
    return (mixed + rng.normal(scale=0.5, size=(rows, dims)) + rng.normal(size=dims) * 3).astype(
        np.float32
    )


@pytest.mark.spark
def test_two_pass_pca_matches_scikit_learn(spark):
    from sklearn.decomposition import PCA

    data = low_rank_features()
    frame = spark.createDataFrame(
        [(i, row.tolist()) for i, row in enumerate(data)], "id int, features array<float>"
    )
    result = fit_two_pass_pca(frame, threshold=0.9)

    # Spark's StandardScaler divides by the sample standard deviation (ddof=1).
    scaled = (data - data.mean(axis=0)) / data.std(axis=0, ddof=1)
    reference = PCA().fit(scaled)
    cumulative = np.cumsum(reference.explained_variance_ratio_)
    expected_k = int(np.argmax(cumulative >= 0.9) + 1)
    assert result.k == expected_k
    assert 1 < result.k < data.shape[1]
    assert np.allclose(result.cumulative_variance[: result.k], cumulative[: result.k], atol=1e-6)
    assert result.variance_kept >= 0.9

    ours = Projection.of(result.model)(data)
    theirs = reference.transform(scaled)[:, : result.k]
    signs = np.sign(np.sum(ours * theirs, axis=0))  # components are defined up to sign
    assert ours.shape == (len(data), result.k)
    assert np.allclose(ours, theirs * signs, atol=1e-3)


@pytest.mark.spark
def test_threshold_one_keeps_every_component(spark):
    data = low_rank_features(rows=30, dims=12, seed=1)
    frame = spark.createDataFrame([(row.tolist(),) for row in data], "features array<float>")
    result = fit_two_pass_pca(frame, threshold=1.0)
    assert result.k == 12


@pytest.mark.spark
def test_pca_needs_two_rows(spark):
    frame = spark.createDataFrame([([1.0, 2.0],)], "features array<float>")
    with pytest.raises(PCAInputError, match="at least 2"):
        fit_two_pass_pca(frame, threshold=0.95)


@pytest.mark.spark
def test_pass_two_equals_a_fresh_pca_k_fit(spark, tmp_path):
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import PCA

    from fruits_pipeline.chain.pca import PCA_VECTOR_COL, SCALED_COL

    data = low_rank_features(rows=80, dims=20, seed=3)
    frame = spark.createDataFrame([(row.tolist(),) for row in data], "features array<float>")
    result = fit_two_pass_pca(frame, threshold=0.8)
    scaler, second = result.model.stages
    assert 1 < result.k < 20 and second.getK() == result.k

    scaled = scaler.transform(frame.select(array_to_vector("features").alias(scaler.getInputCol())))
    fresh = PCA(k=result.k, inputCol=SCALED_COL, outputCol=PCA_VECTOR_COL).fit(scaled)
    assert np.allclose(second.pc.toArray(), fresh.pc.toArray(), atol=1e-9)
    assert np.allclose(second.explainedVariance.toArray(), fresh.explainedVariance.toArray())

    result.model.write().save(str(tmp_path / "model"))  # saved and loaded like any model
    loaded = PipelineModel.load(str(tmp_path / "model"))
    again, first = Projection.of(loaded)(data), Projection.of(result.model)(data)
    assert again.shape == (80, result.k) and np.array_equal(again, first)


@pytest.mark.spark
def test_the_projection_computes_what_spark_ml_transform_computes(spark):
    """Spark ML's own ``PipelineModel.transform`` (a matrix-vector product per row) is the
    reference: the batched projection must give the same floats, a constant feature too."""
    from pyspark.ml.functions import vector_to_array

    data = low_rank_features(rows=60, dims=16, seed=5)
    data[:, 3] = 2.5  # std 0: Spark scales it by 0, not by infinity
    frame = spark.createDataFrame(
        [(i, row.tolist()) for i, row in enumerate(data)], "id int, features array<float>"
    )
    result = fit_two_pass_pca(frame, threshold=0.95)
    scaler, _ = result.model.stages
    vectors = frame.select("id", array_to_vector("features").alias(scaler.getInputCol()))
    theirs = np.array(
        [
            row[0]
            for row in result.model.transform(vectors)
            .orderBy("id")
            .select(vector_to_array(result.model.stages[1].getOutputCol(), "float32"))
            .collect()
        ]
    )
    ours = Projection.of(result.model)(data)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (60, result.k)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    assert np.mean(ours == theirs) > 0.99  # the same float64 arithmetic, in another order


def test_spark_uses_the_native_lapack_where_one_is_installed(spark):
    algebra = linear_algebra(spark)
    if ctypes.util.find_library("lapack") and ctypes.util.find_library("blas"):
        # liblapack.so.3 and libblas.so.3 are what dev.ludovic.netlib loads (.ci/run
        # installs OpenBLAS's); with them, the decomposition must not run in Java.
        assert vars(algebra) == {
            "blas": "JNIBLAS",
            "lapack": "JNILAPACK",
            "native": True,
            # set by build_spark before the JVM started: one BLAS thread per task
            "openblas_threads": "1",
        }
    else:  # no native library on this machine: Spark falls back to a Java one, and says so
        assert algebra.lapack in {"F2jLAPACK", "JavaLAPACK"}
        assert algebra.native is False

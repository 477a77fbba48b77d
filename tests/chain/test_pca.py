"""PCA: the pure choice of k, the two-pass fit against scikit-learn (also on rank-deficient
inputs in several row orders and partitionings), and the run's check of the decomposition."""

from __future__ import annotations

import ctypes.util
import re

import numpy as np
import pytest
from pyspark.ml.functions import array_to_vector

from fruits_pipeline.chain import pca
from fruits_pipeline.chain.pca import (
    PCACheckError,
    PCAInputError,
    Projection,
    check_decomposition,
    choose_k,
    decompose,
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
def test_pass_two_is_the_spark_pca_model_of_the_first_k_components(spark, tmp_path):
    """On a full-rank input, where Spark ML's own decomposition is right, a fresh
    ``PCA(k).fit`` gives the same model up to the components' signs; the model saves and
    loads like any Spark ML model."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import PCA, PCAModel

    from fruits_pipeline.chain.pca import PCA_VECTOR_COL, SCALED_COL

    data = low_rank_features(rows=80, dims=20, seed=3)
    frame = spark.createDataFrame([(row.tolist(),) for row in data], "features array<float>")
    result = fit_two_pass_pca(frame, threshold=0.8)
    scaler, second = result.model.stages
    assert isinstance(second, PCAModel)
    assert 1 < result.k < 20 and second.getK() == result.k
    assert (second.getInputCol(), second.getOutputCol()) == (SCALED_COL, PCA_VECTOR_COL)

    scaled = scaler.transform(frame.select(array_to_vector("features").alias(scaler.getInputCol())))
    fresh = PCA(k=result.k, inputCol=SCALED_COL, outputCol=PCA_VECTOR_COL).fit(scaled)
    ours, theirs = second.pc.toArray(), fresh.pc.toArray()
    assert np.allclose(ours, theirs * np.sign(np.sum(ours * theirs, axis=0)), atol=1e-9)
    assert np.allclose(second.explainedVariance.toArray(), fresh.explainedVariance.toArray())

    result.model.write().save(str(tmp_path / "model"))  # saved and loaded like any model
    loaded = PipelineModel.load(str(tmp_path / "model"))
    again, first = Projection.of(loaded)(data), Projection.of(result.model)(data)
    assert again.shape == (80, result.k) and np.array_equal(again, first)


def rank_deficient_features(rows=300, dims=1280, seed=0) -> np.ndarray:
    """Fewer rows than features, like a small run: positive features sharing one strong
    common factor, a few dozen weaker directions, noise, and some constant columns (real
    features have zero-std ones).  The covariance has rank rows - 1 at most."""
    rng = np.random.default_rng(seed)
    common = rng.gamma(4.0, 0.25, size=(rows, 1)) * rng.uniform(0.5, 1.5, size=dims)
    basis = rng.normal(size=(60, dims)) * np.geomspace(0.3, 0.05, 60)[:, None]
    mixed = rng.normal(size=(rows, 60)) @ basis + rng.normal(scale=0.05, size=(rows, dims))
    data = np.abs(0.3 + common + mixed)
    data[:, rng.choice(dims, 8, replace=False)] = 0.25
    return data.astype(np.float32)


@pytest.mark.spark
def test_a_rank_deficient_pca_is_numpys_in_any_row_order_and_partitioning(spark):
    """300 rows of 1280 features: the same k, spectrum, components and projection as
    scikit-learn's, whatever the rows' order and the partitions.  Spark ML's ``PCA.fit``
    got this wrong with its pure-Java LAPACK, differently per order (two of these four
    orders).  The decomposition now runs in NumPy, never in the JVM's LAPACK, so this
    holds alike with no native LAPACK (as on this test's machine) and with one (CI):
    there is no LAPACK to force here."""
    import pandas as pd
    from pyspark.sql import functions as F
    from sklearn.decomposition import PCA

    data = rank_deficient_features()
    exact = data.astype(np.float64)  # as Spark reads the floats
    std = exact.std(axis=0, ddof=1)
    scaled = (exact - exact.mean(axis=0)) * np.divide(
        1, std, out=np.zeros_like(std), where=std != 0
    )
    reference = PCA(svd_solver="full").fit(scaled)
    cumulative = np.cumsum(reference.explained_variance_ratio_)
    expected_k = int(np.argmax(cumulative >= 0.95) + 1)
    assert 100 < expected_k < 299

    frame = spark.createDataFrame(pd.DataFrame({"id": range(len(data)), "features": list(data)}))
    layouts = {
        "by id": frame.orderBy("id"),
        "shuffled, seed 1": frame.orderBy(F.rand(1)),
        "shuffled, seed 2, 3 partitions": frame.repartition(3).orderBy(F.rand(2)),
        "one partition": frame.coalesce(1),
    }
    first = None
    for name, layout in layouts.items():
        result = fit_two_pass_pca(layout.persist(), threshold=0.95)
        layout.unpersist()
        assert result.k == expected_k, name
        assert len(result.cumulative_variance) == 300, name
        assert np.allclose(result.cumulative_variance, cumulative[:300], atol=1e-9), name
        components = result.model.stages[1].pc.toArray()
        theirs = reference.components_[: result.k].T
        signs = np.sign(np.sum(components * theirs, axis=0))
        assert np.allclose(components, theirs * signs, atol=1e-7), name
        projected = Projection.of(result.model)(data)
        assert np.allclose(projected, reference.transform(scaled)[:, : result.k] * signs, atol=1e-3)
        if first is None:
            first = components
        else:  # each component's sign is fixed: the same components in any order, not flipped
            assert np.allclose(components, first, atol=1e-9), name


@pytest.mark.spark
def test_features_that_do_not_vary_have_no_pca(spark):
    frame = spark.createDataFrame([([1.0, 2.0, 3.0],)] * 3, "features array<float>")
    with pytest.raises(PCAInputError, match="do not vary"):
        fit_two_pass_pca(frame, threshold=0.95)


def small_decomposition(seed=0):
    """A 12x12 covariance of 8 rows (rank 7), its eigenvalues and eigenvectors, and the
    ratios of the first 8."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(8, 12)) * np.linspace(3, 1, 12)
    covariance = np.cov(rows, rowvar=False)
    values, vectors = decompose(covariance)
    return covariance, values, vectors, values[:8] / values.sum()


def test_decompose_gives_sorted_eigenpairs_with_fixed_signs():
    covariance, values, vectors, ratios = small_decomposition()
    assert np.all(np.diff(values) <= 0) and values.min() >= 0
    assert np.allclose(covariance @ vectors, vectors * values, atol=1e-12)
    pivots = np.argmax(np.abs(vectors), axis=0)
    assert np.all(vectors[pivots, np.arange(12)] > 0)
    assert np.allclose(np.sort(np.linalg.eigvalsh(covariance))[::-1], values, atol=1e-12)
    check_decomposition(covariance, values, vectors[:, :5], ratios)  # right: no error


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("wrong eigenvector", "component 2: |Cov·v - λv|"),
        ("not orthonormal", "not orthonormal"),
        ("eigenvalue off", "eigenvalues sum to"),
        ("ratios above 1", "ratios sum to 1.0009"),
        ("ratio NaN", "negative or not finite"),
    ],
)
def test_the_check_refuses_a_broken_decomposition(breakage, message):
    covariance, values, vectors, ratios = small_decomposition()
    components = vectors[:, :5].copy()
    if breakage == "wrong eigenvector":  # unit, orthogonal to the others, but no eigenvector
        components[:, 1] = (vectors[:, 1] + vectors[:, 6]) / np.sqrt(2)
    elif breakage == "not orthonormal":
        components[:, 0] *= 1.01
    elif breakage == "eigenvalue off":
        values = values.copy()
        values[0] *= 1.05
    elif breakage == "ratios above 1":
        ratios = ratios * 1.0009
    else:
        ratios = ratios.copy()
        ratios[3] = np.nan
    with pytest.raises(PCACheckError, match=re.escape(message)) as raised:
        check_decomposition(covariance, values, components, ratios)
    assert isinstance(raised.value, RuntimeError)
    assert "\n" not in str(raised.value) and str(raised.value).startswith("PCA check failed:")


@pytest.mark.spark
def test_a_run_with_a_broken_decomposition_fails(spark, monkeypatch):
    """The check runs inside the fit: a decomposition that is off (here: the first two
    components mixed, as a wrong LAPACK result would be) fails the fit, no model made.
    A rotation of two eigenvectors leaves both the same residual, 0.6 |λ1 - λ2|, so the
    check may name either one: which is the worse is decided by rounding alone."""
    right = decompose

    def broken(covariance):
        values, vectors = right(covariance)
        vectors = vectors.copy()
        vectors[:, :2] = vectors[:, :2] @ np.array([[0.8, -0.6], [0.6, 0.8]])
        return values, vectors

    monkeypatch.setattr(pca, "decompose", broken)
    data = low_rank_features(rows=40, dims=10, seed=2)
    frame = spark.createDataFrame([(row.tolist(),) for row in data], "features array<float>")
    with pytest.raises(PCACheckError, match=r"component [12]: \|Cov·v - λv\|"):
        fit_two_pass_pca(frame, threshold=0.95)


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

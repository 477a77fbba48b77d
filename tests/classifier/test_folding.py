"""The scaler, the PCA and the logistic regression folded into one dense layer: against
scikit-learn's pipeline on random data, and against Spark's own models of a trained run."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.functions import vector_to_array
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fruits_pipeline.classifier.folding import LinearChain, fold, scaler_arrays, softmax
from fruits_pipeline.classifier.saved import load_classifier, read_linear_chain, with_vector


def test_folding_gives_scikit_learns_probabilities():
    rng = np.random.default_rng(11)
    features = rng.normal(size=(120, 24)) * rng.uniform(0.5, 3.0, size=24) + 2.0
    features[:, 5] = 4.0  # a constant feature: its standard deviation is 0
    labels = np.argmax(features[:, :3] + rng.normal(scale=0.5, size=(120, 3)), axis=1)
    scaler = StandardScaler().fit(features)
    scaled = scaler.transform(features)
    pca = PCA(n_components=7).fit(scaled)
    projected = pca.transform(scaled)
    regression = LogisticRegression(C=0.5, max_iter=500).fit(projected, labels)
    expected = regression.predict_proba(projected)

    # scikit-learn's PCA centres its input again; after the scaler that mean is ~1e-16
    assert np.abs(pca.mean_).max() < 1e-12
    # Spark's scaler multiplies by 1/std (0 where std is 0); scikit-learn's scale_ is 1 there
    shift, scale = scaler_arrays(scaler.mean_, np.sqrt(scaler.var_), True, True)
    assert scale[5] == 0.0 and scaler.scale_[5] == 1.0
    head = fold(
        LinearChain(
            shift=shift,
            scale=scale,
            components=pca.components_.T,
            coefficients=regression.coef_,
            intercepts=regression.intercept_,
        )
    )
    assert head.weight.shape == (24, 3) and head.weight.dtype == np.float32
    found = softmax(features.astype(np.float32) @ head.weight + head.bias)
    np.testing.assert_allclose(found, expected, atol=1e-5)


def test_scaler_settings_as_spark_applies_them():
    mean, std = np.array([1.0, -2.0, 3.0]), np.array([2.0, 0.0, 0.5])
    np.testing.assert_array_equal(scaler_arrays(mean, std, True, True)[1], [0.5, 0.0, 2.0])
    np.testing.assert_array_equal(scaler_arrays(mean, std, False, True)[0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(scaler_arrays(mean, std, True, False)[1], [1.0, 1.0, 1.0])


def test_chains_that_do_not_fit_are_refused():
    chain = LinearChain(
        shift=np.zeros(4),
        scale=np.ones(4),
        components=np.zeros((4, 2)),
        coefficients=np.zeros((3, 5)),
        intercepts=np.zeros(3),
    )
    with pytest.raises(ValueError, match="do not chain"):
        fold(chain)


def test_softmax_is_stable_for_large_logits():
    found = softmax(np.array([[1000.0, 0.0, -1000.0]]))
    np.testing.assert_allclose(found, [[1.0, 0.0, 0.0]])


@pytest.fixture(scope="module")
def run(trained_run):
    return trained_run


def test_the_folded_head_gives_the_spark_classifiers_probabilities(spark, run):
    """Spark's classifier on the run's pca_features (its scaler + PCA of the 1280 features),
    against one dense layer and a softmax on the 1280 features."""
    saved = read_linear_chain(str(run.output))
    head = fold(saved.chain)
    features = spark.read.parquet(str(run.output / "features"))
    classifier = load_classifier(str(run.output))
    rows = (
        classifier.transform(with_vector(features))
        .select("features", vector_to_array("probability").alias("p"))
        .collect()
    )
    spark_probabilities = np.array([row["p"] for row in rows])
    inputs = np.array([row["features"] for row in rows], np.float32)
    folded = softmax(inputs @ head.weight + head.bias)
    assert spark_probabilities.shape == folded.shape == (len(rows), len(saved.labels))
    np.testing.assert_allclose(folded, spark_probabilities, atol=1e-5)
    assert (folded.argmax(axis=1) == spark_probabilities.argmax(axis=1)).all()

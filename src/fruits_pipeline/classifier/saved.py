"""The saved classifier: how ``train`` writes it under OUTPUT and how ``export`` reads it back.

``OUTPUT/classifier/`` is a Spark ML ``PipelineModel`` that any Spark reads with its standard
``PipelineModel.load``: the multinomial ``LogisticRegressionModel`` on a vector column
``pca_vector`` (``array_to_vector("pca_features")``), then an ``IndexToString`` whose labels
are the order the classifier predicts in, so that ``probability[i]`` is the probability of
``labels[i]`` and ``predicted_label`` names the winner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.classification import LogisticRegressionModel
from pyspark.ml.feature import IndexToString, PCAModel, StandardScalerModel
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame

from fruits_pipeline.classifier.folding import LinearChain, scaler_arrays
from fruits_pipeline.results import layout, owned, storage

#: The classifier's input: ``pca_features`` as a Spark ML vector.
VECTOR_COL = "pca_vector"
#: Its outputs: the index Spark predicts, the probability vector, and the label's name.
PREDICTION_COL = "prediction"
PROBABILITY_COL = "probability"
PREDICTED_LABEL_COL = "predicted_label"


def classifier_pipeline(model: LogisticRegressionModel, labels: list[str]) -> PipelineModel:
    """Return the model to save: ``model`` then the index-to-label mapping ``labels``."""
    names = IndexToString(
        inputCol=model.getPredictionCol(), outputCol=PREDICTED_LABEL_COL, labels=labels
    )
    return PipelineModel(stages=[model, names])


def save_classifier(pipeline: PipelineModel, output: str) -> str:
    """Write ``pipeline`` as ``OUTPUT/classifier/`` (replacing an older one); return where."""
    uri = storage.join(output, layout.CLASSIFIER)
    owned.remove(uri, owner=output)
    pipeline.write().save(storage.spark_uri(uri))
    return uri


def load_classifier(output: str) -> PipelineModel:
    """Read ``OUTPUT/classifier/`` with Spark ML's standard ``PipelineModel.load``."""
    return PipelineModel.load(storage.spark_uri(storage.join(output, layout.CLASSIFIER)))


def classifier_labels(pipeline: PipelineModel) -> list[str]:
    """Return the labels in the order the saved classifier predicts them."""
    return list(pipeline.stages[-1].getLabels())


def with_vector(features: DataFrame) -> DataFrame:
    """Return ``features`` with the classifier's input column (from ``pca_features``)."""
    return features.withColumn(VECTOR_COL, array_to_vector("pca_features"))


@dataclass
class SavedChain:
    """What an export folds: the run's scaler + PCA and the classifier, as arrays, and the
    labels in the classifier's order."""

    chain: LinearChain
    labels: list[str]


def read_linear_chain(output: str) -> SavedChain:
    """Read ``OUTPUT/pca_model/`` (scaler, PCA) and ``OUTPUT/classifier/`` as arrays."""
    pca_model = PipelineModel.load(storage.spark_uri(storage.join(output, layout.PCA_MODEL)))
    scaler, pca = pca_model.stages
    if not isinstance(scaler, StandardScalerModel) or not isinstance(pca, PCAModel):
        raise ValueError(f"{output!r}: pca_model/ is not a StandardScaler then a PCA")
    shift, scale = scaler_arrays(
        scaler.mean.toArray(), scaler.std.toArray(), scaler.getWithMean(), scaler.getWithStd()
    )
    classifier = load_classifier(output)
    regression = classifier.stages[0]
    return SavedChain(
        chain=LinearChain(
            shift=shift,
            scale=scale,
            components=pca.pc.toArray(),
            coefficients=regression.coefficientMatrix.toArray(),
            intercepts=np.asarray(regression.interceptVector.toArray()),
        ),
        labels=classifier_labels(classifier),
    )

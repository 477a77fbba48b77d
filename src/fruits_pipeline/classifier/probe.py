"""The linear probe: are a run's features good enough to classify fruit?

Spark ML's multinomial ``LogisticRegression`` is trained on the ``pca_features`` of the
images under a ``Training`` folder and tested on those under a ``Test`` folder (the
Fruits-360 layout; both names are options).  ``evaluate_output`` adds accuracy, macro-F1,
the worst classes and a confusion-matrix plot to a finished OUTPUT's report and page.

With seeded random weights the number is not meaningful and the report says so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_pipeline.chain.listing import path_parts
from fruits_pipeline.errors import BadInput
from fruits_pipeline.results import layout, plots, storage
from fruits_pipeline.results.report import (
    ClassScore,
    Evaluation,
    ProbeModel,
    SplitFacts,
    WeightsFacts,
    read_report,
)
from fruits_pipeline.results.writer import add_plot, update_finished

log = logging.getLogger(__name__)

SPLIT_COL = "_split"
INDEX_COL = "_label_index"
VECTOR_COL = "_probe_features"
PREDICTION_COL = "_prediction"


class EvaluationInputError(BadInput):
    """OUTPUT cannot be evaluated: not a finished run, or no training or test images."""


@dataclass
class EvaluationConfig:
    """What to evaluate: every option of ``fruits-pipeline evaluate``."""

    output: str
    train_split: str = "Training"
    test_split: str = "Test"
    max_iter: int = 100
    reg_param: float = 0.0
    worst: int = 10


@dataclass
class ProbeResult:
    """What the probe measured: the confusion matrix over ``labels`` (sorted), and the
    training accuracy, as a ratio in [0, 1]."""

    labels: list[str]
    matrix: np.ndarray  # matrix[i, j]: test images of labels[i] predicted as labels[j]
    train_accuracy: float
    train_images: int
    train_labels: list[str]
    seconds: float


def split_column(path_col: str, train: str, test: str):
    """Spark column: ``"train"``, ``"test"`` or null, from the folders above an image's label
    folder.  When both names appear in a path, the one nearest to the image wins."""
    parts = path_parts(path_col)
    above_label = F.reverse(F.slice(parts, 1, F.greatest(F.size(parts) - 2, F.lit(0))))
    near_train = F.array_position(above_label, train)
    near_test = F.array_position(above_label, test)
    return (
        F.when((near_train > 0) & ((near_test == 0) | (near_train < near_test)), F.lit("train"))
        .when(near_test > 0, F.lit("test"))
        .otherwise(F.lit(None).cast("string"))
    )


def train_probe(features: DataFrame, config: EvaluationConfig) -> ProbeResult:
    """Train the probe on the ``train`` split of ``features`` (``path``, ``label``,
    ``pca_features``) and return its confusion matrix on the ``test`` split.

    Only label pairs and counts reach the driver (at most labels² rows).  Raises
    EvaluationInputError when a split is empty or training has fewer than 2 labels.
    """
    started = time.perf_counter()
    rows = features.select(
        "label",
        array_to_vector("pca_features").alias(VECTOR_COL),
        split_column("path", config.train_split, config.test_split).alias(SPLIT_COL),
    ).where(F.col(SPLIT_COL).isNotNull())
    per_split = {
        (r[SPLIT_COL], r["label"]): r["count"]
        for r in rows.groupBy(SPLIT_COL, "label").count().collect()
    }
    train_labels = sorted({label for split, label in per_split if split == "train"})
    test_labels = sorted({label for split, label in per_split if split == "test"})
    for name, found in ((config.train_split, train_labels), (config.test_split, test_labels)):
        if not found:
            raise EvaluationInputError(
                f"no images under a {name!r} folder in {config.output!r}: pass --train-split "
                "and --test-split with the folder names of your split"
            )
    if len(train_labels) < 2:
        raise EvaluationInputError(
            f"only one label ({train_labels[0]!r}) under {config.train_split!r}: a classifier "
            "needs at least 2"
        )
    labels = sorted(set(train_labels) | set(test_labels))
    index = {label: position for position, label in enumerate(labels)}
    mapping = F.create_map(*[F.lit(x) for pair in index.items() for x in pair])
    indexed = rows.withColumn(INDEX_COL, mapping[F.col("label")].cast("double")).persist()
    try:
        train = indexed.where(F.col(SPLIT_COL) == "train")
        probe = LogisticRegression(
            featuresCol=VECTOR_COL,
            labelCol=INDEX_COL,
            predictionCol=PREDICTION_COL,
            family="multinomial",
            maxIter=config.max_iter,
            regParam=config.reg_param,
        ).fit(train)
        log.info(
            "probe trained on %d images, %d labels, %d iterations",
            sum(n for (s, _), n in per_split.items() if s == "train"),
            len(train_labels),
            probe.summary.totalIterations,
        )
        pairs = (
            probe.transform(indexed).groupBy(SPLIT_COL, INDEX_COL, PREDICTION_COL).count().collect()
        )
    finally:
        indexed.unpersist()
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    train_total = train_right = 0
    for row in pairs:
        truth, guess = int(row[INDEX_COL]), int(row[PREDICTION_COL])
        if row[SPLIT_COL] == "test":
            matrix[truth, guess] += row["count"]
        else:
            train_total += row["count"]
            train_right += row["count"] if truth == guess else 0
    return ProbeResult(
        labels=labels,
        matrix=matrix,
        train_accuracy=train_right / train_total,
        train_images=train_total,
        train_labels=train_labels,
        seconds=round(time.perf_counter() - started, 3),
    )


@dataclass
class ProbeMetrics:
    """Accuracy and macro-F1 (ratios in [0, 1]) on the test split, and the worst classes."""

    accuracy: float
    macro_f1: float
    test_images: int
    worst_classes: list[ClassScore]


def metrics(matrix: np.ndarray, labels: list[str], worst: int = 10) -> ProbeMetrics:
    """Return accuracy, macro-F1 and the ``worst`` classes of a confusion matrix.

    Macro-F1 averages the F1 of every label that is in the test split or was predicted (as
    scikit-learn's ``f1_score(average="macro")``); a label with no right prediction has F1
    0.  The worst classes are the test labels with the lowest F1 (then the most test
    images), each with the label it was most often taken for.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    right = np.diag(counts)
    total = int(counts.sum())
    recall = np.divide(right, support, out=np.zeros(len(labels)), where=support > 0)
    precision = np.divide(right, predicted, out=np.zeros(len(labels)), where=predicted > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros(len(labels)), where=denominator > 0
    )
    present = (support > 0) | (predicted > 0)
    tested = [i for i in range(len(labels)) if support[i] > 0]
    tested.sort(key=lambda i: (f1[i], -support[i], labels[i]))
    rows = []
    for i in tested[:worst]:
        wrong = counts[i].copy()
        wrong[i] = 0
        j = int(np.argmax(wrong))
        rows.append(
            ClassScore(
                label=labels[i],
                support=int(support[i]),
                recall=round(float(recall[i]), 4),
                precision=round(float(precision[i]), 4),
                f1=round(float(f1[i]), 4),
                confused_with=labels[j] if wrong[j] else None,
                confused_count=int(wrong[j]),
            )
        )
    return ProbeMetrics(
        accuracy=float(right.sum() / total) if total else 0.0,
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        test_images=total,
        worst_classes=rows,
    )


def meaning_note(weights: WeightsFacts) -> str:
    """Return the sentence the report gives about what the accuracy means."""
    if weights.meaningful:
        return (
            f"Features from {weights.source}: this is the accuracy a linear classifier "
            "reaches on them."
        )
    return (
        f"NOT MEANINGFUL: the features come from seeded random weights "
        f"({weights.source}). This accuracy only shows that the pipeline runs; it says "
        "nothing about how well real features classify fruit. Use --weights imagenet or a "
        "MobileNetV2 weights file for the number that matters."
    )


def evaluate_output(spark: SparkSession, config: EvaluationConfig) -> Evaluation:
    """Evaluate the finished run at ``config.output`` and return its ``evaluation`` section.

    Writes ``plots/confusion_matrix.png``, then ``report.html`` and ``report.json`` with
    the new section (``report.json`` last).  Raises EvaluationInputError when OUTPUT is
    not a finished run or has no training or test images.
    """
    report_uri = storage.join(config.output, layout.REPORT_JSON)
    features_uri = storage.join(config.output, layout.FEATURES)
    if not storage.exists(report_uri) or not storage.exists(features_uri):
        raise EvaluationInputError(
            f"{config.output!r} is not a finished run: it has no report.json or features/"
        )
    report = read_report(report_uri)
    features = spark.read.parquet(storage.spark_uri(features_uri))
    probe = train_probe(features, config)
    measured = metrics(probe.matrix, probe.labels, config.worst)
    supports = probe.matrix.sum(axis=1)
    test_labels = [label for label, n in zip(probe.labels, supports, strict=True) if n]
    evaluation = Evaluation(
        accuracy=round(measured.accuracy, 6),
        macro_f1=round(measured.macro_f1, 6),
        meaningful=report.weights.meaningful,
        note=meaning_note(report.weights),
        weights_source=report.weights.source,
        train=SplitFacts(
            split=config.train_split,
            images=probe.train_images,
            labels=len(probe.train_labels),
            accuracy=round(probe.train_accuracy, 6),
        ),
        test=SplitFacts(
            split=config.test_split,
            images=measured.test_images,
            labels=len(test_labels),
            unseen_labels=sorted(set(test_labels) - set(probe.train_labels)),
        ),
        worst_classes=measured.worst_classes,
        model=ProbeModel(
            name="Spark ML LogisticRegression (multinomial) on pca_features",
            max_iter=config.max_iter,
            reg_param=config.reg_param,
        ),
        seconds=probe.seconds,
        evaluated_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
    )
    title = f"Linear probe: accuracy {measured.accuracy:.1%}, macro-F1 {measured.macro_f1:.3f}"
    if not evaluation.meaningful:
        title += " (random weights: NOT meaningful)"
    png = plots.confusion_matrix(probe.matrix, probe.labels, title)
    add_plot(config.output, report, layout.CONFUSION_MATRIX_PNG, png)
    report.evaluation = evaluation
    update_finished(config.output, report)
    log.info("evaluation: accuracy %.4f, macro-F1 %.4f", evaluation.accuracy, evaluation.macro_f1)
    return evaluation

"""``train``: the fruit classifier on a finished run's ``pca_features``, its regularisation
chosen on a validation part of the training split, tested on the test split, and saved.

Spark ML's multinomial ``LogisticRegression``:

1. the images under a ``Training`` folder train, those under ``Test`` test (``splits``);
2. each regularisation of ``reg_params`` is fitted on the training split without its
   validation part (one image in five of each label, the same on every run) and scored on
   that part: the best accuracy wins, ties to the lowest mean log-loss (on Fruits-360 the
   validation images are frames of the same fruit as training ones, so several values
   reach the same accuracy; the log-loss still tells them apart);
3. the winner is fitted again on the whole training split, and tested;
4. ``train_run`` saves it as ``OUTPUT/classifier/`` (``saved``) and adds the ``evaluation``
   section, the confusion matrix and the page's section to the run.

Only label pairs and counts reach the driver (at most labels² rows).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_pipeline.classifier.metrics import meaning_note, metrics
from fruits_pipeline.classifier.saved import (
    PREDICTION_COL,
    PROBABILITY_COL,
    VECTOR_COL,
    classifier_pipeline,
    save_classifier,
    with_vector,
)
from fruits_pipeline.classifier.splits import split_column, validation_column
from fruits_pipeline.defaults import DEFAULT_REG_PARAMS
from fruits_pipeline.errors import BadInput
from fruits_pipeline.results import layout, plots, storage
from fruits_pipeline.results.report import (
    ClassifierModel,
    Evaluation,
    RegularisationChoice,
    RegularisationTrial,
    RunReport,
    SplitFacts,
    read_report,
)
from fruits_pipeline.results.writer import add_plot, update_finished

log = logging.getLogger(__name__)

SPLIT_COL = "_split"
INDEX_COL = "_label_index"
VALIDATION_COL = "_validation"

#: Regularisation candidates fitted at once (each in its own thread of the driver).
FITS_AT_ONCE = 4

CLASSIFIER_NAME = "Spark ML LogisticRegression (multinomial, L2) on pca_features"

SELECTION_RULE = (
    "highest accuracy on the validation part (one training image in five of each label), "
    "ties to the lowest mean log-loss; then refitted on the whole training split"
)


class TrainInputError(BadInput):
    """OUTPUT cannot be trained on: not a finished run, no features, no training or test
    images."""


@dataclass
class TrainConfig:
    """What to train: every option of ``fruits-pipeline train``."""

    output: str
    train_split: str = "Training"
    test_split: str = "Test"
    max_iter: int = 100
    reg_params: tuple[float, ...] = DEFAULT_REG_PARAMS
    worst: int = 10


@dataclass
class TrainedClassifier:
    """The fitted classifier, how it was chosen, and its confusion matrix on the test split.

    ``labels`` is the order the classifier predicts in (the training split's labels,
    sorted); the matrix is over ``matrix_labels``: those, then labels seen only in the test
    split (which the classifier can never predict)."""

    model: LogisticRegressionModel
    labels: list[str]
    matrix_labels: list[str]
    matrix: np.ndarray  # matrix[i, j]: test images of matrix_labels[i] predicted as [j]
    train_accuracy: float
    train_images: int
    regularisation: RegularisationChoice
    seconds: float
    unseen_labels: list[str] = field(default_factory=list)


def logistic_regression(reg_param: float, max_iter: int) -> LogisticRegression:
    """Return the classifier to fit on ``pca_features``.

    Without Spark's own standardization: the PCA components are already on the scaler's
    scale, and standardizing each again would weigh the many small, noisy components as
    much as the first ones (docs/performance.md has what it costs)."""
    return LogisticRegression(
        featuresCol=VECTOR_COL,
        labelCol=INDEX_COL,
        predictionCol=PREDICTION_COL,
        probabilityCol=PROBABILITY_COL,
        family="multinomial",
        standardization=False,
        maxIter=max_iter,
        regParam=reg_param,
    )


def score(model: LogisticRegressionModel, rows: DataFrame) -> tuple[float, float]:
    """Return ``model``'s accuracy and mean log-loss on ``rows``, computed on the executors."""
    truth = F.col(INDEX_COL).cast("int")
    chance = F.element_at(vector_to_array(PROBABILITY_COL), truth + 1)
    scored = model.transform(rows).select(
        (F.col(PREDICTION_COL) == F.col(INDEX_COL)).cast("double").alias("right"),
        (-F.log(F.greatest(chance, F.lit(1e-15)))).alias("loss"),
    )
    row = scored.agg(F.avg("right").alias("accuracy"), F.avg("loss").alias("loss")).first()
    return float(row["accuracy"]), float(row["loss"])


def choose_regularisation(
    train: DataFrame, reg_params: tuple[float, ...], max_iter: int
) -> RegularisationChoice:
    """Fit each of ``reg_params`` on ``train`` without its validation part, score it on
    that part, and return the choice (see ``SELECTION_RULE``).

    Raises TrainInputError when several values are given and the validation part is empty.
    """
    if len(reg_params) == 1:
        return RegularisationChoice(
            validation_images=0, rule="one value given", tried=[], chosen=reg_params[0]
        )
    fit_rows = train.where(~F.col(VALIDATION_COL))
    held_out = train.where(F.col(VALIDATION_COL))
    validation_images = held_out.count()
    if validation_images == 0:
        raise TrainInputError(
            "too few training images to hold out a validation part (one image in five of "
            "each label): pass one --reg-params value"
        )
    # Cached once here: Spark ML's fit caches an uncached input itself, once per fit.
    fit_rows = fit_rows.persist()
    held_out = held_out.persist()
    estimator = logistic_regression(reg_params[0], max_iter)
    fits = estimator.fitMultiple(fit_rows, [{estimator.regParam: r} for r in reg_params])

    def fit_and_score(_: int) -> tuple[int, float, float]:
        index, model = next(fits)  # fitMultiple's iterator is thread-safe
        accuracy, loss = score(model, held_out)
        log.info(
            "regularisation %g: validation accuracy %.4f, log-loss %.4f",
            reg_params[index],
            accuracy,
            loss,
        )
        return index, accuracy, loss

    # Fitted side by side, as Spark ML's TrainValidationSplit does with its parallelism: a
    # small fit is mostly the driver scheduling one short job per iteration, which leaves
    # the executors idle between them.
    try:
        with ThreadPoolExecutor(min(len(reg_params), FITS_AT_ONCE)) as pool:
            scored = sorted(pool.map(fit_and_score, range(len(reg_params))))
    finally:
        fit_rows.unpersist()
        held_out.unpersist()
    tried = [
        RegularisationTrial(
            reg_param=reg_params[index], accuracy=round(accuracy, 6), log_loss=round(loss, 6)
        )
        for index, accuracy, loss in scored
    ]
    best = min(tried, key=lambda trial: (-trial.accuracy, trial.log_loss, trial.reg_param))
    return RegularisationChoice(
        validation_images=validation_images,
        rule=SELECTION_RULE,
        tried=tried,
        chosen=best.reg_param,
    )


def train_classifier(features: DataFrame, config: TrainConfig) -> TrainedClassifier:
    """Choose, fit and test the classifier on ``features`` (``path``, ``label``,
    ``pca_features``).

    Raises TrainInputError when a split has no images or training has fewer than 2 labels.
    A label seen only in the test split is reported in ``unseen_labels``; its test images
    count as wrong.
    """
    started = time.perf_counter()
    rows = (
        with_vector(features)
        .select(
            "path",
            "label",
            VECTOR_COL,
            split_column("path", config.train_split, config.test_split).alias(SPLIT_COL),
        )
        .where(F.col(SPLIT_COL).isNotNull())
    )
    per_split = {
        (r[SPLIT_COL], r["label"]): r["count"]
        for r in rows.groupBy(SPLIT_COL, "label").count().collect()
    }
    train_labels = sorted({label for split, label in per_split if split == "train"})
    test_labels = sorted({label for split, label in per_split if split == "test"})
    for name, found in ((config.train_split, train_labels), (config.test_split, test_labels)):
        if not found:
            raise TrainInputError(
                f"no images under a {name!r} folder in {config.output!r}: pass --train-split "
                "and --test-split with the folder names of your split"
            )
    if len(train_labels) < 2:
        raise TrainInputError(
            f"only one label ({train_labels[0]!r}) under {config.train_split!r}: a classifier "
            "needs at least 2"
        )
    unseen = sorted(set(test_labels) - set(train_labels))
    if unseen:
        log.warning("labels only in the test split, never predicted: %s", ", ".join(unseen))
    matrix_labels = train_labels + unseen
    index = {label: position for position, label in enumerate(matrix_labels)}
    mapping = F.create_map(*[F.lit(x) for pair in index.items() for x in pair])
    indexed = rows.withColumn(INDEX_COL, mapping[F.col("label")].cast("double")).persist()
    # Each of the fits' iterations is one Spark job over every partition of ``train``: as
    # many partitions as cores, not the validation window's shuffle partitions, which left
    # small fits mostly scheduling tasks.
    train = (
        indexed.where(F.col(SPLIT_COL) == "train")
        .withColumn(VALIDATION_COL, validation_column("path", "label"))
        .coalesce(features.sparkSession.sparkContext.defaultParallelism)
        .persist()
    )
    try:
        choice = choose_regularisation(train, tuple(config.reg_params), config.max_iter)
        model = logistic_regression(choice.chosen, config.max_iter).fit(train)
        log.info(
            "classifier trained on %d labels with regularisation %g, %d iterations",
            len(train_labels),
            choice.chosen,
            model.summary.totalIterations,
        )
        pairs = (
            model.transform(indexed).groupBy(SPLIT_COL, INDEX_COL, PREDICTION_COL).count().collect()
        )
    finally:
        train.unpersist()
        indexed.unpersist()
    matrix = np.zeros((len(matrix_labels), len(matrix_labels)), dtype=np.int64)
    train_total = train_right = 0
    for row in pairs:
        truth, guess = int(row[INDEX_COL]), int(row[PREDICTION_COL])
        if row[SPLIT_COL] == "test":
            matrix[truth, guess] += row["count"]
        else:
            train_total += row["count"]
            train_right += row["count"] if truth == guess else 0
    return TrainedClassifier(
        model=model,
        labels=train_labels,
        matrix_labels=matrix_labels,
        matrix=matrix,
        train_accuracy=train_right / train_total,
        train_images=train_total,
        regularisation=choice,
        seconds=round(time.perf_counter() - started, 3),
        unseen_labels=unseen,
    )


def check_trainable(output: str) -> RunReport:
    """Return the report of the finished run at ``output`` if a classifier can be trained
    on it (before Spark starts); raise TrainInputError otherwise."""
    report_uri = storage.join(output, layout.REPORT_JSON)
    if not storage.exists(report_uri):
        raise TrainInputError(f"{output!r} is not a finished run: it has no report.json")
    try:
        report = read_report(report_uri)
    except ValueError as error:
        raise TrainInputError(f"{output!r}: its report.json is not a run's: {error}") from None
    if report.is_transform:
        raise TrainInputError(
            f"{output!r} is a transform's output: train on the run whose model it used "
            f"({report.transform.model})"
        )
    if not storage.exists(storage.join(output, layout.FEATURES)) or not report.counts.featurized:
        raise TrainInputError(f"{output!r} has no features: there is nothing to train on")
    if not storage.exists(storage.join(output, layout.PCA_MODEL)):
        raise TrainInputError(f"{output!r} has no {layout.PCA_MODEL}/: it is not a whole run")
    return report


def train_run(spark: SparkSession, config: TrainConfig) -> Evaluation:
    """Train the classifier on the finished run at ``config.output``, save it as
    ``classifier/``, and return the report's ``evaluation`` section.

    Writes ``classifier/``, ``plots/confusion_matrix.png``, then ``report.html`` and
    ``report.json`` with the new section (``report.json`` last).  Raises TrainInputError
    when the run cannot be trained on.
    """
    report = check_trainable(config.output)
    features = spark.read.parquet(storage.spark_uri(storage.join(config.output, layout.FEATURES)))
    trained = train_classifier(features, config)
    location = save_classifier(classifier_pipeline(trained.model, trained.labels), config.output)
    measured = metrics(trained.matrix, trained.matrix_labels, config.worst)
    supports = trained.matrix.sum(axis=1)
    tested = [label for label, n in zip(trained.matrix_labels, supports, strict=True) if n]
    evaluation = Evaluation(
        accuracy=round(measured.accuracy, 6),
        macro_f1=round(measured.macro_f1, 6),
        meaningful=report.weights.meaningful,
        note=meaning_note(report.weights),
        weights_source=report.weights.source,
        train=SplitFacts(
            split=config.train_split,
            images=trained.train_images,
            labels=len(trained.labels),
            accuracy=round(trained.train_accuracy, 6),
        ),
        test=SplitFacts(
            split=config.test_split,
            images=measured.test_images,
            labels=len(tested),
            unseen_labels=trained.unseen_labels,
        ),
        worst_classes=measured.worst_classes,
        model=ClassifierModel(
            name=CLASSIFIER_NAME,
            max_iter=config.max_iter,
            reg_param=trained.regularisation.chosen,
            labels=trained.labels,
            location=location,
            regularisation=trained.regularisation,
        ),
        seconds=trained.seconds,
        evaluated_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        features_run_id=report.run_id,
    )
    title = f"Classifier: accuracy {measured.accuracy:.1%}, macro-F1 {measured.macro_f1:.3f}"
    if not evaluation.meaningful:
        title += " (random weights: NOT meaningful)"
    png = plots.confusion_matrix(trained.matrix, trained.matrix_labels, title)
    add_plot(config.output, report, layout.CONFUSION_MATRIX_PNG, png)
    report.outputs.classifier = location
    report.evaluation = evaluation
    update_finished(config.output, report)
    log.info("classifier: accuracy %.4f, macro-F1 %.4f", evaluation.accuracy, evaluation.macro_f1)
    return evaluation

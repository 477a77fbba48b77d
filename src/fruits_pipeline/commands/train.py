"""``fruits-pipeline train OUTPUT``: the fruit classifier on a finished run's features, its
regularisation chosen on a validation part, tested, saved with the run and added to its
report (the work itself is ``classifier/training.py``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fruits_pipeline.commands.common import (
    add_spark_options,
    finish,
    positive,
    start_spark,
)
from fruits_pipeline.defaults import DEFAULT_REG_PARAMS

if TYPE_CHECKING:
    from fruits_pipeline.results.report import Evaluation

NAME = "train"


def reg_params(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated regularisations, each at least 0."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {part.strip()!r}") from None
        if not value >= 0.0:
            raise argparse.ArgumentTypeError(f"must be at least 0, got {part.strip()}")
        values.append(value)
    return tuple(dict.fromkeys(values))


def add_parser(commands, default_master: str | None) -> None:
    """Add ``train`` and its options to the ``commands`` subparsers."""
    train = commands.add_parser(
        NAME,
        help="train the fruit classifier on a run's pca_features, test it, save it with the run",
        description="Fit Spark ML's multinomial LogisticRegression on the pca_features of the "
        "images under a Training folder (its regularisation chosen on a validation part of "
        "them), test it on those under a Test folder, save it as OUTPUT/classifier/, and add "
        "accuracy, macro-F1, the worst classes and a confusion matrix to OUTPUT's report.",
    )
    train.add_argument("output", metavar="OUTPUT", help="a finished run (local or s3://)")
    train.add_argument(
        "--train-split",
        default="Training",
        metavar="NAME",
        help="folder name of the training images (default Training)",
    )
    train.add_argument(
        "--test-split",
        default="Test",
        metavar="NAME",
        help="folder name of the test images (default Test)",
    )
    train.add_argument(
        "--max-iter",
        type=positive,
        default=100,
        metavar="N",
        help="LogisticRegression iterations at most (default 100)",
    )
    train.add_argument(
        "--reg-params",
        type=reg_params,
        default=DEFAULT_REG_PARAMS,
        metavar="X,Y,…",
        help="L2 regularisations to try on the validation part; the best is refitted on the "
        "whole training split (default "
        + ",".join(f"{value:g}" for value in DEFAULT_REG_PARAMS)
        + "; one value: no validation)",
    )
    add_spark_options(train, default_master)


def execute(args: argparse.Namespace) -> int:
    """Run ``fruits-pipeline train``; return the exit code (0, 1 failed, 2 bad input)."""

    def work() -> str:
        from fruits_pipeline.classifier.training import TrainConfig, check_trainable, train_run

        config = TrainConfig(
            output=args.output.rstrip("/"),
            train_split=args.train_split,
            test_split=args.test_split,
            max_iter=args.max_iter,
            reg_params=args.reg_params,
        )
        check_trainable(config.output)  # before Spark starts
        spark, _ = start_spark(args.master)
        return summary(train_run(spark, config))

    return finish("training", work)


def summary(evaluation: Evaluation) -> str:
    """Return the short human summary printed after ``train``."""
    train, test, model = evaluation.train, evaluation.test, evaluation.model
    choice = model.regularisation
    tried = ", ".join(f"{t.reg_param:g} ({t.accuracy:.1%})" for t in choice.tried) or "-"
    lines = [
        "",
        "fruits-pipeline: classifier trained (logistic regression on pca_features)",
        f"  trained on   {train.images} images under '{train.split}', {train.labels} labels "
        f"(training accuracy {train.accuracy:.1%})",
        f"  regularised  {model.reg_param:g}, chosen on {choice.validation_images} validation "
        f"images from: {tried}",
        f"  tested on    {test.images} images under '{test.split}', {test.labels} labels",
        f"  accuracy     {evaluation.accuracy:.1%}",
        f"  macro-F1     {evaluation.macro_f1:.3f}",
        "  worst        "
        + ", ".join(f"{w.label} (F1 {w.f1:.2f})" for w in evaluation.worst_classes[:5]),
        f"  saved as     {model.location}",
    ]
    if test.unseen_labels:
        lines.append(
            f"  !! labels only in '{test.split}', never predicted: " + ", ".join(test.unseen_labels)
        )
    if not evaluation.meaningful:
        banner = "!" * 78
        lines += [banner, "!! " + evaluation.note, banner]
    return "\n".join(lines)

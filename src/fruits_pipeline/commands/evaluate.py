"""``fruits-pipeline evaluate OUTPUT``: a linear probe's test accuracy on a finished run's
features, added to its report (the probe itself is ``classifier/probe.py``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fruits_pipeline.commands.common import (
    add_spark_options,
    finish,
    non_negative,
    positive,
    start_spark,
)

if TYPE_CHECKING:
    from fruits_pipeline.results.report import Evaluation

NAME = "evaluate"


def add_parser(commands, default_master: str | None) -> None:
    """Add ``evaluate`` and its options to the ``commands`` subparsers."""
    evaluate = commands.add_parser(
        NAME,
        help="train a linear probe on a run's pca_features and report its test accuracy",
        description="Train Spark ML's multinomial LogisticRegression on the pca_features of "
        "the images under a Training folder, test it on those under a Test folder, and add "
        "accuracy, macro-F1, the worst classes and a confusion matrix to OUTPUT's report.",
    )
    evaluate.add_argument("output", metavar="OUTPUT", help="a finished run (local or s3://)")
    evaluate.add_argument(
        "--train-split",
        default="Training",
        metavar="NAME",
        help="folder name of the training images (default Training)",
    )
    evaluate.add_argument(
        "--test-split",
        default="Test",
        metavar="NAME",
        help="folder name of the test images (default Test)",
    )
    evaluate.add_argument(
        "--max-iter",
        type=positive,
        default=100,
        metavar="N",
        help="LogisticRegression iterations at most (default 100)",
    )
    evaluate.add_argument(
        "--reg-param",
        type=non_negative,
        default=0.0,
        metavar="X",
        help="L2 regularisation (default 0.0)",
    )
    add_spark_options(evaluate, default_master)


def execute(args: argparse.Namespace) -> int:
    """Run ``fruits-pipeline evaluate``; return the exit code (0, 1 failed, 2 bad input)."""

    def work() -> str:
        from fruits_pipeline.classifier.probe import (
            EvaluationConfig,
            EvaluationInputError,
            evaluate_output,
        )
        from fruits_pipeline.results import layout, storage

        config = EvaluationConfig(
            output=args.output.rstrip("/"),
            train_split=args.train_split,
            test_split=args.test_split,
            max_iter=args.max_iter,
            reg_param=args.reg_param,
        )
        if not storage.exists(storage.join(config.output, layout.REPORT_JSON)):
            raise EvaluationInputError(  # before Spark starts
                f"{config.output!r} is not a finished run: it has no report.json"
            )
        spark, _ = start_spark(args.master)
        return summary(evaluate_output(spark, config))

    return finish("evaluation", work)


def summary(evaluation: Evaluation) -> str:
    """Return the short human summary printed after ``evaluate``."""
    train, test = evaluation.train, evaluation.test
    lines = [
        "",
        "fruits-pipeline: evaluation (linear probe on pca_features)",
        f"  trained on   {train.images} images under '{train.split}', {train.labels} labels "
        f"(training accuracy {train.accuracy:.1%})",
        f"  tested on    {test.images} images under '{test.split}', {test.labels} labels",
        f"  accuracy     {evaluation.accuracy:.1%}",
        f"  macro-F1     {evaluation.macro_f1:.3f}",
        "  worst        "
        + ", ".join(f"{w.label} (F1 {w.f1:.2f})" for w in evaluation.worst_classes[:5]),
    ]
    if not evaluation.meaningful:
        banner = "!" * 78
        lines += [banner, "!! " + evaluation.note, banner]
    return "\n".join(lines)

"""``fruits-pipeline predict --model DIR_OR_FILE --input IMAGES --output FILE.csv``: an
exported model on a folder of images, without Spark (the work itself is
``classifier/predict.py``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fruits_pipeline.commands.common import finish, positive
from fruits_pipeline.defaults import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from fruits_pipeline.classifier.predict import PredictSummary

NAME = "predict"


def add_parser(commands, default_master: str | None) -> None:
    """Add ``predict`` and its options to the ``commands`` subparsers (no Spark options:
    predict runs without Spark)."""
    predict = commands.add_parser(
        NAME,
        help="run an exported model on a folder of images, without Spark, into a CSV",
        description="Decode and resize each image as the job does, run the exported model "
        "(a .onnx with ONNX Runtime alone, a .tflite with TensorFlow's TFLite interpreter; "
        "a folder written by export: its ONNX model) and write path, the top labels and "
        "their probabilities, or the image's error, one row per image.",
    )
    predict.add_argument(
        "--model",
        required=True,
        metavar="DIR_OR_FILE",
        help="a folder written by `export`, or a .onnx or .tflite file in one",
    )
    predict.add_argument(
        "--input", required=True, metavar="IMAGES", help="folder of images (or one image)"
    )
    predict.add_argument("--output", required=True, metavar="FILE.csv", help="the CSV to write")
    predict.add_argument(
        "--top", type=positive, default=5, metavar="K", help="labels per image (default 5)"
    )
    predict.add_argument(
        "--batch-size",
        type=positive,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"images per model call (default {DEFAULT_BATCH_SIZE}, as the job's)",
    )
    predict.add_argument("--overwrite", action="store_true", help="replace the CSV if it exists")
    predict.add_argument("--quiet", action="store_true", help="log warnings only")


def execute(args: argparse.Namespace) -> int:
    """Run ``fruits-pipeline predict``; return the exit code (0, 1 failed, 2 bad input).
    An image that cannot be decoded is a row with its error, not a failure."""

    def work() -> str:
        from fruits_pipeline.classifier.predict import PredictConfig, predict_folder

        config = PredictConfig(
            model=args.model,
            input=args.input,
            output=args.output,
            top=args.top,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
        )
        return summary(predict_folder(config))

    return finish("prediction", work)


def summary(done: PredictSummary) -> str:
    """Return the short human summary printed after ``predict``."""
    lines = [
        "",
        f"fruits-pipeline: predicted {done.predicted} of {done.images} images in "
        f"{done.seconds:.1f} s",
        f"  model        {done.model}",
        f"  output       {done.output}",
    ]
    if done.failed:
        lines.append(f"  !! {done.failed} images could not be read: their rows give the error")
    return "\n".join(lines)

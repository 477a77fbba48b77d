"""``fruits-pipeline export OUTPUT --to DIR``: a trained run as on-device models (ONNX,
float32 TFLite, int8 TFLite) and their model card (the work itself is
``classifier/export.py``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fruits_pipeline.commands.common import add_spark_options, finish, positive, start_spark

if TYPE_CHECKING:
    from fruits_pipeline.classifier.model_card import ModelCard

NAME = "export"


def add_parser(commands, default_master: str | None) -> None:
    """Add ``export`` and its options to the ``commands`` subparsers."""
    export = commands.add_parser(
        NAME,
        help="write a trained run as on-device models (ONNX, TFLite float32 and int8) "
        "with a model card",
        description="Write the whole path from uint8 pixels to label probabilities "
        "(MobileNetV2, the run's scaler, PCA and classifier folded into one dense layer, "
        "softmax) as one ONNX model, one float32 TFLite model and one int8 TFLite model "
        "under DIR, with model_card.json: labels, input, resize rule, weights sha256, test "
        "accuracy, sizes, one-core latency and golden vectors.",
    )
    export.add_argument("output", metavar="OUTPUT", help="a run trained with `train`")
    export.add_argument(
        "--to", required=True, metavar="DIR", help="folder to create for the models"
    )
    export.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    export.add_argument(
        "--weights",
        default=None,
        metavar="SOURCE",
        help="the run's weights (default: the source its report.json records); their "
        "arrays' sha256 must match it",
    )
    export.add_argument(
        "--calibration-images",
        type=positive,
        default=200,
        metavar="N",
        help="training images the int8 model is calibrated on (default 200)",
    )
    export.add_argument(
        "--golden-images",
        type=positive,
        default=5,
        metavar="N",
        help="test images in the card's golden vectors (default 5)",
    )
    export.add_argument(
        "--latency-runs",
        type=positive,
        default=20,
        metavar="N",
        help="timed runs per model for its one-core latency (default 20)",
    )
    add_spark_options(export, default_master)


def execute(args: argparse.Namespace) -> int:
    """Run ``fruits-pipeline export``; return the exit code (0, 1 failed, 2 bad input).

    Everything that can be checked before Spark starts is: the run and its classifier, DIR,
    the weights (loaded and compared by sha256) and whether export can write their network.
    """

    def work() -> str:
        from fruits_pipeline.chain.transform import check_same_weights
        from fruits_pipeline.chain.weights import (
            check_weights_spec,
            load_weights,
            parse_weights_spec,
        )
        from fruits_pipeline.classifier.export import (
            ExportConfig,
            check_destination,
            check_exportable,
            export_run,
            feature_network,
        )

        config = ExportConfig(
            output=args.output.rstrip("/"),
            to=args.to,
            overwrite=args.overwrite,
            calibration_images=args.calibration_images,
            golden_images=args.golden_images,
            latency_runs=args.latency_runs,
        )
        report = check_exportable(config.output)
        spec = parse_weights_spec(args.weights or report.weights.source)
        location = check_destination(config, spec.location)
        check_weights_spec(spec)
        weights = load_weights(spec)
        check_same_weights(report, weights)
        feature_network(report, weights, config.output)
        spark, _ = start_spark(args.master)
        return summary(export_run(spark, config, report, weights, location), location.final)

    return finish("export", work)


def summary(card: ModelCard, folder: str) -> str:
    """Return the short human summary printed after ``export``."""
    from fruits_pipeline.classifier.export import REFUSED

    classifier = card.classifier
    lines = [
        "",
        f"fruits-pipeline: exported {len(card.models)} on-device models of {card.run}",
        f"  labels       {len(card.labels)} (test accuracy {classifier.test_accuracy:.1%} on "
        f"{classifier.test_images} '{classifier.test_split}' images)",
        f"  input        uint8 RGB [N, 224, 224, 3], resized {card.resize.filter}",
        f"  network      {card.network.architecture} {card.network.precision}, weights "
        f"{card.network.weights_arrays_sha256[:12]}… (engine {card.network.engine})",
    ]
    for model in card.models:
        lines.append(
            f"  {model.file:<36} {model.bytes / 1e6:6.1f} MB  "
            f"{model.latency_ms_per_image:7.1f} ms per image (one core)"
        )
    if card.network.precision in REFUSED:
        lines.append(f"  {REFUSED[card.network.precision]}")
    lines.append(f"  card         {folder}/model_card.json ({len(card.golden)} golden vectors)")
    if not classifier.meaningful:
        lines.append("  !! RANDOM WEIGHTS: this classifier is NOT meaningful")
    return "\n".join(lines)

"""``fruits-pipeline transform --model OUTPUT --input NEW --output OUT2``: project new images
with a finished run's weights and saved PCA (the work itself is ``chain/transform.py``)."""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING

from fruits_pipeline.commands.common import add_spark_options, finish, start_spark
from fruits_pipeline.commands.run import add_extraction_options

if TYPE_CHECKING:
    from fruits_pipeline.results.report import RunReport

NAME = "transform"


def add_parser(commands, default_master: str | None) -> None:
    """Add ``transform`` and its options to the ``commands`` subparsers."""
    transform = commands.add_parser(
        NAME,
        help="project new images with a finished run's weights and saved PCA (no refit)",
        description="Featurize the images under --input with the weights of the run at "
        "--model (checked by sha256) and project them with its pca_model/, without refitting; "
        "write the same layout as run under --output.",
    )
    transform.add_argument(
        "--model",
        required=True,
        metavar="OUTPUT",
        help="a finished run whose pca_model/ projects the new images",
    )
    transform.add_argument(
        "--input",
        required=True,
        metavar="PATH_OR_URI",
        help="folder of new images, searched recursively",
    )
    transform.add_argument(
        "--output", required=True, metavar="PATH_OR_URI", help="folder to create for the results"
    )
    transform.add_argument(
        "--weights",
        default=None,
        metavar="SOURCE",
        help="weights to featurize with (default: the source recorded in "
        "the model's report.json); their arrays' sha256 must match it",
    )
    add_extraction_options(transform, engine_default=None)
    transform.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    add_spark_options(transform, default_master)


def execute(args: argparse.Namespace) -> int:
    """Run ``fruits-pipeline transform``; return the exit code (0, 1 failed, 2 bad input).

    Everything that can be checked before Spark starts is: the model's report, the weights
    (loaded on the driver and compared by sha256), OUT2.
    """

    def work() -> str:
        from fruits_pipeline.chain.listing import InputError
        from fruits_pipeline.chain.transform import (
            TransformConfig,
            check_same_weights,
            read_model_report,
            transform_job,
        )
        from fruits_pipeline.chain.weights import (
            check_weights_spec,
            load_weights,
            parse_weights_spec,
        )
        from fruits_pipeline.results import storage
        from fruits_pipeline.results.location import OutputLocation

        model = args.model.rstrip("/")
        model_report = read_model_report(model)
        spec = parse_weights_spec(args.weights or model_report.weights.source)
        check_weights_spec(spec)
        config = TransformConfig(
            model=model,
            input=args.input,
            output=args.output,
            weights=spec,
            engine=args.engine or model_report.settings.engine,
            batch_size=args.batch_size,
            limit=args.limit,
            overwrite=args.overwrite,
        )
        OutputLocation.prepare(config.output, config.overwrite, config.reads())
        if not storage.is_remote(config.input) and not os.path.isdir(
            storage.local_path(config.input)
        ):
            raise InputError(f"input {config.input!r} does not exist or is not a folder")
        started = time.perf_counter()
        weights = load_weights(spec)
        seconds = {"model": round(time.perf_counter() - started, 3)}
        check_same_weights(model_report, weights)
        spark, seconds["spark_start"] = start_spark(args.master)
        return summary(transform_job(spark, config, model_report, weights, seconds))

    return finish("transform", work)


def summary(report: RunReport) -> str:
    """Return the short human summary printed after ``transform``."""
    counts, weights = report.counts, report.weights
    lines = [
        "",
        f"fruits-pipeline: transform finished in {report.seconds['total']:.1f} s",
        f"  images read      {counts.files_seen}",
        f"  featurized       {counts.featurized}",
        f"  rejected         {counts.rejected}",
        f"  projected with   {report.transform.pca_model} (k = {report.pca.k}, no refit)",
        f"  weights          {weights.source} (arrays sha256 "
        f"{weights.arrays_sha256[:12]}…, same as the model's run)",
        f"  output           {report.output}",
    ]
    if not weights.meaningful:
        lines.append("  !! RANDOM WEIGHTS: these features are NOT meaningful")
    return "\n".join(lines)

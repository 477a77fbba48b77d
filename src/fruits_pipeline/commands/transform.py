"""``fruits-pipeline transform --model OUTPUT --input NEW --output OUT2``: project new images
with a finished run's saved PCA, without refitting anything.

The new images are featurized with the same MobileNetV2 weights as the first run: by
default the source its ``report.json`` records, or ``--weights``; either way the sha256 of
the weight arrays must equal the one in that report, or the command refuses to run.  The
features are then projected with ``OUTPUT/pca_model/`` as it is.  OUT2 gets the layout of a
run (``features/``, ``rejected/``, ``features_pca.csv``, ``report.json``, plus the plots and
``report.html``), built in a staging place and published like a run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fruits_pipeline.chain.listing import InputError, list_images
from fruits_pipeline.chain.pca import project
from fruits_pipeline.chain.weights import (
    LoadedWeights,
    WeightsError,
    WeightsSpec,
    load_weights,
    network_payload,
)
from fruits_pipeline.defaults import DEFAULT_BATCH_SIZE, DEFAULT_ENGINE
from fruits_pipeline.results import storage as outputs
from fruits_pipeline.results.storage import OutputLocation

log = logging.getLogger(__name__)


class ModelError(ValueError):
    """``--model`` is not a finished run: no ``report.json`` or no ``pca_model/``."""


class WeightsMismatchError(WeightsError):
    """The weights given are not the ones the model's run used (sha256 of the arrays)."""


@dataclass
class TransformConfig:
    """What to transform: every option of ``fruits-pipeline transform``."""

    model: str
    input: str
    output: str
    weights: WeightsSpec
    batch_size: int = DEFAULT_BATCH_SIZE
    limit: int | None = None
    overwrite: bool = False
    engine: str = DEFAULT_ENGINE


def read_model_report(model: str) -> dict:
    """Return the ``report.json`` of the finished run at ``model`` (local or ``s3://``).

    Raises ModelError when it has no report, no ``pca_model/`` or no recorded weights.
    """
    from fruits_pipeline.commands.run import PCA_MODEL

    report_uri = outputs.join(model, outputs.REPORT_NAME)
    if not outputs.exists(report_uri):
        raise ModelError(f"--model {model!r} is not a finished run: it has no report.json")
    if not outputs.exists(outputs.join(model, PCA_MODEL)):
        raise ModelError(f"--model {model!r} has no {PCA_MODEL}/ to project with")
    report = outputs.read_json(report_uri)
    if not report.get("weights", {}).get("arrays_sha256") or "pca" not in report:
        raise ModelError(f"--model {model!r}: its report.json records no weights sha256 or PCA")
    return report


def weights_text(model_report: dict, given: str | None) -> str:
    """Return the weights source to use: ``given`` (``--weights``), else the source the
    model's run recorded (``imagenet``, a file path or URI, ``random:SEED``)."""
    return given if given else model_report["weights"]["source"]


def check_same_weights(model_report: dict, weights: LoadedWeights) -> None:
    """Raise WeightsMismatchError unless ``weights`` have the arrays the model's run used.

    The arrays' sha256 decides: the same network saved in another file format (legacy
    ``.h5`` or ``.weights.h5``) has another file sha256 but the same arrays, and is accepted.
    """
    expected = model_report["weights"]
    if weights.arrays_sha256 != expected["arrays_sha256"]:
        raise WeightsMismatchError(
            f"weights mismatch: {weights.spec.describe()!r} has weight arrays sha256 "
            f"{weights.arrays_sha256[:16]}…, but the PCA model was fitted on features from "
            f"{expected.get('source')!r} (arrays sha256 {expected['arrays_sha256'][:16]}…); "
            "pass --weights with the weights of that run"
        )
    if expected.get("file_sha256") and weights.file_sha256 != expected["file_sha256"]:
        log.info("weights file differs from the model's run but its arrays are the same")


def transform_job(
    spark: SparkSession,
    config: TransformConfig,
    model_report: dict,
    weights: LoadedWeights,
    seconds_before: dict[str, float] | None = None,
) -> dict:
    """Featurize the images under ``config.input`` with ``weights``, project them with the
    model's ``pca_model/`` and write OUT2; return the report (also ``report.json``).

    ``weights`` must already have passed ``check_same_weights``.  ``seconds_before`` holds
    stages timed before Spark (seconds).  Raises InputError when the input has no images;
    in every failure case nothing is left at OUT2.
    """
    from fruits_pipeline.commands.run import (
        CSV_NAME,
        EXTRACTED,
        FEATURES,
        PCA_MODEL,
        REJECTED,
        StageClock,
        count_rows,
        extraction_facts,
        publish_run,
        versions,
        write_extracted,
        write_features_csv,
    )

    started_at = datetime.now(UTC)
    clock = StageClock()
    clock.seconds.update(seconds_before or {})
    location = OutputLocation.prepare(config.output, config.overwrite)
    with clock.stage("list"):
        listing = list_images(spark, config.input, config.limit)
        if listing.files_seen == 0:
            raise InputError(f"no images (.jpg, .jpeg, .png) found under {config.input!r}")
    model_uri = outputs.join(config.model, PCA_MODEL)
    pca_model = PipelineModel.load(outputs.spark_uri(model_uri))
    broadcast = spark.sparkContext.broadcast(network_payload(weights, config.engine))
    location.begin()
    try:
        with clock.stage("extract"):
            counters = write_extracted(
                spark,
                listing,
                listing.images,
                broadcast,
                weights.arrays_sha256,
                config.batch_size,
                location.spark_path(EXTRACTED),
                engine=config.engine,
            )
        stored = spark.read.parquet(location.spark_path(EXTRACTED))
        counts = count_rows(stored)
        log.info("featurized %d images, rejected %d", counts["featurized"], counts["rejected"])
        k = int(model_report["pca"]["k"])
        with clock.stage("project"):
            valid = stored.where(F.col("error").isNull()).drop("error")
            outputs.write_parquet(project(pca_model, valid), location.spark_path(FEATURES))
            outputs.write_parquet(
                stored.where(F.col("error").isNotNull()).drop("features"),
                location.spark_path(REJECTED),
            )
            written = spark.read.parquet(location.spark_path(FEATURES))
            csv_rows = write_features_csv(written, location.path(CSV_NAME), k)
            outputs.remove(location.path(EXTRACTED))
        model_weights = model_report["weights"]
        report = {
            "status": "succeeded",
            "command": "transform",
            "input": config.input,
            "output": location.final,
            "transform": {
                "model": config.model,
                "model_run_id": model_report.get("run_id"),
                "pca_model": model_uri,
                "refit": False,
            },
            "counts": {
                "files_seen": listing.files_seen,
                "featurized": counts["featurized"],
                "rejected": counts["rejected"],
                "csv_rows": csv_rows,
                "rejected_by_reason": counts["by_reason"],
                "per_label": counts["per_label"],
            },
            "pca": {**model_report["pca"], "from_model": config.model},
            "weights": {
                "source": weights.spec.describe(),
                "kind": weights.spec.kind,
                "meaningful": weights.meaningful,
                "file_sha256": weights.file_sha256,
                "arrays_sha256": weights.arrays_sha256,
                "model_source": model_weights.get("source"),
                "model_file_sha256": model_weights.get("file_sha256"),
                "matches_model": True,
            },
            **extraction_facts(spark, counters, counts["featurized"]),
            "settings": {
                "batch_size": config.batch_size,
                "engine": config.engine,
                "limit": config.limit,
                "master": spark.sparkContext.master,
                "default_parallelism": spark.sparkContext.defaultParallelism,
            },
            "versions": versions(spark),
            "outputs": {
                "features": location.final_path(FEATURES),
                "rejected": location.final_path(REJECTED),
                "csv": location.final_path(CSV_NAME),
                "report": location.final_path(outputs.REPORT_NAME),
            },
        }
        publish_run(spark, location, report, clock, started_at, visuals=counts["featurized"] > 0)
    except BaseException:
        location.discard()
        raise
    finally:
        broadcast.unpersist()
    return report


def summary(report: dict) -> str:
    """Return the short human summary printed after ``transform``."""
    counts = report["counts"]
    lines = [
        "",
        f"fruits-pipeline: transform finished in {report['seconds']['total']:.1f} s",
        f"  images read      {counts['files_seen']}",
        f"  featurized       {counts['featurized']}",
        f"  rejected         {counts['rejected']}",
        f"  projected with   {report['transform']['pca_model']} (k = {report['pca']['k']}, "
        "no refit)",
        f"  weights          {report['weights']['source']} (arrays sha256 "
        f"{report['weights']['arrays_sha256'][:12]}…, same as the model's run)",
        f"  output           {report['output']}",
    ]
    if not report["weights"]["meaningful"]:
        lines.append("  !! RANDOM WEIGHTS: these features are NOT meaningful")
    return "\n".join(lines)


def transform_command(args: argparse.Namespace) -> int:
    """Run ``fruits-pipeline transform``; return the exit code (0, 1 failed, 2 bad input).

    Everything that can be checked before Spark starts is: the model's report, the
    weights (loaded on the driver and compared by sha256), OUT2.
    """
    from fruits_pipeline.chain.weights import check_weights_spec, parse_weights_spec
    from fruits_pipeline.cli import EXIT_FAILED, EXIT_OK, PROG, _usage_error

    bad_input = (InputError, ModelError, WeightsError, outputs.OutputExistsError)
    seconds: dict[str, float] = {}
    try:
        model_report = read_model_report(args.model.rstrip("/"))
        spec = parse_weights_spec(weights_text(model_report, args.weights))
        check_weights_spec(spec)
        config = TransformConfig(
            model=args.model.rstrip("/"),
            input=args.input,
            output=args.output,
            weights=spec,
            batch_size=args.batch_size,
            limit=args.limit,
            overwrite=args.overwrite,
            engine=args.engine or model_report.get("settings", {}).get("engine", DEFAULT_ENGINE),
        )
        if outputs.fsspec_uri(config.output).rstrip("/") == outputs.fsspec_uri(config.model):
            raise ModelError("--output must not be the --model run: it would replace the model")
        OutputLocation.prepare(config.output, config.overwrite)
        if not outputs.is_remote(config.input) and not os.path.isdir(
            outputs.local_path(config.input)
        ):
            raise InputError(f"input {config.input!r} does not exist or is not a folder")
        started = time.perf_counter()
        weights = load_weights(spec)
        seconds["model"] = round(time.perf_counter() - started, 3)
        check_same_weights(model_report, weights)
    except bad_input as error:
        return _usage_error(str(error))

    from fruits_pipeline.session import build_spark

    started = time.perf_counter()
    spark = build_spark(args.master)
    seconds["spark_start"] = round(time.perf_counter() - started, 3)
    try:
        report = transform_job(spark, config, model_report, weights, seconds)
    except bad_input as error:
        return _usage_error(str(error))
    except Exception as error:
        log.exception("the transform failed")
        print(f"{PROG}: transform failed: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILED
    print(summary(report))
    return EXIT_OK

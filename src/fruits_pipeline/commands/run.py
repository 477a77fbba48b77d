"""``fruits-pipeline run --input … --output …``: featurize a folder of images and reduce
the features with PCA (the job itself is ``chain/job.py``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fruits_pipeline import engines
from fruits_pipeline.commands.common import (
    RANDOM_WEIGHTS_BANNER,
    add_spark_options,
    finish,
    positive,
    start_spark,
    threshold,
)
from fruits_pipeline.defaults import DEFAULT_BATCH_SIZE, DEFAULT_VARIANCE_THRESHOLD

if TYPE_CHECKING:
    from fruits_pipeline.results.report import RunReport

NAME = "run"


def add_parser(commands, default_master: str | None) -> None:
    """Add ``run`` and its options to the ``commands`` subparsers."""
    run = commands.add_parser(
        NAME,
        help="featurize a folder of images and reduce the features with PCA",
        description="Read images (one folder per label), extract MobileNetV2 features, reduce "
        "them with a two-pass PCA, and write parquet, a CSV, the PCA model and report.json.",
    )
    run.add_argument(
        "--input",
        required=True,
        metavar="PATH_OR_URI",
        help="folder of images, searched recursively (local path, file: or s3://)",
    )
    run.add_argument(
        "--output",
        required=True,
        metavar="PATH_OR_URI",
        help="folder to create for the results (local path, file: or s3://)",
    )
    run.add_argument(
        "--weights",
        default="imagenet",
        metavar="SOURCE",
        help="imagenet (Keras download, the default), a MobileNetV2 weights file "
        "with top (.h5 legacy or .weights.h5; local or s3://), or random[:SEED] "
        "for offline runs whose features are not meaningful",
    )
    run.add_argument(
        "--variance-threshold",
        type=threshold,
        default=DEFAULT_VARIANCE_THRESHOLD,
        metavar="RATIO",
        help="keep the fewest components whose cumulative explained variance "
        "reaches this ratio, in (0, 1]; 1.0 keeps every component (default "
        f"{DEFAULT_VARIANCE_THRESHOLD})",
    )
    add_extraction_options(run, engine_default=engines.DEFAULT_ENGINE)
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT if it exists (without it, an existing OUTPUT is refused)",
    )
    run.add_argument(
        "--incremental",
        action="store_true",
        help="update the finished run at OUTPUT: reuse the features of images whose path, "
        "size and modification time are unchanged, featurize only new or changed ones, drop "
        "removed ones, and refit the PCA (implies --overwrite)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="reuse the rows that an interrupted run on OUTPUT staged, if they were made "
        "with the same weights, engine and code (the provenance key), and featurize only "
        "the rest; harmless when there is nothing to resume",
    )
    add_spark_options(run, default_master)


def add_extraction_options(parser: argparse.ArgumentParser, engine_default: str | None) -> None:
    """Add the options of the extraction that ``run`` and ``transform`` share:
    ``--batch-size``, ``--engine`` and ``--limit``."""
    parser.add_argument(
        "--batch-size",
        type=positive,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"images per CNN batch and per Arrow batch (default {DEFAULT_BATCH_SIZE})",
    )
    described = "; ".join(f"{name}: {engine.summary}" for name, engine in engines.ENGINES.items())
    parser.add_argument(
        "--engine",
        choices=sorted(engines.ENGINES),
        default=engine_default,
        help=f"inference engine ({described}); default "
        + (engine_default or "the one the model's run used"),
    )
    parser.add_argument(
        "--limit",
        type=positive,
        default=None,
        metavar="N",
        help="process only the first N images by path",
    )


def execute(args: argparse.Namespace) -> int:
    """Validate (before Spark starts), run the job, print the summary; return the exit code."""

    def work() -> str:
        from fruits_pipeline.chain.job import JobConfig, run_job
        from fruits_pipeline.chain.weights import check_weights_spec, parse_weights_spec
        from fruits_pipeline.results.location import OutputLocation

        spec = parse_weights_spec(args.weights)
        check_weights_spec(spec)
        config = JobConfig(
            input=args.input,
            output=args.output,
            weights=spec,
            variance_threshold=args.variance_threshold,
            batch_size=args.batch_size,
            limit=args.limit,
            overwrite=args.overwrite,
            incremental=args.incremental,
            resume=args.resume,
            engine=args.engine,
        )
        OutputLocation.prepare(
            config.output, config.overwrite or config.incremental, config.reads()
        )
        spark, seconds = start_spark(args.master)
        return summary(run_job(spark, config, spark_start_seconds=seconds))

    return finish("job", work)


def summary(report: RunReport) -> str:
    """Return the short human summary printed at the end of a run."""
    counts, pca, weights, memory = report.counts, report.pca, report.weights, report.memory_peak_mb
    reasons = ", ".join(f"{n} {r}" for r, n in counts.rejected_by_reason.items() if n)
    stages = ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items() if k != "total")
    lines = [
        "",
        f"fruits-pipeline: run finished in {report.seconds['total']:.1f} s",
        f"  images read      {counts.files_seen} in {len(counts.per_label)} labels",
        f"  featurized       {counts.featurized}",
        f"  rejected         {counts.rejected}" + (f" ({reasons})" if reasons else ""),
        f"  PCA              k = {pca.k} components keep {pca.variance_kept:.1%} of the "
        f"variance (threshold {pca.variance_threshold:.1%})",
        f"  weights          {weights.source}"
        + (f" (sha256 {weights.file_sha256[:12]}…)" if weights.file_sha256 else ""),
        f"  engine           {report.settings.engine}" + _calibration(report),
        f"  model builds     driver {report.model_builds.driver}, "
        f"workers {report.model_builds.workers}",
        f"  seconds          {stages}",
        f"  peak memory      driver JVM {_mb(memory.driver_jvm)}, driver Python "
        f"{_mb(memory.driver_python)}, {_workers_mb(memory.python_workers)}",
        f"  output           {report.output}",
        "    " + " ".join(report.outputs.names()),
    ]
    if report.incremental:
        inc = report.incremental
        lines.insert(
            5,
            f"  incremental      {inc.reused} reused, {inc.new} new, {inc.changed} "
            f"changed, {inc.removed} removed"
            + (f" (nothing reused: {inc.note})" if inc.note else ""),
        )
        if inc.classifier_removed:
            lines.append(
                "  !! the classifier was trained on the previous features: removed; run "
                f"`fruits-pipeline train {report.output}` again"
            )
    if report.resume:
        done = report.resume
        lines.insert(
            5,
            f"  resumed          {done.reused} images reused from the staging of "
            f"{len(done.from_runs)} interrupted run(s), {done.new} featurized now"
            if done.from_runs
            else f"  resumed          nothing: {done.note}",
        )
    if not weights.meaningful:
        lines += RANDOM_WEIGHTS_BANNER
    return "\n".join(lines)


def _calibration(report: RunReport) -> str:
    """The int8 network's calibration and fidelity, for the engine's line."""
    calibration = report.calibration
    if calibration is None:
        return ""
    said = f" ({calibration.precision}, calibrated on {calibration.images} images"
    if calibration.restored_from:
        said = f" ({calibration.precision}, the network kept by {calibration.restored_from}"
    fidelity = calibration.fidelity
    if fidelity:
        said += (
            f"; cosine to float32 features median {fidelity.cosine_median:.3f}, "
            f"min {fidelity.cosine_min:.3f} on {fidelity.images} images"
        )
    return said + ")"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


def _workers_mb(workers: dict[str, float]) -> str:
    peaks = sorted(workers.values(), reverse=True)
    if len(peaks) <= 4:
        return "Python workers " + (", ".join(_mb(p) for p in peaks) or "n/a")
    return f"Python workers {len(peaks)}, largest {_mb(peaks[0])}"

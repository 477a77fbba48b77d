"""Command line: ``fruits-pipeline run --input … --output …``.

Exit codes: 0 success; 2 bad usage or bad input (one readable line on stderr, nothing
written); 1 the job itself failed.  The same ``main`` runs under spark-submit through
``scripts/spark_job.py``, where the master is left to spark-submit.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from fruits_pipeline import __version__

log = logging.getLogger("fruits_pipeline")

PROG = "fruits-pipeline"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage or bad input: reported as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2) instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def build_parser(default_master: str | None) -> argparse.ArgumentParser:
    """Return the argument parser; ``default_master`` is ``--master``'s default."""
    parser = _Parser(
        prog=PROG,
        description="Fruit images -> MobileNetV2 features -> PCA, with Spark.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser(
        "run",
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
        type=_threshold,
        default=0.95,
        metavar="RATIO",
        help="keep the fewest components whose cumulative explained variance "
        "reaches this ratio, in (0, 1]; 1.0 keeps every component (default 0.95)",
    )
    run.add_argument(
        "--batch-size",
        type=_positive,
        default=64,
        metavar="N",
        help="images per CNN batch and per Arrow batch (default 64)",
    )
    run.add_argument(
        "--limit",
        type=_positive,
        default=None,
        metavar="N",
        help="process only the first N images by path",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT if it exists (without it, an existing OUTPUT is refused)",
    )
    run.add_argument(
        "--master",
        default=default_master,
        help="Spark master (default: %(default)s)"
        if default_master
        else "Spark master (default: left to spark-submit)",
    )
    run.add_argument("--quiet", action="store_true", help="log warnings only")
    return parser


def main(argv: list[str] | None = None, default_master: str | None = "local[*]") -> int:
    """Run the command line and return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(default_master).parse_args(argv)
    except UsageError as error:
        return _usage_error(str(error))
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Validate, start Spark, run the job, print a summary; return the exit code."""
    from fruits_pipeline import model, outputs
    from fruits_pipeline.job import InputError, JobConfig, run_job
    from fruits_pipeline.pca import PCAInputError

    bad_input = (InputError, model.WeightsError, outputs.OutputExistsError, PCAInputError)
    try:
        spec = model.parse_weights_spec(args.weights)
        model.check_weights_spec(spec)
        config = JobConfig(
            input=args.input,
            output=args.output,
            weights=spec,
            variance_threshold=args.variance_threshold,
            batch_size=args.batch_size,
            limit=args.limit,
            overwrite=args.overwrite,
        )
        outputs.OutputLocation.prepare(config.output, config.overwrite)  # fail before Spark
    except bad_input as error:
        return _usage_error(str(error))

    from fruits_pipeline.session import build_spark

    started = time.perf_counter()
    spark = build_spark(args.master)
    spark_seconds = time.perf_counter() - started
    try:
        report = run_job(spark, config, spark_start_seconds=spark_seconds)
    except bad_input as error:
        return _usage_error(str(error))
    except Exception as error:
        log.exception("the job failed")
        print(f"{PROG}: job failed: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILED
    print(summary(report))
    return EXIT_OK


def summary(report: dict) -> str:
    """Return the short human summary printed at the end of a run."""
    counts, pca, weights = report["counts"], report["pca"], report["weights"]
    reasons = ", ".join(f"{n} {r}" for r, n in counts["rejected_by_reason"].items() if n)
    lines = [
        "",
        f"fruits-pipeline: run finished in {report['seconds']['total']:.1f} s",
        f"  images read      {counts['files_seen']} in {len(counts['per_label'])} labels",
        f"  featurized       {counts['featurized']}",
        f"  rejected         {counts['rejected']}" + (f" ({reasons})" if reasons else ""),
        f"  PCA              k = {pca['k']} components keep {pca['variance_kept']:.1%} of the "
        f"variance (threshold {pca['variance_threshold']:.1%})",
        f"  weights          {weights['source']}"
        + (f" (sha256 {weights['file_sha256'][:12]}…)" if weights["file_sha256"] else ""),
        f"  model builds     driver {report['model_builds']['driver']}, "
        f"workers {report['model_builds']['workers']}",
        "  seconds          "
        + ", ".join(
            f"{name} {secs:.1f}" for name, secs in report["seconds"].items() if name != "total"
        ),
        f"  output           {report['output']}",
        f"    features/ rejected/ pca_model/ {report['outputs']['csv'].rsplit('/', 1)[-1]} "
        "report.json",
    ]
    if not weights["meaningful"]:
        banner = "!" * 78
        lines += [
            banner,
            "!! RANDOM WEIGHTS: these features are NOT meaningful. They only show that the",
            "!! pipeline runs. For real features use --weights imagenet (the default, needs",
            "!! internet) or --weights PATH to a MobileNetV2 weights file.",
            banner,
        ]
    return "\n".join(lines)


def _usage_error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

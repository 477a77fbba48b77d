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
from fruits_pipeline.defaults import DEFAULT_BATCH_SIZE, DEFAULT_ENGINE, ENGINES
from fruits_pipeline.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROG, BadInput

log = logging.getLogger("fruits_pipeline")

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "PROG", "UsageError", "build_parser", "main"]


class UsageError(BadInput):
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
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"images per CNN batch and per Arrow batch (default {DEFAULT_BATCH_SIZE})",
    )
    run.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULT_ENGINE,
        help="inference engine: onnxruntime (the network converted to ONNX on the driver, "
        "about twice as fast on CPU) or tensorflow (Keras on every worker); the features "
        f"agree within 1e-4 (default {DEFAULT_ENGINE})",
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
        "--incremental",
        action="store_true",
        help="update the finished run at OUTPUT: reuse the features of images whose path, "
        "size and modification time are unchanged, featurize only new or changed ones, drop "
        "removed ones, and refit the PCA (implies --overwrite)",
    )
    run.add_argument(
        "--master",
        default=default_master,
        help="Spark master (default: %(default)s)"
        if default_master
        else "Spark master (default: left to spark-submit)",
    )
    run.add_argument("--quiet", action="store_true", help="log warnings only")
    _add_result_commands(commands, default_master)
    return parser


def _add_result_commands(commands, default_master: str | None) -> None:
    """Add ``evaluate`` and ``transform`` (issue 6), run by evaluate.py and transform.py."""
    master_help = (
        "Spark master (default: %(default)s)"
        if default_master
        else "Spark master (default: left to spark-submit)"
    )
    evaluate = commands.add_parser(
        "evaluate",
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
        type=_positive,
        default=100,
        metavar="N",
        help="LogisticRegression iterations at most (default 100)",
    )
    evaluate.add_argument(
        "--reg-param",
        type=_non_negative,
        default=0.0,
        metavar="X",
        help="L2 regularisation (default 0.0)",
    )
    evaluate.add_argument("--master", default=default_master, help=master_help)
    evaluate.add_argument("--quiet", action="store_true", help="log warnings only")

    transform = commands.add_parser(
        "transform",
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
    transform.add_argument(
        "--batch-size",
        type=_positive,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"images per CNN batch and per Arrow batch (default {DEFAULT_BATCH_SIZE})",
    )
    transform.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="inference engine (default: the one the model's run used)",
    )
    transform.add_argument(
        "--limit",
        type=_positive,
        default=None,
        metavar="N",
        help="process only the first N images by path",
    )
    transform.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    transform.add_argument("--master", default=default_master, help=master_help)
    transform.add_argument("--quiet", action="store_true", help="log warnings only")


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


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
    if args.command == "evaluate":
        from fruits_pipeline.commands.evaluate import evaluate_command

        return evaluate_command(args)
    if args.command == "transform":
        from fruits_pipeline.commands.transform import transform_command

        return transform_command(args)
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Validate, start Spark, run the job, print a summary; return the exit code."""
    from fruits_pipeline.chain import weights as model
    from fruits_pipeline.chain.pca import PCAInputError
    from fruits_pipeline.commands.run import InputError, JobConfig, run_job
    from fruits_pipeline.results import storage as outputs

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
            incremental=args.incremental,
            engine=args.engine,
        )
        # fail before Spark starts
        outputs.OutputLocation.prepare(config.output, config.overwrite or config.incremental)
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
    memory = report.get("memory_peak_mb", {})
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
        f"  peak memory      driver JVM {_mb(memory.get('driver_jvm'))}, driver Python "
        f"{_mb(memory.get('driver_python'))}, {_workers_mb(memory.get('python_workers') or {})}",
        f"  output           {report['output']}",
        f"    features/ rejected/ pca_model/ {report['outputs']['csv'].rsplit('/', 1)[-1]} "
        "plots/ report.html report.json",
    ]
    if "incremental" in report:
        inc = report["incremental"]
        lines.insert(
            5,
            f"  incremental      {inc['reused']} reused, {inc['new']} new, {inc['changed']} "
            f"changed, {inc['removed']} removed",
        )
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


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


def _workers_mb(workers: dict[str, float]) -> str:
    peaks = sorted(workers.values(), reverse=True)
    if len(peaks) <= 4:
        return "Python workers " + (", ".join(_mb(p) for p in peaks) or "n/a")
    return f"Python workers {len(peaks)}, largest {_mb(peaks[0])}"


def _usage_error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

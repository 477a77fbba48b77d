"""What every command shares: argument types, the Spark master option, and how a command
ends (its summary printed, or one line and the exit code).

Importing this loads neither Spark nor numpy: the command line parses (and refuses) its
arguments before anything heavy starts.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fruits_pipeline.errors import EXIT_OK, BadInput, bad_input, failed

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("fruits_pipeline")


def _number(text: str, kind: type) -> float:
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def threshold(text: str) -> float:
    """argparse type: a ratio in (0, 1]."""
    value = _number(text, float)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def positive(text: str) -> int:
    """argparse type: a whole number, at least 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative(text: str) -> float:
    """argparse type: a number, at least 0."""
    value = _number(text, float)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def add_spark_options(parser: argparse.ArgumentParser, default_master: str | None) -> None:
    """Add ``--master`` (None: left to spark-submit) and ``--quiet``."""
    parser.add_argument(
        "--master",
        default=default_master,
        help="Spark master (default: %(default)s)"
        if default_master
        else "Spark master (default: left to spark-submit)",
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings only")


def start_spark(master: str | None) -> tuple[SparkSession, float]:
    """Start (or reuse) the SparkSession; return it and the seconds it took."""
    from fruits_pipeline.session import build_spark

    started = time.perf_counter()
    spark = build_spark(master)
    return spark, round(time.perf_counter() - started, 3)


def finish(what: str, work: Callable[[], str]) -> int:
    """Run a command's ``work``, which returns the summary to print, and return the exit
    code: 0 and the summary; 2 and one line for a BadInput or an S3 endpoint that cannot be
    reached; 1 and one line (the trace in the log) for any other failure, named ``what``
    ("job", "transform"…)."""
    try:
        text = work()
    except BadInput as error:
        return bad_input(error)
    except Exception as error:
        from fruits_pipeline.results.storage import unreachable_endpoint

        unreachable = unreachable_endpoint(error)
        if unreachable:
            return bad_input(unreachable)
        log.exception("the %s failed", what)
        return failed(what, error)
    print(text)
    return EXIT_OK


RANDOM_WEIGHTS_BANNER = [
    "!" * 78,
    "!! RANDOM WEIGHTS: these features are NOT meaningful. They only show that the",
    "!! pipeline runs. For real features use --weights imagenet (the default, needs",
    "!! internet) or --weights PATH to a MobileNetV2 weights file.",
    "!" * 78,
]

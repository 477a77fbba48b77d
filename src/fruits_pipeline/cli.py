"""Command line: ``fruits-pipeline run|transform|train|export|predict …``.

Exit codes: 0 success; 2 bad usage or bad input (one readable line on stderr, nothing
written); 1 the job itself failed.  The same ``main`` runs under spark-submit through
``scripts/spark_job.py``, where the master is left to spark-submit.  Each command is a module
in ``commands/`` with ``add_parser`` and ``execute``; nothing heavy is imported before the
arguments are parsed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fruits_pipeline import __version__
from fruits_pipeline.commands import export, predict, run, train, transform
from fruits_pipeline.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROG, BadInput, bad_input

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "PROG", "UsageError", "build_parser", "main"]

#: The commands, by name: each module adds its parser and executes its command.
COMMANDS = {module.NAME: module for module in (run, transform, train, export, predict)}


class UsageError(BadInput):
    """A wrong argument: reported as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2) instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def build_parser(default_master: str | None) -> argparse.ArgumentParser:
    """Return the argument parser; ``default_master`` is ``--master``'s default."""
    parser = _Parser(
        prog=PROG,
        description="Fruit images -> MobileNetV2 features -> PCA, with Spark.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in COMMANDS.values():
        module.add_parser(commands, default_master)
    return parser


def main(argv: list[str] | None = None, default_master: str | None = "local[*]") -> int:
    """Run the command line and return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(default_master).parse_args(argv)
    except UsageError as error:
        return bad_input(error)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return COMMANDS[args.command].execute(args)


if __name__ == "__main__":
    sys.exit(main())

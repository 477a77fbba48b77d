"""How a command fails: bad input is one readable line and exit 2; a failed job, exit 1.

Every error a user can fix by changing an argument or the input (a missing folder, weights of
another network, an OUTPUT that exists) is a ``BadInput``: the commands catch that one class,
print its message as one line and write nothing.  No imports beyond the standard library, so
that the command line answers a usage error before Spark or numpy load.
"""

from __future__ import annotations

import sys

PROG = "fruits-pipeline"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class BadInput(ValueError):
    """Bad usage or bad input: reported as one line on stderr, exit 2, nothing written."""


def first_line(error: BaseException) -> str:
    """Return the first line of an error's message (its type's name when it has none)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def bad_input(message: object, prog: str = PROG) -> int:
    """Print ``prog: error: message`` as one line on stderr; return the usage exit code."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def failed(what: str, error: BaseException, prog: str = PROG) -> int:
    """Print ``prog: WHAT failed: <first line of error>`` on stderr; return exit code 1."""
    print(f"{prog}: {what} failed: {first_line(error)}", file=sys.stderr)
    return EXIT_FAILED

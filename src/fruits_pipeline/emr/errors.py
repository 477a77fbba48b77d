"""How the submitter fails: a refused argument or setting is one line and exit 2.

Its usage error is a ``BadInput`` like the job's; Ctrl-C while watching has its own exit
code.  The program name that starts each message depends on how it was started.
"""

from __future__ import annotations

from pathlib import Path

from fruits_pipeline.errors import BadInput

#: The name messages start with: the script's, also for ``main()`` called in-process.
PROG = "submit_step.py"
#: The console script's name (pyproject.toml [project.scripts]).
CONSOLE_PROG = "fruits-pipeline-emr"

#: Ctrl-C stopped the watching (not the step): the shell's code for SIGINT.
EXIT_INTERRUPTED = 130


class UsageError(BadInput):
    """A wrong argument or a refused setting: one line on stderr, exit 2."""


def program_name(argv0: str) -> str:
    """Return the name to print for a process started as ``argv0`` (sys.argv[0])."""
    return CONSOLE_PROG if Path(argv0).stem == CONSOLE_PROG else PROG

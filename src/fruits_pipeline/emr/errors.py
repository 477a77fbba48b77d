"""How the submitter fails: a refused argument or setting is one line and exit 2.

Its usage error is a ``BadInput`` like the job's; Ctrl-C while watching has its own exit
code.
"""

from __future__ import annotations

from fruits_pipeline.errors import BadInput

#: The name messages start with.
PROG = "submit_step.py"

#: Ctrl-C stopped the watching (not the step): the shell's code for SIGINT.
EXIT_INTERRUPTED = 130


class UsageError(BadInput):
    """A wrong argument or a refused setting: one line on stderr, exit 2."""

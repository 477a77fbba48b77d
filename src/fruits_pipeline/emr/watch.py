"""Following a submitted step until it ends: each state change on one line with the elapsed
time, then the verdict, and the results or where the logs are.

The target reports a ``StepStatus`` and says, with its ``EndStates``, which of its states end
the watch; nothing here knows one target's state names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StepStatus:
    """One look at the step and the cluster it runs on."""

    step: str
    cluster: str
    reason: str = ""


@dataclass(frozen=True)
class EndStates:
    """A target's states that end the watch: the step's success, every state a step ends
    in, and those a cluster ends in (the step then cannot finish)."""

    succeeded: str
    step_ended: frozenset[str]
    cluster_ended: frozenset[str]


@dataclass(frozen=True)
class WatchResult:
    """How a watched step ended."""

    state: str
    succeeded: bool
    reason: str
    seconds: float


def format_elapsed(seconds: float) -> str:
    """Return ``seconds`` as ``M:SS`` or ``H:MM:SS``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def watch_step(
    poll: Callable[[], StepStatus],
    interval: float,
    ends: EndStates,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    emit: Callable[[str], None] = print,
) -> WatchResult:
    """Poll until the step ends (or its cluster does); emit each state change with the
    elapsed time; return the WatchResult."""
    started = clock()
    last = None
    while True:
        status = poll()
        elapsed = clock() - started
        if (status.step, status.cluster) != last:
            reason = f" ({status.reason})" if status.reason else ""
            emit(
                f"  [{format_elapsed(elapsed):>7}] step {status.step:<11} "
                f"cluster {status.cluster}{reason}"
            )
            last = (status.step, status.cluster)
        if status.step in ends.step_ended:
            succeeded = status.step == ends.succeeded
            return WatchResult(status.step, succeeded, status.reason, elapsed)
        if status.cluster in ends.cluster_ended:
            reason = status.reason or f"cluster {status.cluster}"
            return WatchResult(status.step, False, f"the cluster ended first: {reason}", elapsed)
        sleep(interval)


def wait_report(result: WatchResult, step_id: str, places: dict[str, str], output: str) -> str:
    """Return what --wait prints once the step has ended: the verdict, then the results
    (success) or where the logs are (failure)."""
    verdict = "succeeded" if result.succeeded else "did not succeed"
    reason = f" ({result.reason})" if result.reason and not result.succeeded else ""
    lines = [f"step {step_id} {result.state} after {format_elapsed(result.seconds)}: {verdict}"]
    lines[0] += reason
    if result.succeeded:
        return "\n".join([*lines, f"results: {output}"])
    lines.append("logs (EMR copies them to S3 within about 5 minutes):")
    lines += [f"  {name:<12} {where}" for name, where in places.items()]
    lines.append(
        "  Spark UI     the console page above, tab Applications: persistent Spark History Server"
    )
    return "\n".join(lines)

"""Progress you can see in a log file: each stage's start and seconds, and Spark's task
counts every few seconds.

Spark's console progress bar needs a terminal; in a log file (an EMR step's stderr) it is a
wall of carriage returns.  ``log_progress`` logs one line per interval instead.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

log = logging.getLogger(__name__)


def describe_progress(stages: list[tuple[int, int, int, int]]) -> str | None:
    """Return ``"12/258 tasks done, 2 running"`` for ``(id, done, running, total)`` stage
    tuples, or None when no stage is active."""
    if not stages:
        return None
    done = sum(stage[1] for stage in stages)
    running = sum(stage[2] for stage in stages)
    total = sum(stage[3] for stage in stages)
    return f"{done}/{total} tasks done, {running} running"


@contextmanager
def log_progress(spark, name: str, every_seconds: float = 30.0):
    """Log the active Spark stages' progress every ``every_seconds`` while the body runs."""
    stop = threading.Event()
    tracker = spark.sparkContext.statusTracker()

    def watch() -> None:
        while not stop.wait(every_seconds):
            stages = []
            for stage_id in tracker.getActiveStageIds():
                info = tracker.getStageInfo(stage_id)
                if info is not None:
                    stages.append(
                        (stage_id, info.numCompletedTasks, info.numActiveTasks, info.numTasks)
                    )
            line = describe_progress(stages)
            if line:
                log.info("%s: %s", name, line)

    thread = threading.Thread(target=watch, name=f"progress-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


class StageClock:
    """Seconds spent per named stage, in the order the stages ran; each stage logs a line
    when it starts and when it ends."""

    def __init__(self, before: dict[str, float] | None = None) -> None:
        #: stages timed before this clock existed (Spark's start, a model loaded early)
        self.seconds: dict[str, float] = dict(before or {})

    @contextmanager
    def stage(self, name: str):
        log.info("stage %s: started", name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 3)
            log.info("stage %s: %.1f s", name, self.seconds[name])

    def total(self) -> dict[str, float]:
        """Return the seconds per stage with their ``total``."""
        return {**self.seconds, "total": round(sum(self.seconds.values()), 3)}

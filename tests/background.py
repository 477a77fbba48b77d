"""Slow runs in processes of their own, started in the background so that the cores idle
while the suite's in-process tests wait on Spark are used.

Each ``JOBS`` entry is the process part of one test (the standalone cluster's run, `make
demo`): a function of a new folder and the session's network cache that returns what the
test then checks.  The session fixture ``background`` (conftest.py) starts the jobs of the
selected tests one at a time, once the killed runs (tests/killed_runs.py) are done, so that
no more than a few runs share the cores; a test takes its job's result with ``take``, and a
job asked for again (as ``pytest --count N`` does) runs anew.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import demo_run
import standalone_run

#: The test that takes each job, by the test function's name.
JOBS: dict[str, Callable[[Path, Path], Any]] = {
    "test_standalone_cluster_gives_the_local_result": standalone_run.run_on_cluster,
    "test_make_demo_without_java_runs_on_the_packaged_jdk": demo_run.make_demo_without_java,
}


class Background:
    """The ``JOBS`` of the test names in ``selected``, run one at a time in the background
    once ``after`` (futures) are done."""

    def __init__(
        self, selected: Iterable[str], cache: Path, base: Path, after: Iterable[Future] = ()
    ) -> None:
        self.cache, self.base = cache, base
        self.pool = ThreadPoolExecutor(1)
        waited = list(after)
        self.started = {
            name: self.pool.submit(self._after, waited, name)
            for name in sorted(set(selected) & set(JOBS))
        }

    def _after(self, waited: list[Future], name: str) -> Any:
        wait(waited)  # their failures are raised where they are taken
        return self.run(name)

    def run(self, name: str) -> Any:
        return JOBS[name](Path(tempfile.mkdtemp(prefix="job-", dir=self.base)), self.cache)

    def take(self, name: str) -> Any:
        """The result of the job of the test ``name`` (its failure, if it failed, raised here)."""
        started = self.started.pop(name, None)
        return started.result() if started else self.run(name)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

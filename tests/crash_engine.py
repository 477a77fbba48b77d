"""A test-only inference engine: the default engine, except that the first Python worker to
run a batch dies (``os._exit``, as a killed executor would), once per marker file.

Tests register it for themselves (``crash_once_engine``); the product knows nothing of it.
Its class travels to the workers by value (cloudpickle), since they cannot import tests/.
"""

from __future__ import annotations

import os
import sys

import pytest
from pyspark import cloudpickle

from fruits_pipeline import engines
from fruits_pipeline.engines.base import Engine, PreparedNetwork


class CrashOnceEngine(Engine):
    name = "crash-once"
    summary = "tests only: onnxruntime, but the first worker to run a batch dies, once"
    worker_memory_mb = 400

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.inner = engines.get(engines.DEFAULT_ENGINE)

    def prepare(self, weights, calibration=None) -> PreparedNetwork:
        prepared = self.inner.prepare(weights)
        return PreparedNetwork(self.name, prepared.payload, prepared.sha256)

    def extractor(self, payload, threads: int):
        extract = self.inner.extractor(payload, threads)
        marker = self.marker

        def crash_once(batch):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return extract(batch)
            os._exit(17)

        return crash_once

    def versions(self) -> dict[str, str]:
        return self.inner.versions()


def crash_once_engine(monkeypatch: pytest.MonkeyPatch, marker: str) -> str:
    """Register the engine for this test (``--engine crash-once``); return its name."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setitem(engines.ENGINES, CrashOnceEngine.name, CrashOnceEngine(marker))
    return CrashOnceEngine.name

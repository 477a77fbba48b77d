"""The seam between the job and an inference engine, in the spirit of Spark's
``predict_batch_udf``: the driver prepares what is broadcast, and each Python worker builds,
once, a function from a batch of preprocessed images to their features.

The job never names a framework: it asks an ``Engine`` for the broadcast payload on the
driver (``prepare``) and for the extractor on a worker (``extractor``), through one
``WorkerCache`` per Python worker process.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from fruits_pipeline.chain.weights import LoadedWeights

#: A preprocessed float32 ``(n, 224, 224, 3)`` batch -> float32 ``(n, 1280)`` features.
Extractor = Callable[["np.ndarray"], "np.ndarray"]


@dataclass(frozen=True)
class PreparedNetwork:
    """What the driver broadcasts for one engine: the payload, and its fingerprint.

    ``sha256``, ``precision`` and ``calibration`` enter the run's provenance key
    (``chain/provenance.py``): features are reused only from runs with the same key."""

    engine: str
    payload: Any
    #: sha256 of the payload: it names the exact network the workers run
    sha256: str
    #: the arithmetic the network runs in (``float32``)
    precision: str = "float32"
    #: for a quantized network, what calibrated its bytes (e.g. the sha256 of the calibration
    #: images and method); part of the provenance key that decides what runs may reuse
    calibration: str | None = None
    #: the bytes a run keeps so that ``transform`` and ``export`` run this very network
    #: (a quantized one: calibrated on this run's images), None when the weights rebuild it
    stored: bytes | None = field(default=None, repr=False)
    #: how the network was calibrated (a quantized one), for the report
    calibration_settings: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class CalibrationSample:
    """Images of the run itself that calibrate a quantized network: a preprocessed float32
    ``(n, 224, 224, 3)`` batch and the paths of its images, sorted, in the batch's order."""

    batch: np.ndarray = field(repr=False)
    paths: tuple[str, ...]

    @property
    def paths_sha256(self) -> str:
        """The sha256 of the sorted paths, one per line: which images calibrated."""
        return sha256_bytes("\n".join(self.paths).encode("utf-8"))


#: The architecture both engines compute today.
MOBILENET_V2 = "mobilenet_v2"


@dataclass(frozen=True)
class FeatureNetwork:
    """The network an engine computes features with, as ``export`` rebuilds it for a
    device: its architecture, the arithmetic it runs in, and its weights by Keras layer
    name."""

    architecture: str
    precision: str
    layers: Mapping[str, Sequence[np.ndarray]] = field(repr=False)
    #: the network as ONNX bytes when the weights do not rebuild it (a quantized network,
    #: calibrated and kept by the run): export writes these, not the layers
    onnx: bytes | None = field(default=None, repr=False)


class Engine(ABC):
    """An inference engine.  Subclasses set the class attributes and the two methods."""

    #: the ``--engine`` value
    name: str
    #: one line for ``--help``
    summary: str
    #: a Python worker's peak memory in MB at the default batch size, measured (the cluster
    #: configuration's executor overhead must hold two of them: tests/emr checks it)
    worker_memory_mb: int
    #: how many of the run's own images ``prepare`` needs to calibrate its network
    #: (a ``CalibrationSample``); 0 for an engine that needs none
    calibration_images: int = 0
    #: the arithmetic of the network ``prepare`` returns
    precision: str = "float32"

    @abstractmethod
    def prepare(
        self, weights: LoadedWeights, calibration: CalibrationSample | None = None
    ) -> PreparedNetwork:
        """Driver side: return what is broadcast to the workers for ``weights``; an engine
        with ``calibration_images`` gets that many of the run's images (or fewer, when the
        run has fewer) in ``calibration``."""

    def restore(self, stored: bytes, calibration: str | None) -> PreparedNetwork:
        """Driver side: return the network a run kept (``PreparedNetwork.stored``, and its
        ``calibration``), as ``prepare`` returned it then.  Only an engine whose networks
        are kept (a quantized one) implements it."""
        raise NotImplementedError(f"engine {self.name} keeps no network: its weights rebuild it")

    @abstractmethod
    def extractor(self, payload: Any, threads: int) -> Extractor:
        """Worker side: build the extractor from the broadcast ``payload``, with at most
        ``threads`` threads for the engine's own pool."""

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Return the versions of the libraries this engine runs on, for the report."""

    def feature_network(self, weights: LoadedWeights) -> FeatureNetwork:
        """Return the network this engine computes features with from ``weights``, for
        ``export``: MobileNetV2 in float32 with the weights as loaded.  An engine that runs
        another network (a quantized one) returns its own; ``export`` writes only the
        networks it can reproduce and refuses the others."""
        return FeatureNetwork(MOBILENET_V2, "float32", weights.layers)


def sha256_bytes(data: bytes) -> str:
    """Return the hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class WorkerCache:
    """One extractor per Python worker process, rebuilt only when the network changes.

    Spark reuses a Python worker for many tasks (``spark.python.worker.reuse``), so the
    first task builds the extractor and the others find it here.  A worker keeps one
    network: a later run's key replaces the old one, and its memory.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: str | None = None
        self._value: Extractor | None = None

    def get(self, key: str, build: Callable[[], Extractor]) -> tuple[Extractor, bool]:
        """Return ``(extractor, built)``: the cached one for ``key``, or ``build()``'s."""
        with self._lock:
            if self._key == key and self._value is not None:
                return self._value, False
            self._key, self._value = None, None
            self._value = build()
            self._key = key
            return self._value, True


#: This Python worker process's extractor (one per process: each worker imports this module).
EXTRACTORS = WorkerCache()

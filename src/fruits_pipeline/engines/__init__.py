"""Inference engines, by name: what the driver broadcasts, and what each Python worker runs.

Adding an engine is a module in this folder with an ``Engine`` subclass (see ``base.py``)
and one line in ``ENGINES`` below; the command line's ``--engine``, the report's versions and
the cluster configuration's memory check follow from it.  Importing this package loads no
framework: each engine imports its own inside its methods.
"""

from __future__ import annotations

from fruits_pipeline.engines.base import (
    CalibrationSample,
    Engine,
    Extractor,
    PreparedNetwork,
    WorkerCache,
)
from fruits_pipeline.engines.onnxruntime_engine import OnnxRuntimeEngine
from fruits_pipeline.engines.onnxruntime_int8_engine import OnnxRuntimeInt8Engine
from fruits_pipeline.engines.tensorflow_engine import TensorFlowEngine
from fruits_pipeline.errors import BadInput

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "CalibrationSample",
    "Engine",
    "Extractor",
    "PreparedNetwork",
    "WorkerCache",
]

#: Every engine the job can run, by its ``--engine`` name.
ENGINES: dict[str, Engine] = {
    engine.name: engine
    for engine in (OnnxRuntimeEngine(), OnnxRuntimeInt8Engine(), TensorFlowEngine())
}

DEFAULT_ENGINE = OnnxRuntimeEngine.name


def get(name: str) -> Engine:
    """Return the engine called ``name``; raise BadInput naming the known ones."""
    try:
        return ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINES))
        raise BadInput(f"unknown inference engine {name!r}: use one of {known}") from None

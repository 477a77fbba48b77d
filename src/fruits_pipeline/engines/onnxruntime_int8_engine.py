"""The int8 engine: the fp32 ONNX network of ``onnxruntime``, quantized statically on the
driver with a sample of the run's own images, run by ONNX Runtime in the workers.

``prepare`` writes the float32 graph from the weights (``mobilenet_onnx``), calibrates its
activations on the run's ``CalibrationSample`` (ONNX Runtime's ``quantize_static``) and
returns the quantized bytes, which are broadcast and also kept in the run's output
(``PreparedNetwork.stored``): ``transform`` and ``export`` run that network
(``restore``), never one calibrated again on other images.

The settings (``SETTINGS``) were measured on the shared ImageNet weights and fruits-360-light
(docs/performance.md): QDQ format, int8 weights per output channel, uint8 activations,
MinMax calibration, the stem convolution kept in float32.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import TYPE_CHECKING, Any

from fruits_pipeline.engines.base import (
    CalibrationSample,
    Engine,
    Extractor,
    PreparedNetwork,
    sha256_bytes,
)
from fruits_pipeline.engines.onnxruntime_engine import OnnxRuntimeEngine, onnx_session_extractor
from fruits_pipeline.errors import BadInput

if TYPE_CHECKING:
    import numpy as np

    from fruits_pipeline.chain.weights import LoadedWeights

#: Layers kept in float32: quantizing the stem convolution (3 input channels, [-1, 1]
#: pixels) alone takes the cosine to float32 features from about 0.97 to 0.76
#: (docs/performance.md).
FLOAT_NODES = ["Conv1"]

#: How the network is quantized (recorded in the report and in the calibration's digest).
SETTINGS: dict[str, Any] = {
    "format": "QDQ",
    "weights": "int8",
    "per_channel": True,
    "activations": "uint8",
    "method": "MinMax",
    "float_layers": ",".join(FLOAT_NODES),
}


#: Images per batch while calibrating (bounds the driver's memory during calibration).
CALIBRATION_BATCH = 16


class CalibrationError(BadInput):
    """No image of the run could calibrate the network."""


class OnnxRuntimeInt8Engine(Engine):
    name = "onnxruntime-int8"
    summary = (
        "the onnxruntime network quantized to int8 on the driver (static, calibrated on a "
        "deterministic sample of the run's own images), run by ONNX Runtime in the workers"
    )
    # the largest Python worker's peak on 8,240 images: 364 MB (docs/performance.md)
    worker_memory_mb = 400
    calibration_images = 256
    precision = "int8"

    def prepare(
        self, weights: LoadedWeights, calibration: CalibrationSample | None = None
    ) -> PreparedNetwork:
        from fruits_pipeline.engines.mobilenet_onnx import to_onnx

        if calibration is None or not len(calibration.paths):
            raise CalibrationError(
                f"engine {self.name} needs images of the run to calibrate its network: none of "
                "the sample decodes"
            )
        model = quantize(to_onnx(weights.layers), calibration.batch)
        return self.restore(model, calibration_digest(calibration))

    def restore(self, stored: bytes, calibration: str | None) -> PreparedNetwork:
        return PreparedNetwork(
            self.name,
            stored,
            sha256_bytes(stored),
            precision=self.precision,
            calibration=calibration,
            stored=stored,
            calibration_settings=SETTINGS,
        )

    def extractor(self, payload: bytes, threads: int) -> Extractor:
        return onnx_session_extractor(payload, threads)

    def versions(self) -> dict[str, str]:
        return OnnxRuntimeEngine().versions()


def calibration_digest(sample: CalibrationSample) -> str:
    """Return what calibrated a network: the sha256 over the settings, the number of images
    and the sha256 of their sorted paths."""
    facts = {**SETTINGS, "images": len(sample.paths), "paths_sha256": sample.paths_sha256}
    return sha256_bytes(json.dumps(facts, sort_keys=True).encode("utf-8"))


def quantize(model, batch: np.ndarray) -> bytes:
    """Return the bytes of the float32 ONNX ``model`` quantized statically with ``SETTINGS``,
    its activation ranges calibrated on the preprocessed ``batch``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from fruits_pipeline.engines.mobilenet_onnx import INPUT_NAME

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.starts = iter(range(0, len(batch), CALIBRATION_BATCH))

        def get_next(self) -> dict | None:
            start = next(self.starts, None)
            if start is None:
                return None
            return {INPUT_NAME: batch[start : start + CALIBRATION_BATCH]}

    with tempfile.TemporaryDirectory(prefix="fruits-int8-") as folder:
        source, target = os.path.join(folder, "fp32.onnx"), os.path.join(folder, "int8.onnx")
        with open(source, "wb") as file:
            file.write(model.SerializeToString())
        quantize_static(
            source,
            target,
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=SETTINGS["per_channel"],
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=FLOAT_NODES,
        )
        with open(target, "rb") as file:
            return file.read()

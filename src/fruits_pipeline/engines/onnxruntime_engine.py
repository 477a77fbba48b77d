"""The default engine: the network written as ONNX on the driver, run by ONNX Runtime.

The driver writes MobileNetV2's feature network from the loaded weights as an ONNX graph
(``mobilenet_onnx``) and broadcasts its bytes; each Python worker opens one ONNX Runtime
session on them.  No TensorFlow in the workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fruits_pipeline.engines.base import Engine, Extractor, PreparedNetwork, sha256_bytes

if TYPE_CHECKING:
    from fruits_pipeline.chain.weights import LoadedWeights
    from fruits_pipeline.engines.base import CalibrationSample


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    summary = (
        "the network converted to ONNX on the driver and run by ONNX Runtime in the "
        "workers (about twice TensorFlow's speed on CPU, no TensorFlow in the workers)"
    )
    # the largest Python worker's peak on 8,240 images (docs/performance.md: 434 to 440 MB)
    worker_memory_mb = 440

    def prepare(
        self, weights: LoadedWeights, calibration: CalibrationSample | None = None
    ) -> PreparedNetwork:
        from fruits_pipeline.engines.mobilenet_onnx import to_onnx

        model = to_onnx(weights.layers).SerializeToString()
        return PreparedNetwork(self.name, model, sha256_bytes(model))

    def extractor(self, payload: bytes, threads: int) -> Extractor:
        return onnx_session_extractor(payload, threads)

    def versions(self) -> dict[str, str]:
        import onnx
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}


def onnx_session_extractor(model: bytes, threads: int) -> Extractor:
    """Return a function running the ONNX ``model`` (input ``input``, output ``features``)
    on a batch, in one ONNX Runtime session with ``threads`` intra-op threads."""
    import numpy as np
    import onnxruntime

    from fruits_pipeline.engines.mobilenet_onnx import INPUT_NAME, OUTPUT_NAME

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle threads sleep instead of spinning: Spark's other work shares these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def extract(batch: np.ndarray) -> np.ndarray:
        feed = {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}
        return session.run([OUTPUT_NAME], feed)[0]

    return extract

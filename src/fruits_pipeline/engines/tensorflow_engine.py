"""The TensorFlow engine: the weight arrays are broadcast, each worker rebuilds the Keras
network and runs it as a compiled ``tf.function``."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from fruits_pipeline.engines.base import Engine, Extractor, PreparedNetwork

if TYPE_CHECKING:
    import numpy as np

    from fruits_pipeline.chain.weights import LoadedWeights
    from fruits_pipeline.engines.base import CalibrationSample

log = logging.getLogger(__name__)


class TensorFlowEngine(Engine):
    name = "tensorflow"
    summary = "the weight arrays broadcast, MobileNetV2 rebuilt with Keras in every worker"
    worker_memory_mb = 1050

    def prepare(
        self, weights: LoadedWeights, calibration: CalibrationSample | None = None
    ) -> PreparedNetwork:
        return PreparedNetwork(self.name, weights.arrays, weights.arrays_sha256)

    def extractor(self, payload: list[np.ndarray], threads: int) -> Extractor:
        _limit_threads(max(1, threads))
        import tensorflow as tf

        from fruits_pipeline.chain.images import MODEL_INPUT_SIZE
        from fruits_pipeline.chain.weights import build_mobilenet, feature_model

        network = build_mobilenet(weights=None)
        network.set_weights(payload)
        features = feature_model(network)
        signature = tf.TensorSpec([None, MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3], tf.float32)
        compiled = tf.function(
            lambda batch: features(batch, training=False), input_signature=[signature]
        )

        def extract(batch: np.ndarray) -> np.ndarray:
            return compiled(tf.convert_to_tensor(batch)).numpy()

        return extract

    def versions(self) -> dict[str, str]:
        import keras
        import tensorflow

        return {"tensorflow": tensorflow.__version__, "keras": keras.__version__}


@functools.cache
def _limit_threads(threads: int) -> None:
    """Cap TensorFlow's thread pools, once per process: TensorFlow fixes them at its first
    operation, and several workers share the node's cores."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:  # TensorFlow already ran in this process: its pools are fixed
        log.debug("TensorFlow threads already fixed in this process")

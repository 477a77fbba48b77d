"""The on-device classifier as TFLite (LiteRT) models, converted by TensorFlow's own converter.

``keras_classifier`` builds the whole path from pixels to probabilities as one Keras model:
uint8 RGB ``[N, 224, 224, 3]`` in, cast and scaled (``x / 127.5 - 1``, as the job's
``preprocess``) inside the model, MobileNetV2 with the run's weights, the folded dense layer
(``folding``) and a softmax.  ``float32_tflite`` converts it as it is; ``int8_tflite``
quantizes every weight and activation to int8 (full-integer, calibrated on a representative
set of training images), keeping the uint8 pixels as input and float32 probabilities as
output.  TensorFlow is imported here only, when a model is built.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

import numpy as np

from fruits_pipeline.chain.images import MODEL_INPUT_SIZE
from fruits_pipeline.classifier.folding import DenseHead
from fruits_pipeline.engines.base import FeatureNetwork

log = logging.getLogger(__name__)

INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"


def scale_pixels(pixels):
    """Keras op: uint8 RGB to MobileNetV2's input range [-1, 1], as ``preprocess`` does."""
    import keras

    return keras.ops.cast(pixels, "float32") / 127.5 - 1.0


def keras_classifier(network: FeatureNetwork, head: DenseHead):
    """Return the Keras model from uint8 pixels to probabilities: ``network`` (MobileNetV2,
    its weights set by layer name) then ``head`` and a softmax."""
    import keras

    from fruits_pipeline.chain.weights import build_mobilenet, feature_model

    mobilenet = build_mobilenet(weights=None)
    for layer in mobilenet.layers:
        if layer.name in network.layers:
            layer.set_weights(list(network.layers[layer.name]))
    features = feature_model(mobilenet)
    pixels = keras.Input((MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3), dtype="uint8", name=INPUT_NAME)
    scaled = keras.layers.Lambda(scale_pixels, name="scale_pixels")(pixels)
    dense = keras.layers.Dense(head.labels, activation="softmax", name=OUTPUT_NAME)
    probabilities = dense(features(scaled))
    dense.set_weights([head.weight, head.bias])
    return keras.Model(pixels, probabilities, name="fruits_classifier")


def float32_tflite(model) -> bytes:
    """Return ``model`` converted to a float32 TFLite flatbuffer."""
    import tensorflow as tf

    return _convert(tf.lite.TFLiteConverter.from_keras_model(model))


def int8_tflite(model, calibration: np.ndarray) -> bytes:
    """Return ``model`` as a full-integer int8 TFLite flatbuffer, calibrated on
    ``calibration`` (uint8 ``(n, 224, 224, 3)`` training images): the input stays uint8
    pixels, the output float32 probabilities."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: representative_batches(calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    return _convert(converter)


def representative_batches(images: np.ndarray) -> Iterator[list[np.ndarray]]:
    """Yield the calibration images one by one, as the converter asks for them.

    The first carries one black and one white pixel: pixels span 0..255 whatever the sample
    holds, and the quantized input must keep that whole range (scale 1), or an app's darker
    or brighter photo would be clipped."""
    for index in range(len(images)):
        image = images[index : index + 1]
        if index == 0:
            image = image.copy()
            image[0, 0, 0, :] = 0
            image[0, 0, 1, :] = 255
        yield [image]


def _convert(converter) -> bytes:
    # Keras prints the temporary SavedModel it exports for the converter on stdout, which is
    # the command's summary: keep it for the debug log instead.
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        flatbuffer = converter.convert()
    log.debug("TFLite converter: %s", printed.getvalue().strip())
    return flatbuffer

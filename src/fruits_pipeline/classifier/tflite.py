"""The on-device classifier as TFLite (LiteRT) models, converted by TensorFlow's own converter.

``keras_classifier`` builds the whole path from pixels to probabilities as one Keras model:
uint8 RGB ``[N, 224, 224, 3]`` in, cast and scaled (``x / 127.5 - 1``, as the job's
``preprocess``) inside the model, MobileNetV2 with the run's weights, the folded dense layer
(``folding``) and a softmax.  ``saved_model`` exports its inference call once as a
SavedModel, which every conversion reads.  ``float32_tflite`` converts it as it is;
``int8_tflite`` quantizes weights and activations to int8 (calibrated on a representative
set of training images), keeping the uint8 pixels as input and float32 probabilities as
output, and keeps the few layers of ``FLOAT_LAYERS`` in float32 (TensorFlow's selective
quantization).  TensorFlow is imported here only, when a model is built.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import logging
import re
import tempfile
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


@contextlib.contextmanager
def saved_model(model) -> Iterator[str]:
    """Export ``model``'s inference call (``training=False``, its inputs' signature) as a
    SavedModel in a temporary folder and yield the folder.

    This is the export TensorFlow's ``from_keras_model`` makes for a Keras 3 model, made
    once: that converter makes it again for each conversion (three per export), and it
    costs as much as a conversion."""
    import keras
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="fruits-tflite-") as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        signature = [tf.TensorSpec(x.shape, dtype=x.dtype, name=x.name) for x in model.inputs]
        archive.add_endpoint("serve", functools.partial(model.__call__, training=False), signature)
        with _quiet():
            archive.write_out(folder)
        yield folder


def float32_tflite(saved: str) -> bytes:
    """Return the SavedModel in ``saved`` (``saved_model``) as a float32 TFLite flatbuffer."""
    import tensorflow as tf

    return _convert(tf.lite.TFLiteConverter.from_saved_model(saved))


#: The layers the int8 model keeps in float32: MobileNetV2's first convolution and first
#: depthwise convolution, and the classifier's dense layer: TensorFlow's quantization
#: debugger ranks them as the three largest errors of the fully quantized model (error over
#: the quantization step), and keeping them in float halves the accuracy the int8 model
#: loses (docs/performance.md has the figures).
FLOAT_LAYERS = ("Conv1", "expanded_conv_depthwise", OUTPUT_NAME)

#: Calibration images the quantization debugger runs to name the model's tensors.
DEBUG_IMAGES = 4


def int8_tflite(saved: str, calibration: np.ndarray) -> bytes:
    """Return the SavedModel in ``saved`` (``saved_model``) as an int8 TFLite flatbuffer,
    calibrated on ``calibration`` (uint8 ``(n, 224, 224, 3)`` training images): the input
    stays uint8 pixels, the output float32 probabilities, and the layers of
    ``FLOAT_LAYERS`` stay float32.

    Raises ValueError when one of ``FLOAT_LAYERS`` is not in the converted model."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: representative_batches(calibration)
    # int8 kernels everywhere, and the builtin float ones for the layers kept in float32
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    few = calibration[:DEBUG_IMAGES]
    with _quiet():
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: representative_batches(few)
        )
        debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
        names = [row["tensor_name"] for row in csv.DictReader(io.StringIO(dump.getvalue()))]
        keep = float_nodes(names)
        log.info("int8 model: %s kept in float32", ", ".join(FLOAT_LAYERS))
        selective = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: representative_batches(few),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=keep),
        )
        return selective.get_nondebug_quantized_model()


def float_nodes(tensor_names: list[str], layers: tuple[str, ...] = FLOAT_LAYERS) -> list[str]:
    """Return the tensors of ``tensor_names`` (a quantized model's, as TensorFlow names
    them: the fused op's names joined by ``;``) that ``layers`` compute, one per layer.

    A tensor belongs to a layer when one of its name's path segments is the layer's name,
    with or without the ``_N`` suffix TensorFlow adds (``Conv1_1``, not ``bn_Conv1_1``).
    Raises ValueError when a layer has no tensor, or several.
    """
    found = {}
    for layer in layers:
        segment = re.compile(rf"(^|[/;]){re.escape(layer)}(_\d+)?/")
        matches = [name for name in tensor_names if segment.search(name)]
        if len(matches) != 1:
            raise ValueError(
                f"the layer {layer!r} to keep in float32 is {len(matches)} tensors of the "
                "quantized model, not one"
            )
        found[layer] = matches[0]
    return [found[layer] for layer in layers]


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
    with _quiet():
        return converter.convert()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Keras prints the temporary SavedModel it exports for the converter on stdout, which is
    # the command's summary: keep it for the debug log instead.
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        yield
    log.debug("TFLite converter: %s", printed.getvalue().strip())

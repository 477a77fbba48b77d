"""MobileNetV2's feature model as an ONNX graph, written from its fixed architecture.

``to_onnx(layers)`` writes the graph of ``keras.applications.MobileNetV2`` (alpha 1.0,
224x224x3, ImageNet layout) for ONNX Runtime to run on the workers.  The structure is not
read from a Keras model: it is the stem, the table of inverted-residual blocks below and
the last convolution, as Keras' ``mobilenet_v2.py`` builds them.  Only the weights come from
Keras, as numpy arrays looked up by layer name (``{layer.name: layer.get_weights()}``, public
API), so the writer needs neither Keras nor any of its private attributes: an earlier version
walked the functional graph's internals and was bound to break with a Keras release.

How each Keras layer becomes ONNX:

- Conv2D -> Conv (kernel HWIO -> OIHW); DepthwiseConv2D -> Conv with one group per channel;
- BatchNormalization -> folded into the Conv before it (in float64, rounded once);
- ZeroPadding2D -> merged into the pads of the Conv after it; Keras ``same`` padding ->
  explicit pads, placed as TensorFlow places them (the odd pixel at the end);
- ReLU(max_value=6) -> Clip(0, 6); Add -> Add;
- GlobalAveragePooling2D -> GlobalAveragePool + Flatten.

The input is NHWC ``(batch, 224, 224, 3)`` like Keras' (a Transpose to NCHW runs inside the
graph): float32 already scaled to [-1, 1], or with ``uint8_input=True`` raw RGB that the
graph scales itself.  The output is ``features`` ``(batch, 1280)``, or with ``head`` a
classifier's ``probabilities``.  The same arrays always give the same serialized bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:  # onnx is imported when a graph is written, not by the workers' import
    import onnx

#: ONNX operator set written (every operator used exists there unchanged).
OPSET = 17

#: ONNX IR version written: readable by every ONNX Runtime since 1.10.
IR_VERSION = 8

INPUT_NAME = "input"
OUTPUT_NAME = "features"
PROBABILITIES_NAME = "probabilities"

#: Side of the square input image, in pixels, and channels of the features.
INPUT_SIZE = 224
FEATURE_DIM = 1280

#: Every BatchNormalization of Keras' MobileNetV2 uses this epsilon.
BATCHNORM_EPSILON = 1e-3

#: The classifier Keras puts on top (``include_top=True``); its weights are not read.
CLASSIFIER_LAYER = "predictions"


class _Block(NamedTuple):
    """One inverted-residual block: 1x1 expand (skipped when ``expansion`` is 1),
    3x3 depthwise with ``stride``, 1x1 project to ``filters`` channels."""

    expansion: int
    stride: int
    filters: int


#: MobileNetV2's 17 inverted-residual blocks (alpha 1.0), in order: block 0 is named
#: ``expanded_conv_*`` in Keras, block i ``block_{i}_*``.
_BLOCKS = (
    _Block(1, 1, 16),
    _Block(6, 2, 24),
    _Block(6, 1, 24),
    _Block(6, 2, 32),
    _Block(6, 1, 32),
    _Block(6, 1, 32),
    _Block(6, 2, 64),
    _Block(6, 1, 64),
    _Block(6, 1, 64),
    _Block(6, 1, 64),
    _Block(6, 1, 96),
    _Block(6, 1, 96),
    _Block(6, 1, 96),
    _Block(6, 2, 160),
    _Block(6, 1, 160),
    _Block(6, 1, 160),
    _Block(6, 1, 320),
)

#: Channels out of the stem convolution ``Conv1``.
STEM_FILTERS = 32


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Return TensorFlow's ``same`` padding (before, after) along one axis, in pixels."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def correct_pad(size: int, kernel: int) -> tuple[int, int]:
    """Return the (before, after) padding Keras' ``imagenet_utils.correct_pad`` puts in the
    ZeroPadding2D before a strided depthwise convolution: one pixel less before on an even
    ``size``, so that the ``valid`` convolution after it samples the pixels ``same`` would."""
    half = kernel // 2
    return half - (1 - size % 2), half


def fold_batchnorm(
    weight: np.ndarray,
    bias: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    epsilon: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the float32 (weight, bias) of a Conv (OIHW) followed by an inference-mode
    BatchNormalization over its output channels, as one Conv."""
    scale = gamma.astype(np.float64) / np.sqrt(variance.astype(np.float64) + epsilon)
    folded_weight = weight.astype(np.float64) * scale[:, None, None, None]
    folded_bias = (bias.astype(np.float64) - mean) * scale + beta
    return folded_weight.astype(np.float32), folded_bias.astype(np.float32)


def to_onnx(
    layers: Mapping[str, Sequence[np.ndarray]],
    *,
    uint8_input: bool = False,
    head: tuple[np.ndarray, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """Return an ``onnx.ModelProto`` that computes MobileNetV2's features in inference mode
    with the weights ``layers`` (Keras layer name -> ``layer.get_weights()``).

    The input is NHWC ``(batch, 224, 224, 3)``: float32 already preprocessed (``x / 127.5 -
    1``), or with ``uint8_input`` raw RGB 0..255 as uint8, which the graph preprocesses bit
    for bit as ``fruits_pipeline.chain.images.preprocess`` does.  The output is ``features``
    ``(batch, 1280)``; with ``head = (weight (1280, n), bias (n,))`` it is ``probabilities``
    ``(batch, n)`` instead: softmax(features @ weight + bias).

    Raises ValueError naming the layer and the shapes it needs when a layer is missing or an
    array has another shape, and naming any other layer with weights the graph would not use
    (``predictions`` excepted).  The model passes ``onnx.checker.check_model``.
    """
    import onnx
    from onnx import TensorProto, helper

    writer = _GraphWriter(layers)
    if uint8_input:
        source = writer.preprocess_uint8(INPUT_NAME)
    else:
        source = INPUT_NAME
    features = writer.mobilenet_v2(source)
    unread = sorted(
        name
        for name, arrays in layers.items()
        if len(arrays) and name not in writer.read and name != CLASSIFIER_LAYER
    )
    if unread:
        raise ValueError(
            f"layer {unread[0]!r} has weights but is not part of MobileNetV2 "
            "(alpha 1.0, 224x224x3): these are not the weights of that network"
        )
    if head is None:
        output = helper.make_tensor_value_info(features, TensorProto.FLOAT, ["batch", FEATURE_DIM])
        name = "mobilenet_v2_features"
    else:
        labels = writer.classifier(features, *head)
        output = helper.make_tensor_value_info(
            PROBABILITIES_NAME, TensorProto.FLOAT, ["batch", labels]
        )
        name = "mobilenet_v2_classifier"

    input_type = TensorProto.UINT8 if uint8_input else TensorProto.FLOAT
    graph = helper.make_graph(
        writer.nodes,
        name,
        [
            helper.make_tensor_value_info(
                INPUT_NAME, input_type, ["batch", INPUT_SIZE, INPUT_SIZE, 3]
            )
        ],
        [output],
        initializer=writer.initializers,
    )
    model = helper.make_model(
        graph, producer_name="fruits-pipeline", opset_imports=[helper.make_opsetid("", OPSET)]
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def with_pixels_and_head(network: bytes, head: tuple[np.ndarray, np.ndarray]) -> onnx.ModelProto:
    """Return the feature ``network`` (ONNX bytes with ``to_onnx``'s float32 ``input`` and
    ``features``, e.g. a quantized one) as a classifier: uint8 RGB ``input`` preprocessed
    in the graph as ``to_onnx(uint8_input=True)`` does, and ``probabilities`` =
    softmax(features @ weight + bias) out.  The network's nodes and initializers are kept
    as they are."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(network)
    writer = _GraphWriter({})
    preprocessed = writer.preprocess_uint8(INPUT_NAME)
    head_start = len(writer.nodes)
    labels = writer.classifier(OUTPUT_NAME, *head)
    names = {name for node in model.graph.node for name in [*node.input, *node.output]}
    names |= {init.name for init in model.graph.initializer}
    added = {name for node in writer.nodes for name in node.output}
    added |= {init.name for init in writer.initializers}
    clash = sorted(names & (added - {OUTPUT_NAME}))
    if clash:
        raise ValueError(f"the network already has a tensor named {clash[0]!r}")
    for node in model.graph.node:
        node.input[:] = [preprocessed if name == INPUT_NAME else name for name in node.input]
    graph = helper.make_graph(
        [*writer.nodes[:head_start], *model.graph.node, *writer.nodes[head_start:]],
        model.graph.name + "_classifier",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.UINT8, ["batch", INPUT_SIZE, INPUT_SIZE, 3]
            )
        ],
        [helper.make_tensor_value_info(PROBABILITIES_NAME, TensorProto.FLOAT, ["batch", labels])],
        initializer=[*model.graph.initializer, *writer.initializers],
        value_info=list(model.graph.value_info),
    )
    classifier = helper.make_model(
        graph, producer_name="fruits-pipeline", opset_imports=list(model.opset_import)
    )
    classifier.ir_version = model.ir_version
    onnx.checker.check_model(classifier)
    return classifier


def _shapes_text(shapes: Sequence[tuple[int, ...]]) -> str:
    return "[" + ", ".join(str(tuple(shape)) for shape in shapes) + "]"


class _GraphWriter:
    """Appends ONNX nodes and initializers in a fixed order (hence fixed bytes), reading each
    layer's arrays once, with their shapes checked."""

    def __init__(self, layers: Mapping[str, Sequence[np.ndarray]]):
        from onnx import helper, numpy_helper

        self._helper, self._numpy_helper = helper, numpy_helper
        self._layers = layers
        self.read: set[str] = set()
        self.nodes: list = []
        self.initializers: list = []

    def arrays(self, layer: str, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        """Return ``layer``'s arrays, which must have exactly ``shapes``."""
        if layer not in self._layers:
            raise ValueError(
                f"layer {layer!r} is missing: MobileNetV2 needs it with arrays of shapes "
                f"{_shapes_text(shapes)}"
            )
        values = [np.asarray(value) for value in self._layers[layer]]
        found = [value.shape for value in values]
        if found != [tuple(shape) for shape in shapes]:
            raise ValueError(
                f"layer {layer!r} has arrays of shapes {_shapes_text(found)}: MobileNetV2 "
                f"needs {_shapes_text(shapes)}"
            )
        self.read.add(layer)
        return values

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self._numpy_helper.from_array(value, name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, name: str, **attributes) -> str:
        self.nodes.append(
            self._helper.make_node(op_type, inputs, [output], name=name, **attributes)
        )
        return output

    def preprocess_uint8(self, source: str) -> str:
        """Scale uint8 RGB to [-1, 1] as ``np.divide(x, float32(127.5), dtype=float32) - 1``:
        every uint8 is exact in float32 and IEEE division and subtraction round as numpy's."""
        from onnx import TensorProto

        scale = self.constant("preprocess_scale", np.array(127.5, np.float32))
        one = self.constant("preprocess_one", np.array(1.0, np.float32))
        x = self.node("Cast", [source], "input_float", "preprocess_cast", to=TensorProto.FLOAT)
        x = self.node("Div", [x, scale], "input_scaled", "preprocess_div")
        return self.node("Sub", [x, one], "preprocessed", "preprocess_sub")

    def conv_bn(
        self,
        source: str,
        conv: str,
        norm: str,
        kernel_shape: tuple[int, int, int, int],
        stride: int = 1,
        pads: tuple[int, int, int, int] = (0, 0, 0, 0),
        depthwise: bool = False,
    ) -> str:
        """Write Conv ``conv`` (Keras kernel HWIO, or HW C 1 when ``depthwise``; no bias)
        with BatchNormalization ``norm`` folded in; ``pads`` are (top, bottom, left, right).
        Returns the output's name, ``norm``.  (A 1x1 convolution needs no padding, whether
        Keras says ``same`` or ``valid``.)"""
        (kernel,) = self.arrays(conv, [kernel_shape])
        channels = kernel_shape[3] if not depthwise else kernel_shape[2]
        gamma, beta, mean, variance = self.arrays(norm, [(channels,)] * 4)
        kh, kw = kernel_shape[:2]
        if depthwise:
            weight = kernel.transpose(2, 3, 0, 1).reshape(channels, 1, kh, kw)
        else:
            weight = kernel.transpose(3, 2, 0, 1)
        weight, bias = fold_batchnorm(
            weight, np.zeros(channels), gamma, beta, mean, variance, BATCHNORM_EPSILON
        )
        top, bottom, left, right = pads
        return self.node(
            "Conv",
            [
                source,
                self.constant(conv + "_W", np.ascontiguousarray(weight)),
                self.constant(conv + "_B", bias),
            ],
            norm,
            conv,
            kernel_shape=[kh, kw],
            strides=[stride, stride],
            pads=[top, left, bottom, right],
            group=channels if depthwise else 1,
        )

    def relu6(self, source: str, name: str) -> str:
        return self.node("Clip", [source, "zero", "six"], name, name)

    def mobilenet_v2(self, source: str) -> str:
        """Write the network from ``source`` (NHWC, preprocessed) to the pooled features."""
        self.constant("zero", np.array(0.0, np.float32))  # ReLU6's bounds, for every Clip
        self.constant("six", np.array(6.0, np.float32))
        x = self.node("Transpose", [source], "input_nchw", "to_nchw", perm=[0, 3, 1, 2])
        size, channels = INPUT_SIZE, STEM_FILTERS
        before, after = same_pads(size, 3, 2)
        x = self.conv_bn(x, "Conv1", "bn_Conv1", (3, 3, 3, channels), 2, (before, after) * 2)
        x = self.relu6(x, "Conv1_relu")
        size = _output_size(size, 3, 2, before, after)

        for block_id, (expansion, stride, filters) in enumerate(_BLOCKS):
            block_input = x
            prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
            hidden = channels * expansion
            if block_id:  # Keras' block 0 has no expand convolution (its expansion is 1)
                x = self.conv_bn(
                    x, prefix + "expand", prefix + "expand_BN", (1, 1, channels, hidden)
                )
                x = self.relu6(x, prefix + "expand_relu")
            if stride == 2:  # ZeroPadding2D(correct_pad) then a "valid" depthwise
                before, after = correct_pad(size, 3)
            else:  # a "same" depthwise
                before, after = same_pads(size, 3, 1)
            x = self.conv_bn(
                x,
                prefix + "depthwise",
                prefix + "depthwise_BN",
                (3, 3, hidden, 1),
                stride,
                (before, after) * 2,
                depthwise=True,
            )
            x = self.relu6(x, prefix + "depthwise_relu")
            size = _output_size(size, 3, stride, before, after)
            x = self.conv_bn(x, prefix + "project", prefix + "project_BN", (1, 1, hidden, filters))
            if stride == 1 and channels == filters:
                x = self.node("Add", [block_input, x], prefix + "add", prefix + "add")
            channels = filters

        x = self.conv_bn(x, "Conv_1", "Conv_1_bn", (1, 1, channels, FEATURE_DIM))
        x = self.relu6(x, "out_relu")
        x = self.node("GlobalAveragePool", [x], "pooled", "global_average_pooling2d")
        return self.node("Flatten", [x], OUTPUT_NAME, "flatten", axis=1)

    def classifier(self, features: str, weight: np.ndarray, bias: np.ndarray) -> int:
        """Write softmax(features @ weight + bias) as ``probabilities``; return the number
        of labels."""
        weight, bias = np.asarray(weight), np.asarray(bias)
        labels = weight.shape[-1] if weight.ndim == 2 else 0
        if weight.shape != (FEATURE_DIM, labels) or bias.shape != (labels,) or not labels:
            raise ValueError(
                f"head has arrays of shapes {_shapes_text([weight.shape, bias.shape])}: "
                f"it needs [({FEATURE_DIM}, n_labels), (n_labels,)] with n_labels >= 1"
            )
        logits = self.node(
            "Gemm",
            [
                features,
                self.constant("head_W", np.ascontiguousarray(weight, np.float32)),
                self.constant("head_B", np.ascontiguousarray(bias, np.float32)),
            ],
            "logits",
            "head",
        )
        self.node("Softmax", [logits], PROBABILITIES_NAME, "softmax", axis=1)
        return labels


def _output_size(size: int, kernel: int, stride: int, before: int, after: int) -> int:
    return (size + before + after - kernel) // stride + 1

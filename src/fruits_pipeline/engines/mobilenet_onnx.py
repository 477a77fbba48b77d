"""MobileNetV2's feature model as an ONNX graph, written from its Keras layers and weights.

``to_onnx(features_model)`` walks the Keras functional graph (inputs first) and writes the
same function with ``onnx.helper``, for ONNX Runtime to run on the workers:

- Conv2D -> Conv (kernel HWIO -> OIHW); DepthwiseConv2D -> Conv with one group per channel;
- BatchNormalization -> folded into the Conv before it (in float64, rounded once);
- ZeroPadding2D -> merged into the pads of the Conv after it; Keras ``same`` padding ->
  explicit pads, placed as TensorFlow places them (the odd pixel at the end);
- ReLU(max_value=6) -> Clip(0, 6); Add -> Add;
- GlobalAveragePooling2D -> GlobalAveragePool + Flatten.

The graph's input is NHWC float32 ``(batch, 224, 224, 3)``, like the Keras model's (a
Transpose to NCHW runs inside the graph); its output is ``features`` ``(batch, 1280)``.
Any other layer raises ``NotImplementedError`` naming it: nothing is silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: ONNX operator set written (every operator used exists there unchanged).
OPSET = 17

INPUT_NAME = "input"
OUTPUT_NAME = "features"


@dataclass
class _Node:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict = field(default_factory=dict)
    weight: np.ndarray | None = None  # Conv only: OIHW, kept as numpy so BatchNorm can fold
    bias: np.ndarray | None = None
    name: str = ""


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Return TensorFlow's ``same`` padding (before, after) along one axis, in pixels."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


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


def to_onnx(model):
    """Return an ``onnx.ModelProto`` that computes ``model`` (a Keras functional model with
    one NHWC image input and one output) in inference mode; checked by ``onnx.checker``."""
    import keras
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise NotImplementedError("only models with one input and one output convert")
    by_depth = model._nodes_by_depth  # Keras keeps each functional node by its depth
    keras_nodes = [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]
    readers: dict[int, list] = {}
    for node in keras_nodes:
        for tensor in node.input_tensors:
            readers.setdefault(id(tensor), []).append(node)

    source, result = model.inputs[0], model.outputs[0]
    names = {id(source): "input_nchw"}
    nodes = [_Node("Transpose", [INPUT_NAME], ["input_nchw"], {"perm": [0, 3, 1, 2]})]
    conv_writing: dict[str, _Node] = {}  # tensor name -> the Conv whose output only BN reads
    pending_pads: dict[str, tuple[str, tuple[int, int, int, int]]] = {}
    constants = {
        "zero": np.float32(0.0),
        "six": np.float32(6.0),
    }

    for node in keras_nodes:
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        output = node.output_tensors[0]
        inputs = [names[id(t)] for t in node.input_tensors]
        name = OUTPUT_NAME if output is result else layer.name
        names[id(output)] = name
        config = layer.get_config()
        only_reader = len(readers.get(id(output), [])) == 1 and output is not result

        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            if config.get("activation") not in (None, "linear"):
                raise NotImplementedError(f"{layer.name}: activation inside the convolution")
            if tuple(config.get("dilation_rate", (1, 1))) != (1, 1):
                raise NotImplementedError(f"{layer.name}: dilated convolution")
            (kh, kw), (sh, sw) = config["kernel_size"], config["strides"]
            source_name, pads = inputs[0], (0, 0, 0, 0)  # top, bottom, left, right
            if source_name in pending_pads:
                source_name, pads = pending_pads[source_name]
            if config["padding"] == "same":
                _, height, width, _ = node.input_tensors[0].shape
                top, bottom = same_pads(height, kh, sh)
                left, right = same_pads(width, kw, sw)
                pads = (pads[0] + top, pads[1] + bottom, pads[2] + left, pads[3] + right)
            values = layer.get_weights()
            kernel = values[0]
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                channels, multiplier = kernel.shape[2], kernel.shape[3]
                weight = kernel.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw)
                group = channels
            else:
                weight = kernel.transpose(3, 2, 0, 1)
                group = 1
            bias = values[1] if len(values) > 1 else np.zeros(weight.shape[0], np.float32)
            conv = _Node(
                "Conv",
                [source_name],
                [name],
                {
                    "kernel_shape": [kh, kw],
                    "strides": [sh, sw],
                    "pads": [pads[0], pads[2], pads[1], pads[3]],
                    "group": group,
                },
                weight=np.ascontiguousarray(weight, np.float32),
                bias=bias.astype(np.float32),
                name=layer.name,
            )
            nodes.append(conv)
            if only_reader:
                conv_writing[name] = conv

        elif isinstance(layer, keras.layers.BatchNormalization):
            conv = conv_writing.pop(inputs[0], None)
            if conv is None or not (config["scale"] and config["center"]):
                raise NotImplementedError(f"{layer.name}: BatchNormalization not after a Conv")
            gamma, beta, mean, variance = layer.get_weights()
            conv.weight, conv.bias = fold_batchnorm(
                conv.weight, conv.bias, gamma, beta, mean, variance, config["epsilon"]
            )
            conv.outputs = [name]

        elif isinstance(layer, keras.layers.ReLU):
            if config.get("max_value") != 6.0 or config.get("negative_slope", 0.0) != 0.0:
                raise NotImplementedError(f"{layer.name}: only ReLU6 converts")
            nodes.append(_Node("Clip", [inputs[0], "zero", "six"], [name], name=layer.name))

        elif isinstance(layer, keras.layers.ZeroPadding2D):
            (top, bottom), (left, right) = config["padding"]
            if not only_reader:
                raise NotImplementedError(f"{layer.name}: padding read by several layers")
            pending_pads[name] = (inputs[0], (top, bottom, left, right))

        elif isinstance(layer, keras.layers.Add):
            if len(inputs) != 2:
                raise NotImplementedError(f"{layer.name}: Add of {len(inputs)} tensors")
            nodes.append(_Node("Add", inputs, [name], name=layer.name))

        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            if config.get("keepdims"):
                raise NotImplementedError(f"{layer.name}: keepdims")
            nodes.append(_Node("GlobalAveragePool", inputs, [name + "_pooled"], name=layer.name))
            nodes.append(_Node("Flatten", [name + "_pooled"], [name], {"axis": 1}))

        else:
            raise NotImplementedError(f"layer {layer.name} ({type(layer).__name__}) to ONNX")

    initializers = [numpy_helper.from_array(value, key) for key, value in constants.items()]
    graph_nodes = []
    for index, node in enumerate(nodes):
        inputs = list(node.inputs)
        if node.op_type == "Conv":
            initializers.append(numpy_helper.from_array(node.weight, node.name + "_W"))
            initializers.append(numpy_helper.from_array(node.bias, node.name + "_B"))
            inputs += [node.name + "_W", node.name + "_B"]
        graph_nodes.append(
            helper.make_node(
                node.op_type,
                inputs,
                node.outputs,
                name=node.name or f"{node.op_type}_{index}",
                **node.attributes,
            )
        )
    _, height, width, channels = source.shape
    graph = helper.make_graph(
        graph_nodes,
        model.name,
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", height, width, channels]
            )
        ],
        [
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, ["batch", result.shape[-1]]
            )
        ],
        initializer=initializers,
    )
    onnx_model = helper.make_model(
        graph, producer_name="fruits-pipeline", opset_imports=[helper.make_opsetid("", OPSET)]
    )
    onnx_model.ir_version = 8  # readable by every ONNX Runtime since 1.10
    onnx.checker.check_model(onnx_model)
    return onnx_model

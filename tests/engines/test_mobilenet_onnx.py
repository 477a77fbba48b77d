"""The ONNX engine: the graph written from MobileNetV2's architecture computes Keras' features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from feature_checks import assert_same_features
from image_files import jpeg_bytes, noise_image
from shared_data import SHARED_FRUITS

from fruits_pipeline.chain.images import decode_image, preprocess
from fruits_pipeline.engines.mobilenet_onnx import (
    INPUT_NAME,
    OUTPUT_NAME,
    PROBABILITIES_NAME,
    correct_pad,
    fold_batchnorm,
    same_pads,
    to_onnx,
)

#: Real ImageNet MobileNetV2 weights, shared read-only next to the project (see its README).
IMAGENET_WEIGHTS = (
    SHARED_FRUITS.parent / "mobilenet_v2_imagenet" / "mobilenet_v2_imagenet.weights.h5"
)


@pytest.mark.parametrize(
    "size, kernel, stride, pads",
    [(224, 3, 2, (0, 1)), (112, 3, 1, (1, 1)), (7, 1, 1, (0, 0)), (7, 3, 2, (1, 1))],
)
def test_same_pads_place_the_odd_pixel_at_the_end(size, kernel, stride, pads):
    assert same_pads(size, kernel, stride) == pads


def test_folded_batchnorm_equals_conv_then_batchnorm():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(8, 5, 1, 1)).astype(np.float32)  # a 1x1 conv: a matmul
    bias = rng.normal(size=8).astype(np.float32)
    gamma, beta, mean = (rng.normal(size=8).astype(np.float32) for _ in range(3))
    variance = rng.uniform(0.1, 2.0, size=8).astype(np.float32)
    pixels = rng.normal(size=(100, 5)).astype(np.float32)

    conv = pixels @ weight[:, :, 0, 0].T + bias
    expected = (conv - mean) / np.sqrt(variance + 1e-3) * gamma + beta
    folded_weight, folded_bias = fold_batchnorm(weight, bias, gamma, beta, mean, variance, 1e-3)
    assert np.allclose(pixels @ folded_weight[:, :, 0, 0].T + folded_bias, expected, atol=1e-5)


@pytest.mark.parametrize("size, kernel, pads", [(112, 3, (0, 1)), (7, 3, (1, 1))])
def test_correct_pad_is_keras_zero_padding_before_a_strided_conv(size, kernel, pads):
    assert correct_pad(size, kernel) == pads


def keras_layers(network) -> dict[str, list[np.ndarray]]:
    """The weights by layer name, as ``to_onnx`` takes them (public Keras API only)."""
    return {layer.name: layer.get_weights() for layer in network.layers}


def build_network(weights_path: Path):
    import keras

    return keras.applications.MobileNetV2(
        include_top=True, weights=str(weights_path), input_shape=(224, 224, 3)
    )


def keras_features(network, batch: np.ndarray) -> np.ndarray:
    """Keras' feature model (the layer before ``predictions``) in inference mode."""
    import keras

    features = keras.Model(network.input, network.get_layer("predictions").input)
    return features.predict(batch, batch_size=16, verbose=0)


def run_onnx(model, batch: np.ndarray) -> np.ndarray:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    (output,) = session.get_outputs()
    return np.concatenate(
        [
            session.run([output.name], {INPUT_NAME: batch[i : i + 16]})[0]
            for i in range(0, len(batch), 16)
        ]
    )


@pytest.fixture(scope="module")
def raw_images() -> np.ndarray:
    """Decoded uint8 RGB images: real Fruits-360 JPEGs (read in place) where the shared
    sample is present, and noise images of odd sizes."""
    contents = [p.read_bytes() for p in sorted(SHARED_FRUITS.glob("Test/*/*.jpg"))[::60][:40]]
    contents += [jpeg_bytes(noise_image(seed, size=(64 + seed, 120))) for seed in range(8)]
    return np.stack([decode_image(content) for content in contents])


@pytest.fixture(scope="module")
def seeded_network(weights_files):
    return build_network(weights_files["legacy"])


@pytest.fixture(scope="module")
def seeded_layers(seeded_network) -> dict[str, list[np.ndarray]]:
    return keras_layers(seeded_network)


def test_the_graph_computes_keras_features_on_seeded_weights(seeded_network, raw_images):
    batch = preprocess(raw_images)
    model = to_onnx(keras_layers(seeded_network))
    assert_same_features(run_onnx(model, batch), keras_features(seeded_network, batch))


def test_the_graph_computes_keras_features_on_imagenet_weights(raw_images):
    if not IMAGENET_WEIGHTS.is_file():
        pytest.skip(f"real ImageNet weights not found at {IMAGENET_WEIGHTS} (see its README)")
    network = build_network(IMAGENET_WEIGHTS)
    layers = keras_layers(network)
    batch = preprocess(raw_images)
    assert_same_features(run_onnx(to_onnx(layers), batch), keras_features(network, batch))

    # Keras' own classifier as the head gives Keras' own probabilities.
    probabilities = run_onnx(to_onnx(layers, head=tuple(layers["predictions"])), batch)
    expected = network.predict(batch, batch_size=16, verbose=0)
    assert np.abs(probabilities - expected).max() <= 1e-4


def test_the_signature_is_nhwc_images_in_and_features_out_for_any_batch(seeded_layers):
    from onnx import TensorProto

    model = to_onnx(seeded_layers)
    (source,), (result,) = model.graph.input, model.graph.output
    assert source.name == INPUT_NAME and result.name == OUTPUT_NAME
    assert source.type.tensor_type.elem_type == TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in source.type.tensor_type.shape.dim]
    assert dims == ["batch", 224, 224, 3]
    assert [d.dim_param or d.dim_value for d in result.type.tensor_type.shape.dim] == [
        "batch",
        1280,
    ]
    assert model.opset_import[0].version == 17 and model.ir_version == 8
    for size in (1, 3):
        assert run_onnx(model, np.zeros((size, 224, 224, 3), np.float32)).shape == (size, 1280)


def test_uint8_input_is_preprocessed_inside_the_graph(seeded_layers, raw_images):
    import onnx.shape_inference
    import onnx.utils

    model = to_onnx(seeded_layers, uint8_input=True)
    (source,) = model.graph.input
    assert source.type.tensor_type.elem_type == onnx.TensorProto.UINT8

    # The scaling alone, on every uint8 value: bit for bit what preprocess gives.
    (sub,) = [node for node in model.graph.node if node.op_type == "Sub"]
    typed = onnx.shape_inference.infer_shapes(model)  # the extractor needs the tensor types
    scaling = onnx.utils.Extractor(typed).extract_model([INPUT_NAME], list(sub.output))
    every_value = np.resize(np.arange(256, dtype=np.uint8), (1, 224, 224, 3))
    assert np.array_equal(run_onnx(scaling, every_value), preprocess(every_value))

    ours = run_onnx(model, raw_images)
    theirs = run_onnx(to_onnx(seeded_layers), preprocess(raw_images))
    assert np.abs(ours - theirs).max() <= 1e-6 * np.abs(theirs).max()


def test_the_head_gives_softmax_probabilities(seeded_layers, raw_images):
    rng = np.random.default_rng(3)
    weight = (rng.normal(size=(1280, 5)) * 0.05).astype(np.float32)
    bias = rng.normal(size=5).astype(np.float32)
    model = to_onnx(seeded_layers, head=(weight, bias))
    (result,) = model.graph.output
    assert result.name == PROBABILITIES_NAME
    assert [d.dim_param or d.dim_value for d in result.type.tensor_type.shape.dim] == [
        "batch",
        5,
    ]

    batch = preprocess(raw_images)
    features = run_onnx(to_onnx(seeded_layers), batch).astype(np.float64)
    logits = features @ weight + bias
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    probabilities = run_onnx(model, batch)
    assert np.abs(probabilities - expected).max() <= 1e-6
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("uint8_input, with_head", [(False, False), (True, False), (False, True)])
def test_the_same_weights_give_the_same_bytes(seeded_layers, uint8_input, with_head):
    """The job fingerprints the network by the sha256 of these bytes."""
    options = {"uint8_input": uint8_input}
    if with_head:
        rng = np.random.default_rng(0)
        options["head"] = (rng.normal(size=(1280, 3)).astype(np.float32), np.zeros(3))
    first = to_onnx(seeded_layers, **options).SerializeToString()
    assert to_onnx(seeded_layers, **options).SerializeToString() == first
    reordered = dict(reversed(list(seeded_layers.items())))  # looked up by name, not order
    assert to_onnx(reordered, **options).SerializeToString() == first

    changed = dict(seeded_layers)
    gamma, *rest = changed["block_7_project_BN"]
    changed["block_7_project_BN"] = [gamma * 2, *rest]
    assert to_onnx(changed, **options).SerializeToString() != first


def test_a_missing_layer_is_named_with_the_shapes_it_needs(seeded_layers):
    layers = {
        name: arrays for name, arrays in seeded_layers.items() if name != "block_5_project_BN"
    }
    with pytest.raises(ValueError, match=r"'block_5_project_BN' is missing.*\(32,\)") as error:
        to_onnx(layers)
    assert "\n" not in str(error.value)


def test_a_wrongly_shaped_array_is_named_with_the_shape_it_needs(seeded_layers):
    layers = dict(seeded_layers)
    layers["block_3_expand"] = [np.zeros((1, 1, 24, 100), np.float32)]
    with pytest.raises(ValueError, match=r"'block_3_expand'.*\(1, 1, 24, 144\)") as error:
        to_onnx(layers)
    assert "\n" not in str(error.value)


def test_weights_of_another_network_are_refused(seeded_layers):
    layers = {**seeded_layers, "extra_dense": [np.zeros((4, 4), np.float32)]}
    with pytest.raises(ValueError, match="'extra_dense'"):
        to_onnx(layers)


def test_a_wrongly_shaped_head_is_refused(seeded_layers):
    with pytest.raises(ValueError, match=r"head.*\(1280, n_labels\)"):
        to_onnx(seeded_layers, head=(np.zeros((1000, 1280), np.float32), np.zeros(1280)))

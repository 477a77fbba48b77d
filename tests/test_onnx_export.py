"""The ONNX engine: the converted network computes TensorFlow's features."""

from __future__ import annotations

import numpy as np
import pytest
from image_files import jpeg_bytes, noise_image
from shared_data import SHARED_FRUITS

from fruits_pipeline.chain.images import decode_image, preprocess
from fruits_pipeline.chain.weights import (
    cached_extractor,
    load_weights,
    network_payload,
    parse_weights_spec,
)
from fruits_pipeline.engines.mobilenet_onnx import fold_batchnorm, same_pads, to_onnx


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


def test_an_unsupported_layer_is_named():
    import keras

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.MaxPooling2D(name="the_pool")(inputs))
    with pytest.raises(NotImplementedError, match="the_pool"):
        to_onnx(model)


def test_onnxruntime_features_equal_tensorflow_features(weights_files):
    """Both engines on the same decoded images: real Fruits-360 JPEGs where the shared
    sample is present, and noise images of other sizes."""
    contents = [p.read_bytes() for p in sorted(SHARED_FRUITS.glob("Test/*/*.jpg"))[::60][:40]]
    contents += [jpeg_bytes(noise_image(seed, size=(64 + seed, 120))) for seed in range(8)]
    batch = preprocess(np.stack([decode_image(content) for content in contents]))

    weights = load_weights(parse_weights_spec(str(weights_files["legacy"])))
    features = {}
    for engine in ("onnxruntime", "tensorflow"):
        payload = network_payload(weights, engine)
        extract, built = cached_extractor(weights.arrays_sha256, lambda p=payload: p, 2, engine)
        assert built
        features[engine] = np.concatenate(
            [extract(batch[i : i + 16]) for i in range(0, len(batch), 16)]
        )

    ours, theirs = features["onnxruntime"], features["tensorflow"]
    assert ours.shape == theirs.shape == (len(contents), 1280)
    assert np.abs(theirs).mean() > 0.01  # realistic magnitudes
    cosine = np.sum(ours * theirs, axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    assert cosine.min() >= 0.9999, cosine.min()
    assert np.abs(ours - theirs).max() <= 1e-3 * np.abs(theirs).max()

"""Pure image functions: extensions, labels, decoding, preprocessing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from image_files import bomb_png, jpeg_bytes, noise_image, png_bytes
from PIL import Image

from fruits_pipeline.chain.images import (
    ImageDecodeError,
    decode_image,
    is_image_path,
    label_from_path,
    preprocess,
    reject_reason,
)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("a/b/r_1_100.jpg", True),
        ("a/b/IMG.JPG", True),
        ("a/b/x.Jpeg", True),
        ("a/b/x.png", True),
        ("a/b/x.PNG", True),
        ("a/b/x.gif", False),
        ("a/b/x.jpg.txt", False),
        ("a/b/jpg", False),
    ],
)
def test_is_image_path(path, expected):
    assert is_image_path(path) is expected


@pytest.mark.parametrize(
    "path, label",
    [
        ("/data/Training/Apple Braeburn/r_12_100.jpg", "Apple Braeburn"),
        ("file:/data/Training/Apple Braeburn/r_12_100.jpg", "Apple Braeburn"),
        ("file:///data/Test/Pineapple Mini/45_100.jpg", "Pineapple Mini"),
        ("s3://my-bucket/fruits/Training/Apple Braeburn/r_12_100.jpg", "Apple Braeburn"),
        ("s3a://my-bucket/Test/Pêche plate/1.png", "Pêche plate"),
        ("s3://my-bucket/Kiwi/1.jpg", "Kiwi"),
        ("s3://my-bucket/at-root.jpg", ""),
        ("relative/Cherry 2/3.jpg", "Cherry 2"),
        # As Spark writes paths: never percent-decoded, no query, fragment or line ends
        ("file:/in/100% #1 ?q/1.jpg", "100% #1 ?q"),
        ("file:/in/%41%2F/1.jpg", "%41%2F"),
        ("s3://b/line\nfeed\r\u2028/1.jpg", "line\nfeed\r\u2028"),
        ("file:/in/ctl\x01\t\x7f/1.jpg", "ctl\x01\t\x7f"),
        ("file:/in/colon:x/1.jpg", "colon:x"),
    ],
)
def test_label_is_parent_folder_name(path, label):
    assert label_from_path(path) == label


def test_decode_jpeg_to_model_input_size():
    image = noise_image(1, size=(100, 100))
    array = decode_image(jpeg_bytes(image))
    assert array.shape == (224, 224, 3) and array.dtype == np.uint8
    expected = np.asarray(
        Image.open(io.BytesIO(jpeg_bytes(image))).convert("RGB").resize((224, 224))
    )
    assert np.array_equal(array, expected)  # Pillow's default bicubic, as the notebook


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_decode_converts_other_modes_to_rgb(mode):
    image = noise_image(2).convert(mode)
    content = jpeg_bytes(image) if mode == "CMYK" else png_bytes(image)
    assert decode_image(content).shape == (224, 224, 3)


def test_exif_orientation_is_honoured():
    stored = Image.new("RGB", (200, 100), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 100, 100))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: left becomes top
    array = decode_image(jpeg_bytes(stored, exif=exif.tobytes())).astype(int)
    top, bottom = array[20, 112], array[200, 112]
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (b"hello, I am text with a .jpg name\n", "not_an_image"),
        (bomb_png(), "decompression_bomb"),
    ],
)
def test_undecodable_inputs_raise_with_a_reason(content, reason):
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(content)
    assert caught.value.reason == reason
    assert reject_reason(str(caught.value)) == reason


def test_truncated_jpeg_is_corrupt():
    content = jpeg_bytes(noise_image(3))
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(content[: len(content) // 3])
    assert caught.value.reason == "corrupt"


def test_reject_reason_defaults_to_corrupt():
    assert reject_reason("something odd happened") == "corrupt"


def test_preprocess_scales_to_minus_one_one():
    batch = np.array([[[[0, 127.5, 255]]]], dtype=np.uint8)
    scaled = preprocess(np.full((1, 2, 2, 3), 255, dtype=np.uint8))
    assert scaled.dtype == np.float32 and np.allclose(scaled, 1.0)
    assert np.allclose(preprocess(batch)[0, 0, 0], [-1.0, 127 / 127.5 - 1, 1.0])


def test_preprocess_is_keras_preprocess_input_bit_for_bit():
    from keras.applications.mobilenet_v2 import preprocess_input

    batch = np.random.default_rng(0).integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    expected = preprocess_input(batch.astype(np.float32))
    assert np.array_equal(preprocess(batch), expected)


def test_sixteen_bit_png_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 100, dtype=np.uint16), (100, 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode.startswith("I")
    array = decode_image(buffer.getvalue()).astype(int)
    assert array[:, :20].mean() < 60 and array[:, -20:].mean() > 200  # dark to light
    assert 100 < array.mean() < 155  # a ramp, not a white image


def test_progressive_and_very_large_jpegs():
    progressive = jpeg_bytes(noise_image(8, size=(300, 200)), progressive=True)
    assert decode_image(progressive).shape == (224, 224, 3)
    large = jpeg_bytes(noise_image(9, size=(6000, 4000)), quality=70)
    assert decode_image(large).shape == (224, 224, 3)

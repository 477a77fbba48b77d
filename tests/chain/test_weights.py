"""Weights sources: parsing --weights, loading each kind on the driver, clear failures."""

from __future__ import annotations

import shutil

import pytest

from fruits_pipeline.chain.weights import (
    IMAGENET_FILE,
    WeightsError,
    WeightsSpec,
    check_weights_spec,
    load_weights,
    parse_weights_spec,
    sha256_file,
)

pytestmark = pytest.mark.networks_built_here


@pytest.mark.parametrize(
    "text, spec",
    [
        ("imagenet", WeightsSpec("imagenet")),
        ("random", WeightsSpec("random", seed=0)),
        ("random:42", WeightsSpec("random", seed=42)),
        ("/models/w.h5", WeightsSpec("file", location="/models/w.h5")),
        ("s3://bucket/w.weights.h5", WeightsSpec("file", location="s3://bucket/w.weights.h5")),
    ],
)
def test_parse_weights_spec(text, spec):
    assert parse_weights_spec(text) == spec


@pytest.mark.parametrize("text", ["", "random:abc", "random:1.5"])
def test_parse_weights_spec_rejects(text):
    with pytest.raises(WeightsError):
        parse_weights_spec(text)


def test_check_rejects_missing_file_and_wrong_extension(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        check_weights_spec(parse_weights_spec(str(tmp_path / "missing.h5")))
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(WeightsError, match="must be a Keras HDF5 file"):
        check_weights_spec(parse_weights_spec(str(other)))
    with pytest.raises(WeightsError, match="is not a file"):
        (tmp_path / "folder.h5").mkdir()
        check_weights_spec(parse_weights_spec(str(tmp_path / "folder.h5")))


def test_both_file_formats_load_the_same_weights(weights_files):
    legacy = load_weights(parse_weights_spec(str(weights_files["legacy"])))
    keras3 = load_weights(parse_weights_spec(str(weights_files["keras3"])))
    assert legacy.arrays_sha256 == keras3.arrays_sha256
    assert legacy.file_sha256 == sha256_file(str(weights_files["legacy"]))
    assert keras3.file_sha256 == sha256_file(str(weights_files["keras3"]))
    assert len(legacy.arrays) == 262 and legacy.meaningful


def test_imagenet_uses_keras_cache_without_download(weights_files, tmp_path, monkeypatch):
    # Keras looks in $KERAS_HOME/models before downloading: the real loading code runs,
    # and finds the file a previous download (here: the test) left there.
    (tmp_path / "models").mkdir()
    shutil.copy(weights_files["legacy"], tmp_path / "models" / IMAGENET_FILE)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    imagenet = load_weights(WeightsSpec("imagenet"))
    from_file = load_weights(parse_weights_spec(str(weights_files["legacy"])))
    assert imagenet.file_sha256 == from_file.file_sha256
    assert imagenet.arrays_sha256 == from_file.arrays_sha256
    assert imagenet.spec.describe() == "imagenet"


def test_wrong_architecture_is_a_clear_error(wrong_weights_file):
    with pytest.raises(WeightsError, match="do not fit MobileNetV2") as caught:
        load_weights(parse_weights_spec(str(wrong_weights_file)))
    assert "\n" not in str(caught.value)


def test_random_weights_are_seeded_and_flagged():
    first = load_weights(parse_weights_spec("random:3"))
    again = load_weights(parse_weights_spec("random:3"))
    other = load_weights(parse_weights_spec("random:4"))
    assert first.arrays_sha256 == again.arrays_sha256 != other.arrays_sha256
    assert not first.meaningful and first.file_sha256 is None

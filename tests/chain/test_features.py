"""Feature extraction on a real local SparkSession: labels, fidelity to Keras, bad images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from image_files import jpeg_bytes, noise_image, png_bytes
from PIL import Image
from shared_data import SHARED_FRUITS

from fruits_pipeline import engines
from fruits_pipeline.chain.extract import (
    STORED_SCHEMA,
    ExtractionCounters,
    broadcast_network,
    featurize_batch,
    featurize_units,
)
from fruits_pipeline.chain.images import decode_image, label_from_path, preprocess
from fruits_pipeline.chain.listing import label_column, read_images
from fruits_pipeline.chain.weights import load_weights, parse_weights_spec

pytestmark = pytest.mark.spark


def test_spark_label_column_agrees_with_label_from_path(spark):
    paths = [
        "file:/data/Training/Apple Braeburn/r_12_100.jpg",
        "file:///data/Test/Pineapple Mini/45_100.jpg",
        "s3://bucket/fruits/Training/Pêche plate/1.jpg",
        "s3a://bucket/Kiwi/2.png",
        "s3://bucket/at-root.jpg",
        "/plain/Cherry 2/3.jpg",
        "file:/in/line\nfeed\r\x85\u2028/1.jpg",
        "file:/in/100% #1 ?q [a]*/1.jpg",
    ]
    frame = spark.createDataFrame([(p,) for p in paths], "path string")
    got = [row[0] for row in frame.select(label_column("path")).collect()]
    assert got == [label_from_path(p) for p in paths]


@pytest.fixture(scope="module")
def fidelity_folder(tmp_path_factory) -> Path:
    """A few images: real Fruits-360 JPEGs when the shared sample is there, plus a PNG with
    alpha and a larger JPEG made here."""
    root = tmp_path_factory.mktemp("fidelity")
    label = root / "Mixed Fruit"
    label.mkdir()
    shared = sorted((SHARED_FRUITS / "Test").glob("*/*.jpg"))[::400][:4]
    for path in shared:
        (label / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    (label / "alpha.png").write_bytes(png_bytes(noise_image(5).convert("RGBA")))
    (label / "large.JPEG").write_bytes(jpeg_bytes(noise_image(6, size=(640, 480))))
    (label / "small.jpg").write_bytes(jpeg_bytes(noise_image(7, size=(60, 90))))
    return root


def featurized_rows(spark, images, network, counters, batch_size: int, folder: Path) -> list:
    """Run the extraction over ``images`` into units under ``folder``; return the rows the
    units hold, checking that the workers' summaries name exactly those units and their rows."""
    import pyarrow.parquet as pq

    units = featurize_units(images, network, counters, batch_size, str(folder)).collect()
    rows = spark.read.schema(STORED_SCHEMA).parquet(str(folder)).collect()
    assert sorted(u["unit"] for u in units) == sorted(p.name for p in folder.glob("unit-*"))
    assert all(pq.read_metadata(folder / u["unit"]).num_rows == u["rows"] for u in units)
    assert sum(u["rows"] for u in units) == len(rows)
    return rows


def keras_reference(weights_path: Path, image_paths: list[str]) -> np.ndarray:
    """Features computed by Keras directly: same file, Pillow RGB, resize, preprocess_input."""
    import keras

    network = keras.applications.MobileNetV2(
        include_top=True, weights=str(weights_path), input_shape=(224, 224, 3)
    )
    features = keras.Model(network.input, network.layers[-2].output)
    batch = np.stack(
        [
            np.asarray(Image.open(path).convert("RGB").resize((224, 224)), dtype=np.float32)
            for path in image_paths
        ]
    )
    return features.predict(keras.applications.mobilenet_v2.preprocess_input(batch), verbose=0)


@pytest.mark.parametrize(
    "weights_format, engine",
    [("legacy", "onnxruntime"), ("keras3", "onnxruntime"), ("legacy", "tensorflow")],
)
def test_features_equal_keras_on_the_same_weights(
    spark, tmp_path, weights_files, fidelity_folder, weights_format, engine
):
    weights = load_weights(parse_weights_spec(str(weights_files[weights_format])))
    network = broadcast_network(spark, engines.get(engine), weights)
    counters = ExtractionCounters.create(spark)
    images = read_images(spark, "file:" + str(fidelity_folder))
    rows = featurized_rows(spark, images, network, counters, 4, tmp_path / "units")
    rows = sorted(rows, key=lambda row: row["path"])

    assert all(row["error"] is None for row in rows)
    assert {row["label"] for row in rows} == {"Mixed Fruit"}
    local_paths = [row["path"][len("file:") :] for row in rows]
    ours = np.array([row["features"] for row in rows], dtype=np.float32)
    theirs = keras_reference(weights_files[weights_format], local_paths)
    assert ours.shape == (len(rows), 1280)
    assert np.abs(theirs).mean() > 0.01  # realistic magnitudes, not ~1e-11
    cosine = np.sum(ours * theirs, axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    assert cosine.min() >= 0.9999, cosine
    assert counters.images_inferred.value == len(rows)
    network.broadcast.unpersist()


def fingerprint(batch: np.ndarray) -> np.ndarray:
    """A stand-in network: 1280 values per image that depend on that image alone."""
    flat = batch.reshape(len(batch), -1)
    return flat[:, :: flat.shape[1] // 1280][:, :1280] + flat.mean(axis=1, keepdims=True)


def test_each_image_keeps_its_own_features_when_a_batch_holds_bad_ones():
    import pandas as pd

    good = [jpeg_bytes(noise_image(seed)) for seed in range(5)]
    truncated = good[0][: len(good[0]) // 3]
    contents = [good[0], b"not an image", good[1], b"", good[2], truncated, good[3], good[4]]
    frame = featurize_batch(pd.Series(contents), fingerprint)

    assert list(frame.columns) == ["features", "error"] and len(frame) == len(contents)
    for position, content in enumerate(contents):
        row = frame.iloc[position]
        if content in good:
            expected = fingerprint(preprocess(decode_image(content)[None]))[0]
            assert row["error"] is None
            assert np.array_equal(row["features"], expected), f"row {position}: another image's"
        else:
            assert row["features"] is None and row["error"]


def test_bad_images_become_error_rows(spark, tmp_path, mixed_folder):
    weights = load_weights(parse_weights_spec("random:1"))
    network = broadcast_network(spark, engines.get("onnxruntime"), weights)
    counters = ExtractionCounters.create(spark)
    images = read_images(spark, "file:" + str(mixed_folder))
    rows = {
        Path(r["path"]).name: r
        for r in featurized_rows(spark, images, network, counters, 3, tmp_path / "units")
    }

    assert "README.txt" not in rows  # not an image extension: never read
    assert rows["truncated.jpg"]["error"].startswith("corrupt:")
    assert "empty.jpg" not in rows  # Spark's scan skips 0-byte files; the job reports them
    assert rows["notes.JPG"]["error"].startswith("not_an_image:")
    assert rows["bomb.png"]["error"].startswith("decompression_bomb:")
    good = [r for name, r in rows.items() if name.endswith("_100.jpg")]
    assert len(good) == 6
    assert all(r["error"] is None for r in good)
    # Each good image carries its own features: the network run on that image alone.
    extract = network.engine.extractor(network.broadcast.value, 1)
    for row in good:
        with open(row["path"][len("file:") :], "rb") as handle:
            alone = extract(preprocess(decode_image(handle.read())[None]))[0]
        assert np.allclose(row["features"], alone, atol=1e-5), row["path"]
    assert {r["label"] for r in good} == {"Apple Braeburn", "Pêche plate"}
    assert all(rows[n]["features"] is None for n in ("truncated.jpg", "notes.JPG", "bomb.png"))
    assert counters.images_inferred.value == 6
    network.broadcast.unpersist()

"""The engine seam: the registry, the per-worker cache, and both engines computing the same
features from the same weights."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from feature_checks import assert_same_features
from image_files import jpeg_bytes, noise_image
from shared_data import SHARED_FRUITS

from fruits_pipeline import engines
from fruits_pipeline.chain.images import decode_image, preprocess
from fruits_pipeline.chain.weights import load_weights, parse_weights_spec
from fruits_pipeline.engines.base import WorkerCache
from fruits_pipeline.errors import BadInput


def test_the_registry_names_each_engine_once():
    assert engines.DEFAULT_ENGINE in engines.ENGINES
    assert all(name == engine.name for name, engine in engines.ENGINES.items())
    for engine in engines.ENGINES.values():
        assert engine.summary and engine.worker_memory_mb > 0
    with pytest.raises(BadInput, match="unknown inference engine 'tpu'.*onnxruntime"):
        engines.get("tpu")


def test_the_worker_cache_builds_once_per_key_and_keeps_one():
    cache = WorkerCache()
    builds = []

    def build(tag):
        def make():
            builds.append(tag)
            return lambda batch: tag

        return make

    first, built = cache.get("a", build("a"))
    assert built and first(None) == "a"
    again, built = cache.get("a", build("never"))
    assert not built and again is first
    other, built = cache.get("b", build("b"))
    assert built and other(None) == "b"
    _, built = cache.get("a", build("a2"))  # one network per worker: "a" was replaced
    assert built and builds == ["a", "b", "a2"]


def test_the_worker_cache_builds_once_under_concurrent_tasks():
    cache, builds = WorkerCache(), []

    def slow_build():
        builds.append(1)
        threading.Event().wait(0.05)
        return lambda batch: batch

    threads = [threading.Thread(target=cache.get, args=("k", slow_build)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds == [1]


def test_a_failed_build_leaves_nothing_cached():
    cache = WorkerCache()

    def broken():
        raise RuntimeError("no network")

    with pytest.raises(RuntimeError):
        cache.get("k", broken)
    extract, built = cache.get("k", lambda: (lambda batch: 1))
    assert built and extract(None) == 1


def test_onnxruntime_features_equal_tensorflow_features(weights_files):
    """Both engines on the same decoded images: real Fruits-360 JPEGs where the shared
    sample is present, and noise images of other sizes."""
    contents = [p.read_bytes() for p in sorted(SHARED_FRUITS.glob("Test/*/*.jpg"))[::60][:40]]
    contents += [jpeg_bytes(noise_image(seed, size=(64 + seed, 120))) for seed in range(8)]
    batch = preprocess(np.stack([decode_image(content) for content in contents]))

    weights = load_weights(parse_weights_spec(str(weights_files["legacy"])))
    features = {}
    for name in ("onnxruntime", "tensorflow"):
        engine = engines.get(name)
        extract = engine.extractor(engine.prepare(weights).payload, 2)
        features[name] = np.concatenate(
            [extract(batch[i : i + 16]) for i in range(0, len(batch), 16)]
        )

    assert len(features["onnxruntime"]) == len(contents)
    assert_same_features(features["onnxruntime"], features["tensorflow"])

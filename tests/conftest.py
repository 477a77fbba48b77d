"""Shared fixtures: one local SparkSession, seeded weights files, real image files."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from image_files import bomb_png, jpeg_bytes, noise_image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

#: Seed of the MobileNetV2 the tests save as weights files.
TEST_WEIGHTS_SEED = 7


@pytest.fixture(scope="session")
def network_cache(tmp_path_factory) -> Path:
    """The folder where this session keeps each network it built (tests/networks.py)."""
    return tmp_path_factory.mktemp("networks")


@pytest.fixture(autouse=True)
def networks_built_once(request, network_cache, monkeypatch):
    """Every test's runs take their networks from the session's cache, except the tests of
    the building itself (marked ``networks_built_here``)."""
    if request.node.get_closest_marker("networks_built_here") is None:
        import networks

        networks.install(network_cache, monkeypatch.setattr)


@pytest.fixture(scope="session")
def resume_source(tmp_path_factory) -> Path:
    """The input of the killed runs (tests/killed_runs.py)."""
    from killed_runs import write_resume_source

    return write_resume_source(tmp_path_factory.mktemp("resume") / "images")


@pytest.fixture(scope="session", autouse=True)
def killed_runs(request, resume_source, network_cache, tmp_path_factory):
    """The killed runs the session's selected tests take, started in the background as the
    session begins (tests/killed_runs.py), from a network built here once."""
    from killed_runs import RESUME_WEIGHTS, KilledRuns, selected_kills

    kills = selected_kills(request.session.items)
    if kills:
        import networks

        networks.build(network_cache, RESUME_WEIGHTS)
    runs = KilledRuns(kills, resume_source, network_cache, tmp_path_factory.mktemp("killed"))
    yield runs
    runs.close()


@pytest.fixture(scope="session")
def spark():
    """The one local SparkSession of the test session: 2 cores, a failed task retried once
    (as on a cluster, where tasks are retried), no UI."""
    from fruits_pipeline.session import build_spark

    session = build_spark(
        "local[2,2]",
        app_name="fruits-pipeline-tests",
        extra_conf={
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.shuffle.partitions": "4",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def moto_endpoint():
    """URL of a moto server on 127.0.0.1, with fake credentials in the environment, so that
    boto3 and s3fs talk to it through ``AWS_ENDPOINT_URL`` exactly as they would to AWS."""
    from s3_server import start_moto_server

    process, url = start_moto_server()
    patch = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        patch.setenv(name, value)
    yield url
    patch.undo()
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def bucket(moto_endpoint, request) -> str:
    """A new bucket on the moto server, named after the test."""
    import boto3
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    name = "fruits-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    return name


@pytest.fixture(scope="session")
def weights_files(tmp_path_factory) -> dict[str, Path]:
    """A seeded MobileNetV2 (with top, BatchNorm calibrated) saved in both formats Keras
    reads: the legacy HDF5 of ``weights="imagenet"`` and Keras 3's ``.weights.h5``."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from fruits_pipeline.chain.weights import random_network

    folder = tmp_path_factory.mktemp("weights")
    network = random_network(TEST_WEIGHTS_SEED)
    legacy = folder / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"
    with h5py.File(legacy, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, network)
    keras3 = folder / "seeded_mobilenet_v2.weights.h5"
    network.save_weights(str(keras3))
    return {"legacy": legacy, "keras3": keras3}


@pytest.fixture(scope="session")
def small_run(spark, tmp_path_factory, weights_files):
    """The session's small real run (tests/results_run.py), as ``run`` wrote it: tests read
    it, and copy it before they change anything."""
    from results_run import make_small_run

    return make_small_run(tmp_path_factory.mktemp("small-run"), weights_files["legacy"])


@pytest.fixture(scope="session")
def trained_run(small_run, tmp_path_factory):
    """A copy of the small run, trained (tests/classifier_run.py)."""
    from classifier_run import train_copy

    return train_copy(small_run, tmp_path_factory.mktemp("trained-run"))


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
    """The trained run's export (tests/classifier_run.py)."""
    from classifier_run import export_run

    return export_run(trained_run, tmp_path_factory.mktemp("export") / "models")


@pytest.fixture(scope="session")
def wrong_weights_file(tmp_path_factory) -> Path:
    """A Keras weights file of another network (a small dense model)."""
    import keras

    path = tmp_path_factory.mktemp("wrong") / "dense.weights.h5"
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model.save_weights(str(path))
    return path


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Six good JPEGs in two labels plus one file of each rejection reason, and a text
    file that is not an image at all (ignored)."""
    root = tmp_path / "mixed"
    for index in range(6):
        label = root / ("Apple Braeburn" if index % 2 else "Pêche plate")
        label.mkdir(parents=True, exist_ok=True)
        (label / f"{index}_100.jpg").write_bytes(jpeg_bytes(noise_image(index)))
    bad = root / "Apple Braeburn"
    good = jpeg_bytes(noise_image(99))
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.JPG").write_text("this is not an image\n")
    (bad / "bomb.png").write_bytes(bomb_png())
    (bad / "README.txt").write_text("ignored: not an image extension\n")
    return root

"""Step 2 of the job: MobileNetV2's weights, loaded once on the driver.

Where the weights come from (``imagenet`` through Keras' own download, a weights file local
or on S3, or seeded ``random`` weights for offline runs) and how they are read: Keras builds
``MobileNetV2(include_top=True)`` from them, which also checks the architecture.  What the
workers get is the engine's business (``fruits_pipeline.engines``): it receives the loaded
weights as arrays, in Keras' order and by layer name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from fruits_pipeline.chain.images import MODEL_INPUT_SIZE
from fruits_pipeline.errors import BadInput, first_line
from fruits_pipeline.results.report import WeightsFacts
from fruits_pipeline.results.storage import local_path

log = logging.getLogger(__name__)

#: Length of one feature vector: MobileNetV2's global average pooling output.
FEATURE_DIM = 1280

#: The file Keras downloads for ``MobileNetV2(weights="imagenet", include_top=True)``.
IMAGENET_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"
IMAGENET_ORIGIN = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + IMAGENET_FILE
)

#: Number of synthetic images used to set BatchNorm statistics in ``random`` mode.
CALIBRATION_IMAGES = 8


class WeightsError(BadInput):
    """Weights that cannot be used: missing, unreadable, or for another network."""


@dataclass(frozen=True)
class WeightsSpec:
    """Where the weights come from: ``kind`` is "imagenet", "file" or "random"."""

    kind: str
    location: str | None = None
    seed: int | None = None

    def describe(self) -> str:
        """Return the spec as the user wrote it (``imagenet``, a path, ``random:SEED``)."""
        if self.kind == "random":
            return f"random:{self.seed}"
        return self.location or self.kind


@dataclass
class LoadedWeights:
    """Weights loaded on the driver, ready for an engine to prepare what it broadcasts."""

    spec: WeightsSpec
    #: every weight array of the network with its classifier, in Keras' order
    arrays: list[np.ndarray]
    #: the same arrays by Keras layer name (``Conv1``: [kernel], ``bn_Conv1``: [gamma, …])
    layers: dict[str, list[np.ndarray]] = field(repr=False)
    file_sha256: str | None
    arrays_sha256: str
    seconds: float = 0.0

    @property
    def meaningful(self) -> bool:
        """False for seeded random weights, whose features carry no meaning."""
        return self.spec.kind != "random"

    def facts(self) -> WeightsFacts:
        """Return the report's weights section: the source and its fingerprints."""
        return WeightsFacts(
            source=self.spec.describe(),
            kind=self.spec.kind,
            meaningful=self.meaningful,
            file_sha256=self.file_sha256,
            arrays_sha256=self.arrays_sha256,
        )


def parse_weights_spec(text: str) -> WeightsSpec:
    """Parse ``--weights``: ``imagenet``, ``random``, ``random:SEED``, a path or an ``s3://`` URI.

    Raises WeightsError for a malformed seed or an empty value.  Whether a file exists is
    checked by ``check_weights_spec``.
    """
    value = text.strip()
    if not value:
        raise WeightsError("--weights is empty: use imagenet, a weights file, or random:SEED")
    if value == "imagenet":
        return WeightsSpec("imagenet")
    if value == "random" or value.startswith("random:"):
        seed_text = value.partition(":")[2] or "0"
        try:
            seed = int(seed_text)
        except ValueError:
            raise WeightsError(
                f"--weights {value}: the seed after 'random:' must be a whole number"
            ) from None
        return WeightsSpec("random", seed=seed)
    return WeightsSpec("file", location=value)


def check_weights_spec(spec: WeightsSpec) -> None:
    """Fail early, before Spark starts, on a local weights file that cannot be used.

    Raises WeightsError when the file does not exist, is a folder, or has an extension Keras
    cannot load (``.h5``/``.hdf5`` legacy HDF5, or ``.weights.h5``).
    """
    if spec.kind != "file":
        return
    location = spec.location or ""
    if not location.lower().endswith((".h5", ".hdf5")):
        raise WeightsError(
            f"weights file {location!r} must be a Keras HDF5 file (.h5, .hdf5 or .weights.h5)"
        )
    if location.startswith("s3://"):
        return
    path = local_path(location)
    if not os.path.exists(path):
        raise WeightsError(f"weights file {location!r} does not exist")
    if not os.path.isfile(path):
        raise WeightsError(f"weights file {location!r} is not a file")


def build_mobilenet(weights: str | None = None):
    """Return ``MobileNetV2(include_top=True, input_shape=(224, 224, 3))`` with ``weights``.

    ``weights`` is None (random initial values) or a local weights file path, loaded by
    Keras itself (legacy HDF5 or Keras 3 ``.weights.h5``).
    """
    import keras

    return keras.applications.MobileNetV2(
        include_top=True,
        weights=weights,
        input_shape=(MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3),
    )


def feature_model(network):
    """Return a model that outputs the layer before the classifier: 1280 pooled features."""
    import keras

    pooling = network.layers[-2]
    if network.layers[-1].name != "predictions" or pooling.output.shape[-1] != FEATURE_DIM:
        raise WeightsError("the network is not MobileNetV2 with its ImageNet classifier on top")
    return keras.Model(network.input, pooling.output, name="mobilenet_v2_features")


def calibrate_batchnorm(network, images: np.ndarray) -> None:
    """Set every BatchNorm layer's moving mean and variance from ``images``.

    A freshly initialised network has moving statistics 0 and 1 and yields features around
    1e-11; after this it yields features of order 1.  ``images`` is a preprocessed
    ``(n, 224, 224, 3)`` float32 batch.  One forward pass in training mode gives each
    BatchNorm layer its input statistics as if every earlier one were calibrated too.
    """
    import keras

    norms = [
        layer for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    probe = keras.Model(network.input, [layer.input for layer in norms])
    inputs = probe(images, training=True)
    for layer, value in zip(norms, inputs, strict=False):
        value = np.asarray(value)
        gamma, beta, _, _ = layer.get_weights()
        layer.set_weights([gamma, beta, value.mean(axis=(0, 1, 2)), value.var(axis=(0, 1, 2))])


def random_network(seed: int):
    """Return a seeded random MobileNetV2 whose BatchNorm statistics are calibrated on
    seeded synthetic fruit images, so that its features are of order 1 (and meaningless)."""
    import keras

    from fruits_pipeline.chain.images import preprocess
    from fruits_pipeline.sample_images import draw_fruit_batch

    keras.utils.set_random_seed(seed)
    network = build_mobilenet(weights=None)
    calibrate_batchnorm(network, preprocess(draw_fruit_batch(CALIBRATION_IMAGES, seed)))
    return network


def load_weights(spec: WeightsSpec) -> LoadedWeights:
    """Load the weights on the driver and return their arrays.

    ``imagenet`` uses Keras' own download (cached under ``$KERAS_HOME/models``); a file spec
    reads a local file or downloads an ``s3://`` object to a temporary file first; ``random``
    builds a seeded network.  Never falls back from one source to another: any failure
    raises WeightsError naming the source.
    """
    import time

    started = time.perf_counter()
    file_sha256 = None
    if spec.kind == "random":
        log.warning("using seeded RANDOM weights (seed %s): features are NOT meaningful", spec.seed)
        network = random_network(spec.seed or 0)
    elif spec.kind == "imagenet":
        path = _download_imagenet()
        file_sha256 = sha256_file(path)
        network = _load_network_from_file(path, "ImageNet weights")
    else:
        with _local_copy(spec.location or "") as path:
            file_sha256 = sha256_file(path)
            network = _load_network_from_file(path, spec.location)
    feature_model(network)  # checks the architecture once more
    arrays = network.get_weights()
    loaded = LoadedWeights(
        spec=spec,
        arrays=arrays,
        layers={layer.name: layer.get_weights() for layer in network.layers},
        file_sha256=file_sha256,
        arrays_sha256=sha256_arrays(arrays),
        seconds=time.perf_counter() - started,
    )
    log.info(
        "weights %s loaded in %.1f s (%d arrays, %.1f MB)",
        spec.describe(),
        loaded.seconds,
        len(arrays),
        sum(a.nbytes for a in arrays) / 1e6,
    )
    return loaded


def sha256_file(path: str) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_arrays(arrays: list[np.ndarray]) -> str:
    """Return a hex sha256 over the weight arrays' shapes and float32 values, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _download_imagenet() -> str:
    """Return the local path of the ImageNet weights file, downloading it with Keras."""
    import keras

    try:
        # cache_dir follows $KERAS_HOME at call time (Keras reads it only once, at import)
        return keras.utils.get_file(
            IMAGENET_FILE,
            IMAGENET_ORIGIN,
            cache_subdir="models",
            cache_dir=os.environ.get("KERAS_HOME"),
        )
    except Exception as error:  # network errors come in many types
        raise WeightsError(
            f"cannot download the ImageNet weights ({IMAGENET_ORIGIN}): {first_line(error)}. "
            "Without internet, pass --weights PATH to a local copy, or random:SEED"
        ) from None


def _load_network_from_file(path: str, shown_as: str | None):
    try:
        return build_mobilenet(weights=path)
    except Exception as error:
        raise WeightsError(
            f"weights {shown_as!r} do not fit MobileNetV2 (include_top=True, 224x224x3): "
            f"{first_line(error)}"
        ) from None


@contextmanager
def _local_copy(location: str) -> Iterator[str]:
    """Yield a local path for a weights location, downloading ``s3://`` URIs to a temporary
    folder (removed afterwards).  Raises WeightsError when the file is not there."""
    if not location.startswith("s3://"):
        path = local_path(location)
        if not os.path.isfile(path):
            raise WeightsError(f"weights file {location!r} does not exist")
        yield path
        return
    import fsspec

    with tempfile.TemporaryDirectory(prefix="fruits-weights-") as folder:
        # keep the file name: Keras picks the format from the extension
        local = os.path.join(folder, location.rstrip("/").rsplit("/", 1)[-1])
        try:
            fsspec.filesystem("s3").get(location, local)
        except FileNotFoundError:
            raise WeightsError(f"weights file {location!r} does not exist") from None
        except Exception as error:
            raise WeightsError(
                f"cannot download weights {location!r}: {first_line(error)}"
            ) from None
        yield local

"""MobileNetV2 as a feature extractor: where its weights come from, and how it is rebuilt.

The driver loads the weights once (``load_weights``) and broadcasts what the inference
engine needs (``network_payload``): for ``onnxruntime`` (the default) the network converted
to ONNX from those weights, for ``tensorflow`` the weight arrays themselves.  Each Python
worker builds its extractor from the broadcast once (``cached_extractor``) and reuses it
for every task and batch it runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from fruits_pipeline.chain.images import MODEL_INPUT_SIZE
from fruits_pipeline.defaults import ENGINES
from fruits_pipeline.errors import BadInput

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
    """Weights prepared on the driver, ready to broadcast."""

    spec: WeightsSpec
    arrays: list[np.ndarray]
    file_sha256: str | None
    arrays_sha256: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: The Keras feature model the arrays came from (driver only, never broadcast).
    features_model: object = field(default=None, repr=False, compare=False)

    @property
    def meaningful(self) -> bool:
        """False for seeded random weights, whose features carry no meaning."""
        return self.spec.kind != "random"


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
    path = _local_path(location)
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
    """Load the weights on the driver and return their arrays, ready to broadcast.

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
    features = feature_model(network)  # checks the architecture once more
    arrays = network.get_weights()
    loaded = LoadedWeights(
        spec=spec,
        arrays=arrays,
        file_sha256=file_sha256,
        arrays_sha256=sha256_arrays(arrays),
        seconds=time.perf_counter() - started,
        features_model=features,
    )
    log.info(
        "weights %s loaded in %.1f s (%d arrays, %.1f MB)",
        spec.describe(),
        loaded.seconds,
        len(arrays),
        sum(a.nbytes for a in arrays) / 1e6,
    )
    return loaded


def network_payload(weights: LoadedWeights, engine: str) -> bytes | list[np.ndarray]:
    """Return what the driver broadcasts for ``engine``: the serialized ONNX model of the
    feature network built from ``weights`` (``onnxruntime``, about 9 MB) or the weight
    arrays (``tensorflow``, 14 MB).  Raises ValueError for another engine name."""
    if engine == "tensorflow":
        return weights.arrays
    if engine != "onnxruntime":
        raise ValueError(f"unknown inference engine {engine!r}: use one of {ENGINES}")
    from fruits_pipeline.engines.mobilenet_onnx import to_onnx

    layers = {layer.name: layer.get_weights() for layer in weights.features_model.layers}
    return to_onnx(layers).SerializeToString()


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


# --- worker side -----------------------------------------------------------------------

#: One extractor per (engine, weights fingerprint), per Python worker process.
_EXTRACTORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {}


def cached_extractor(
    key: str,
    payload_source: Callable[[], bytes | list[np.ndarray]],
    threads: int,
    engine: str,
) -> tuple[Callable[[np.ndarray], np.ndarray], bool]:
    """Return ``(extract, built)``: this process's extractor for the weights named ``key``.

    ``extract`` maps a preprocessed float32 ``(n, 224, 224, 3)`` batch to float32
    ``(n, 1280)`` features.  The first time a process sees ``(engine, key)`` it builds the
    extractor from ``payload_source()`` (see ``network_payload``): an ONNX Runtime session
    on the ONNX model, or MobileNetV2 rebuilt with ``set_weights`` and compiled as a
    ``tf.function``; ``built`` says whether this call built it.  ``threads`` caps the
    engine's thread pool (for TensorFlow, once per process, before its first operation).
    """
    cache_key = f"{engine}:{key}"
    extract = _EXTRACTORS.get(cache_key)
    if extract is not None:
        return extract, False
    payload = payload_source()
    if engine == "onnxruntime" and isinstance(payload, bytes):
        extract = _onnxruntime_extractor(payload, threads)
    elif engine == "tensorflow" and isinstance(payload, list):
        extract = _tensorflow_extractor(payload, threads)
    else:
        raise ValueError(f"engine {engine!r} needs network_payload(weights, {engine!r})")
    _EXTRACTORS.clear()  # a worker keeps one network: a new run's weights replace the old
    _EXTRACTORS[cache_key] = extract
    return extract, True


def _onnxruntime_extractor(model: bytes, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    from fruits_pipeline.engines.mobilenet_onnx import INPUT_NAME, OUTPUT_NAME

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle threads sleep instead of spinning: Spark's other work shares these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def extract(batch: np.ndarray) -> np.ndarray:
        feed = {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}
        return session.run([OUTPUT_NAME], feed)[0]

    return extract


def _tensorflow_extractor(
    arrays: list[np.ndarray], threads: int
) -> Callable[[np.ndarray], np.ndarray]:
    _configure_threads(threads)
    import tensorflow as tf

    network = build_mobilenet(weights=None)
    network.set_weights(arrays)
    features = feature_model(network)
    signature = tf.TensorSpec([None, MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3], tf.float32)
    compiled = tf.function(
        lambda batch: features(batch, training=False), input_signature=[signature]
    )

    def extract(batch: np.ndarray) -> np.ndarray:
        return compiled(tf.convert_to_tensor(batch)).numpy()

    return extract


_THREADS_SET = False


def _configure_threads(threads: int) -> None:
    """Cap TensorFlow's intra- and inter-op pools once per process (ignored once TF ran)."""
    global _THREADS_SET
    if _THREADS_SET:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, threads))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    except RuntimeError:  # TensorFlow already initialised in this process
        log.debug("TensorFlow threads already fixed in this process")
    _THREADS_SET = True


# --- driver-side helpers ----------------------------------------------------------------


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
            f"cannot download the ImageNet weights ({IMAGENET_ORIGIN}): {_first_line(error)}. "
            "Without internet, pass --weights PATH to a local copy, or random:SEED"
        ) from None


def _load_network_from_file(path: str, shown_as: str | None):
    try:
        return build_mobilenet(weights=path)
    except Exception as error:
        raise WeightsError(
            f"weights {shown_as!r} do not fit MobileNetV2 (include_top=True, 224x224x3): "
            f"{_first_line(error)}"
        ) from None


@contextmanager
def _local_copy(location: str) -> Iterator[str]:
    """Yield a local path for a weights location, downloading ``s3://`` URIs to a temporary
    folder (removed afterwards).  Raises WeightsError when the file is not there."""
    if not location.startswith("s3://"):
        path = _local_path(location)
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
                f"cannot download weights {location!r}: {_first_line(error)}"
            ) from None
        yield local


def _local_path(location: str) -> str:
    if location.startswith("file://"):
        return location[len("file://") :]
    if location.startswith("file:"):
        return location[len("file:") :]
    return location


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]

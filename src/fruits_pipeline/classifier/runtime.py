"""Running an exported model without Spark: ONNX Runtime for ``.onnx``, the TFLite
interpreter of the installed TensorFlow for ``.tflite``.

A predictor takes a uint8 RGB batch ``(n, 224, 224, 3)`` (decoded and resized as the job
does: ``chain.images.decode_image``) and returns float32 probabilities ``(n, labels)``.  An
ONNX model never imports TensorFlow: this is what ``predict`` and the app team's checks run.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

#: uint8 pixels ``(n, 224, 224, 3)`` -> float32 probabilities ``(n, labels)``
Predictor = Callable[[np.ndarray], np.ndarray]

#: Model kinds by file extension.
ONNX, TFLITE = "onnx", "tflite"
KINDS = {".onnx": ONNX, ".tflite": TFLITE}


def model_kind(path: str) -> str:
    """Return ``onnx`` or ``tflite`` from a model file's extension; raise ValueError for any
    other."""
    kind = KINDS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise ValueError(f"{path!r} is not a .onnx or .tflite model")
    return kind


def open_model(data: bytes, kind: str, threads: int = 1) -> Predictor:
    """Return the predictor of a serialized model of ``kind``, with ``threads`` threads."""
    if kind == ONNX:
        return onnx_predictor(data, threads)
    if kind == TFLITE:
        return tflite_predictor(data, threads)
    raise ValueError(f"unknown model kind {kind!r}")


def runtime_version(kind: str) -> str:
    """Return the runtime that runs a model of ``kind``, with its version."""
    if kind == ONNX:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    import tensorflow as tf

    return f"tensorflow {tf.__version__} (tf.lite.Interpreter)"


def onnx_predictor(data: bytes, threads: int) -> Predictor:
    """Return a predictor running the ONNX model ``data`` in one ONNX Runtime session."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(batch, dtype=np.uint8)})[0]

    return predict


def tflite_interpreter(data: bytes, threads: int = 1):
    """Return TensorFlow's TFLite interpreter for the model ``data``."""
    import tensorflow as tf

    with warnings.catch_warnings():
        # TensorFlow 2.19 announces the interpreter's move to the ai-edge-litert package
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_content=data, num_threads=max(1, threads))


def io_names(data: bytes, kind: str) -> tuple[str, str]:
    """Return a serialized model's input and output tensor names."""
    if kind == ONNX:
        import onnx

        graph = onnx.load_from_string(data).graph
        return graph.input[0].name, graph.output[0].name
    interpreter = tflite_interpreter(data)
    return (
        interpreter.get_input_details()[0]["name"],
        interpreter.get_output_details()[0]["name"],
    )


def tflite_predictor(data: bytes, threads: int) -> Predictor:
    """Return a predictor running the TFLite model ``data`` in TensorFlow's interpreter,
    resized to each batch's size (the model's batch dimension is dynamic)."""
    interpreter = tflite_interpreter(data, threads)
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]
    lock = threading.Lock()  # an interpreter runs one batch at a time
    allocated: list[tuple[int, ...]] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        with lock:
            if allocated != [batch.shape]:
                interpreter.resize_tensor_input(source, list(batch.shape))
                interpreter.allocate_tensors()
                allocated[:] = [batch.shape]
            interpreter.set_tensor(source, batch)
            interpreter.invoke()
            return interpreter.get_tensor(target).copy()

    return predict


@contextmanager
def one_core() -> Iterator[None]:
    """Pin the calling thread to one CPU while the body runs (Linux), so that a latency
    measured with one runtime thread is one core's, whatever else runs on the machine."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def latency_ms(data: bytes, kind: str, image: np.ndarray, runs: int, warmup: int = 3) -> float:
    """Return the median milliseconds the model takes for one image (batch of 1), with one
    runtime thread on one core, over ``runs`` runs after ``warmup``."""
    batch = np.ascontiguousarray(image[None], dtype=np.uint8)
    with one_core():
        predict = open_model(data, kind, threads=1)
        for _ in range(warmup):
            predict(batch)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            predict(batch)
            times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 2)

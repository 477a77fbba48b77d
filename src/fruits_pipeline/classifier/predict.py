"""``predict``: an exported model on a folder of images, without Spark.

The reference the app team compares their phone's output with: each image is decoded and
resized as the job does (``chain.images.decode_image``), run through the exported model
(ONNX Runtime alone for ``.onnx``; TensorFlow's TFLite interpreter for ``.tflite``), and
written as one CSV row: the path, the top-k labels and their probabilities, or the error
that kept the image from being predicted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fruits_pipeline.chain.images import ImageDecodeError, decode_image, is_image_path
from fruits_pipeline.classifier.model_card import ModelCard, read_card
from fruits_pipeline.classifier.runtime import ONNX, Predictor, model_kind, open_model
from fruits_pipeline.defaults import DEFAULT_BATCH_SIZE
from fruits_pipeline.errors import BadInput
from fruits_pipeline.results import layout, storage
from fruits_pipeline.results.overlap import refuse_overlap

log = logging.getLogger(__name__)


class PredictInputError(BadInput):
    """A model, an input folder or an output file ``predict`` cannot use."""


@dataclass
class PredictConfig:
    """What to predict: every option of ``fruits-pipeline predict``."""

    model: str
    input: str
    output: str
    top: int = 5
    batch_size: int = DEFAULT_BATCH_SIZE
    overwrite: bool = False


@dataclass
class ModelToRun:
    """The model file ``predict`` runs, its kind, and its card (labels in output order)."""

    path: str
    kind: str
    card: ModelCard


@dataclass
class PredictSummary:
    model: str
    images: int
    predicted: int
    failed: int
    output: str
    seconds: float


def resolve_model(model: str) -> ModelToRun:
    """Return the model ``--model`` names: a ``.onnx`` or ``.tflite`` file, or an export
    folder (its ONNX model), with the model card of its folder.

    Raises PredictInputError when there is no such model or no card beside it.
    """
    path = os.path.abspath(model)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if not os.path.exists(path):
        raise PredictInputError(f"--model {model!r} does not exist")
    if not os.path.isdir(path):
        try:
            kind = model_kind(path)
        except ValueError as error:
            raise PredictInputError(f"--model {error}") from None
    card_path = os.path.join(folder, layout.MODEL_CARD)
    if not os.path.isfile(card_path):
        raise PredictInputError(
            f"--model {model!r}: no {layout.MODEL_CARD} in {folder!r} (it names the labels): "
            "pass a folder written by `fruits-pipeline export` or a model file in one"
        )
    try:
        card = read_card(card_path)
    except ValueError as error:
        raise PredictInputError(f"--model {model!r}: {error}") from None
    if os.path.isdir(path):
        listed = card.model(ONNX)
        if listed is None:
            raise PredictInputError(f"--model {model!r}: its card lists no ONNX model")
        path, kind = os.path.join(folder, listed.file), ONNX
    elif os.path.basename(path) not in {entry.file for entry in card.models}:
        raise PredictInputError(
            f"--model {model!r} is not one of the models its folder's {layout.MODEL_CARD} lists"
        )
    return ModelToRun(path=path, kind=kind, card=card)


def image_paths(source: str) -> list[str]:
    """Return the image files under the folder ``source`` (searched recursively, hidden
    files and folders skipped, as the job does), sorted; or ``source`` itself when it is an
    image file.  Raises PredictInputError when there is none."""
    root = os.path.abspath(source)
    if os.path.isfile(root) and is_image_path(root):
        return [root]
    if not os.path.isdir(root):
        raise PredictInputError(f"--input {source!r} is not a folder or an image file")
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith((".", "_"))]
        found += [
            os.path.join(folder, name)
            for name in files
            if is_image_path(name) and not name.startswith((".", "_"))
        ]
    if not found:
        raise PredictInputError(f"no images (.jpg, .jpeg, .png) found under {source!r}")
    return sorted(found)


def header(top: int) -> list[str]:
    """Return the CSV's header: path, label_1, probability_1, … label_top, …, error."""
    ranked = [
        name for rank in range(1, top + 1) for name in (f"label_{rank}", f"probability_{rank}")
    ]
    return ["path", *ranked, "error"]


def is_predictions_csv(uri: str) -> bool:
    """True when the file at ``uri`` starts with the header ``predict`` writes: the only
    file ``--overwrite`` may replace (a CSV holds no other mark of who wrote it)."""
    import fsspec

    if not storage.is_remote(uri) and not os.path.isfile(storage.local_path(uri)):
        return False
    with fsspec.open(storage.fsspec_uri(uri), "rb") as handle:
        line = handle.readline(1 << 16)
    first = line.decode("utf-8", errors="replace").strip().split(",")
    ranks = (len(first) - 2) // 2
    return ranks >= 1 and first == header(ranks)


def check_output(config: PredictConfig) -> None:
    """Raise PredictInputError when the CSV at ``config.output`` overlaps the model or the
    images, or exists and is not (with ``overwrite``) a CSV ``predict`` wrote."""
    refuse_overlap({"--model": config.model, "--input": config.input}, {"--output": config.output})
    if not storage.exists(config.output):
        return
    if not config.overwrite:
        raise PredictInputError(
            f"output {config.output!r} already exists: pass --overwrite to replace it"
        )
    if not is_predictions_csv(config.output):
        raise PredictInputError(
            f"output {config.output!r} exists and is not a CSV written by predict (its first "
            "line is not predict's header): refusing to replace it; choose another path"
        )


def predict_rows(
    predict: Predictor, labels: list[str], paths: list[str], top: int, batch_size: int
) -> Iterator[list[object]]:
    """Yield one CSV row per path, in order: the top ``top`` labels and probabilities, or
    empty cells and the error of an image that cannot be decoded."""
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        decoded: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for index, path in enumerate(chunk):
            try:
                with open(path, "rb") as handle:
                    decoded[index] = decode_image(handle.read())
            except ImageDecodeError as error:
                errors[index] = str(error)
            except OSError as error:
                errors[index] = f"unreadable: {error}"
        probabilities = {}
        if decoded:
            batch = np.stack([decoded[index] for index in sorted(decoded)])
            probabilities = dict(zip(sorted(decoded), predict(batch), strict=True))
        for index, path in enumerate(chunk):
            if index in errors:
                yield [path, *([""] * (2 * top)), errors[index]]
                continue
            row = probabilities[index]
            order = np.argsort(-row, kind="stable")[:top]
            ranked = [cell for i in order for cell in (labels[i], f"{row[i]:.6g}")]
            yield [path, *ranked, ""]


def predict_folder(config: PredictConfig) -> PredictSummary:
    """Predict every image under ``config.input`` with ``config.model`` and write the CSV;
    return what was done.  Raises PredictInputError for a bad model, input or output."""
    started = time.perf_counter()
    check_output(config)
    model = resolve_model(config.model)
    paths = image_paths(config.input)
    labels = model.card.labels
    top = min(config.top, len(labels))
    with open(model.path, "rb") as handle:
        predict = open_model(handle.read(), model.kind, threads=os.cpu_count() or 1)
    log.info("predicting %d images with %s", len(paths), model.path)
    failed = 0

    def counted() -> Iterator[list[object]]:
        nonlocal failed
        for row in predict_rows(predict, labels, paths, top, config.batch_size):
            failed += 1 if row[-1] else 0
            yield row

    if not storage.is_remote(config.output):
        os.makedirs(os.path.dirname(storage.local_path(config.output)), exist_ok=True)
    rows = storage.write_csv(config.output, header(top), counted())
    return PredictSummary(
        model=model.path,
        images=rows,
        predicted=rows - failed,
        failed=failed,
        output=config.output,
        seconds=round(time.perf_counter() - started, 3),
    )

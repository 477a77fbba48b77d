"""``export``: a trained run as self-contained on-device models, one per format, and a card.

Each model is the whole path from pixels to probabilities in one graph: uint8 RGB
``[N, 224, 224, 3]`` in, the scaling, the network that made the run's features, the run's
scaler + PCA + logistic regression folded into one dense layer (``folding``), a softmax;
out, the probabilities in the order of the card's ``labels``.  Formats: ONNX
(``engines.mobilenet_onnx``), float32 TFLite and int8 TFLite (``tflite``).

The exported network must be the one that made the features: the run's engine says which
network it computes (``Engine.feature_network``), the weights given must have the arrays the
run recorded (sha256), and a network export cannot write (another architecture or
precision, an engine this version does not know) is refused in one line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
from dataclasses import dataclass

import numpy as np
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from fruits_pipeline import engines
from fruits_pipeline.chain.images import MODEL_INPUT_SIZE, decode_image
from fruits_pipeline.chain.weights import LoadedWeights
from fruits_pipeline.classifier.folding import DenseHead, fold
from fruits_pipeline.classifier.model_card import (
    SCHEMA,
    ClassifierFacts,
    GoldenVector,
    InputSpec,
    LatencyMeasure,
    ModelCard,
    ModelFile,
    NetworkFacts,
    OutputSpec,
    Prediction,
    ResizeRule,
    write_card,
)
from fruits_pipeline.classifier.runtime import (
    ONNX,
    TFLITE,
    io_names,
    latency_ms,
    open_model,
    runtime_version,
)
from fruits_pipeline.classifier.saved import read_linear_chain
from fruits_pipeline.classifier.splits import split_column
from fruits_pipeline.engines.base import MOBILENET_V2, FeatureNetwork
from fruits_pipeline.errors import BadInput
from fruits_pipeline.results import layout, storage
from fruits_pipeline.results.location import OutputLocation
from fruits_pipeline.results.report import RunReport, read_report

log = logging.getLogger(__name__)

#: The networks ``export`` writes on-device models of from their weights: (architecture,
#: precision).  An engine whose ``feature_network`` is another one needs its writer here first.
EXPORTABLE = {(MOBILENET_V2, "float32")}

#: The networks ``export`` writes as the run kept them (``FeatureNetwork.onnx``: a quantized
#: network calibrated on the run's images, which only ONNX reproduces).
EXPORTABLE_KEPT = {(MOBILENET_V2, "int8")}

#: Why a format is not written for a network of some precision (one line each).
REFUSED = {
    "int8": "TFLite models not written: TFLite's converter would quantize the Keras network "
    "again on its own images, not reproduce the run's int8 ONNX network",
}

#: Golden vectors: how many test images, and how many labels each lists.
GOLDEN_TOP = 5

RESIZE = ResizeRule(
    width=MODEL_INPUT_SIZE,
    height=MODEL_INPUT_SIZE,
    filter="bicubic (Pillow Image.Resampling.BICUBIC)",
    steps=[
        "decode the file with Pillow",
        "apply the JPEG EXIF orientation",
        "convert to RGB (16-bit grayscale scaled to 8 bits first)",
        "resize the whole image to 224x224, bicubic, without keeping the aspect ratio",
        "pass the uint8 pixels as they are: the model scales them",
    ],
)


class ExportInputError(BadInput):
    """A run that cannot be exported: not trained, or features from a network export
    cannot reproduce."""


@dataclass
class ExportConfig:
    """What to export: every option of ``fruits-pipeline export``."""

    output: str
    to: str
    overwrite: bool = False
    calibration_images: int = 200
    golden_images: int = 5
    latency_runs: int = 20


@dataclass(frozen=True)
class ExportFormat:
    """One on-device model ``export`` writes."""

    file: str
    format: str
    precision: str


FORMATS = (
    ExportFormat(layout.ONNX_MODEL, ONNX, "float32"),
    ExportFormat(layout.TFLITE_FLOAT32_MODEL, TFLITE, "float32"),
    ExportFormat(layout.TFLITE_INT8_MODEL, TFLITE, "int8"),
)

#: The formats written for a network of each precision.
FORMATS_OF = {
    "float32": FORMATS,
    "int8": (ExportFormat(layout.ONNX_MODEL, ONNX, "int8"),),
}


def check_exportable(output: str) -> RunReport:
    """Return the report of the trained run at ``output`` (checked before Spark starts);
    raise ExportInputError when it has no classifier, or one trained on other features."""
    report_uri = storage.join(output, layout.REPORT_JSON)
    if not storage.exists(report_uri):
        raise ExportInputError(f"{output!r} is not a finished run: it has no report.json")
    report = read_report(report_uri)
    evaluation = report.evaluation
    trained = evaluation is not None and evaluation.model.location is not None
    if not trained or not storage.exists(storage.join(output, layout.CLASSIFIER)):
        raise ExportInputError(
            f"{output!r} has no classifier: run `fruits-pipeline train {output}` first"
        )
    if evaluation.features_run_id != report.run_id:
        raise ExportInputError(
            f"{output!r}: its classifier was trained on the features of run "
            f"{evaluation.features_run_id}, not on this run's ({report.run_id}): "
            f"run `fruits-pipeline train {output}` again"
        )
    if report.settings.engine not in engines.ENGINES:
        known = ", ".join(sorted(engines.ENGINES))
        raise ExportInputError(
            f"{output!r}: its features came from the engine {report.settings.engine!r}, which "
            f"this version does not know ({known}): it cannot export the network that made them"
        )
    return report


def feature_network(
    report: RunReport, weights: LoadedWeights, run: str | None = None
) -> FeatureNetwork:
    """Return the network that made the run's features, as the run's engine computes it from
    ``weights`` (which must be the run's: see ``chain.transform.check_same_weights``); for a
    quantized run, the network the run at ``run`` (default ``report.output``) kept.

    Raises ExportInputError when export cannot write that network (KeptNetworkError when
    the kept network is missing or not the run's).
    """
    from dataclasses import replace

    from fruits_pipeline.chain.calibration import kept_network

    engine = engines.get(report.settings.engine)
    network = engine.feature_network(weights)
    if report.calibration is not None:
        kept = kept_network(run or report.output, report, engine)
        network = replace(network, precision=kept.network.precision, onnx=kept.network.stored)
    writes = EXPORTABLE_KEPT if network.onnx is not None else EXPORTABLE
    if (network.architecture, network.precision) not in writes:
        writable = ", ".join(f"{a} {p}" for a, p in sorted(EXPORTABLE))
        raise ExportInputError(
            f"the features of {report.output!r} came from engine {engine.name!r}, which runs a "
            f"{network.precision} {network.architecture}; export writes only {writable} "
            "networks, which would not reproduce them"
        )
    return network


def check_destination(config: ExportConfig, weights: str | None = None) -> OutputLocation:
    """Return where the models go; raise BadInput when DIR exists without ``overwrite``, is
    not an export of this tool, or overlaps the run or the ``weights`` file it reads."""
    reads = {"OUTPUT": config.output, "--weights": weights}
    return OutputLocation.prepare(config.to, config.overwrite, reads, option="--to")


def sample_images(
    spark: SparkSession, output: str, split: str, other: str, count: int, per_label: int
) -> list[tuple[str, str]]:
    """Return ``(path, label)`` of up to ``count`` images under a ``split`` folder in the
    run's features (``other`` is the other split's name: the nearest folder wins), at most
    ``per_label`` of each label, spread over the labels and the same on every call (ordered
    by a hash of the path)."""
    features = spark.read.parquet(storage.spark_uri(storage.join(output, layout.FEATURES)))
    order = Window.partitionBy("label").orderBy(F.xxhash64("path"), "path")
    rows = (
        # split_column calls the images of its first split "train"
        features.select("path", "label", split_column("path", split, other).alias("split"))
        .where(F.col("split") == "train")
        .withColumn("rank", F.row_number().over(order))
        .where(F.col("rank") <= per_label)
        .select("path", "label", "rank")
        .collect()
    )
    rows.sort(key=lambda row: (row["rank"], row["label"], row["path"]))
    if count >= len(rows):
        return [(row["path"], row["label"]) for row in rows]
    step = len(rows) / count
    return [(rows[int(i * step)]["path"], rows[int(i * step)]["label"]) for i in range(count)]


def read_images(paths: list[str]) -> tuple[list[bytes], np.ndarray]:
    """Return the files' bytes and their decoded uint8 ``(n, 224, 224, 3)`` pixels."""
    contents = [storage.read_bytes(path) or b"" for path in paths]
    pixels = np.stack([decode_image(content) for content in contents]).astype(np.uint8)
    return contents, pixels


def write_models(network: FeatureNetwork, head: DenseHead, calibration: np.ndarray) -> dict:
    """Return every format's serialized model (``FORMATS_OF`` the network's precision), by
    file name."""
    from fruits_pipeline.classifier.tflite import (
        float32_tflite,
        int8_tflite,
        keras_classifier,
        saved_model,
    )
    from fruits_pipeline.engines.mobilenet_onnx import to_onnx, with_pixels_and_head

    models = {}
    started = time.perf_counter()
    if network.onnx is not None:  # the run's own (quantized) network, as it kept it
        model = with_pixels_and_head(network.onnx, (head.weight, head.bias))
        models[layout.ONNX_MODEL] = model.SerializeToString()
        log.info(
            "%s ONNX model written in %.1f s", network.precision, time.perf_counter() - started
        )
        log.warning("%s", REFUSED[network.precision])
        return models
    onnx_model = to_onnx(network.layers, uint8_input=True, head=(head.weight, head.bias))
    models[layout.ONNX_MODEL] = onnx_model.SerializeToString()
    log.info("ONNX model written in %.1f s", time.perf_counter() - started)
    started = time.perf_counter()
    with saved_model(keras_classifier(network, head)) as saved:
        models[layout.TFLITE_FLOAT32_MODEL] = float32_tflite(saved)
        log.info("float32 TFLite model converted in %.1f s", time.perf_counter() - started)
        started = time.perf_counter()
        models[layout.TFLITE_INT8_MODEL] = int8_tflite(saved, calibration)
    log.info(
        "int8 TFLite model converted in %.1f s, calibrated on %d images",
        time.perf_counter() - started,
        len(calibration),
    )
    return models


def top(probabilities: np.ndarray, labels: list[str], k: int) -> list[Prediction]:
    """Return the ``k`` most probable labels of one probability vector, most probable
    first (ties by label order)."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [Prediction(labels[i], round(float(probabilities[i]), 6)) for i in order]


def golden_name(index: int, label: str, path: str) -> str:
    """Return the file name a golden image gets under ``golden/``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    return f"{index:02d}_{safe}_{path.rstrip('/').rsplit('/', 1)[-1]}"


def cpu_name() -> str:
    """Return the CPU's model name (Linux), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def export_run(
    spark: SparkSession,
    config: ExportConfig,
    report: RunReport,
    weights: LoadedWeights,
    location: OutputLocation,
) -> ModelCard:
    """Write every format's model, the golden images and the model card to ``location``
    (published whole) and return the card.  ``report`` comes from ``check_exportable``,
    ``weights`` from the run's source, already checked against it."""
    network = feature_network(report, weights, config.output)
    evaluation = report.evaluation
    saved = read_linear_chain(config.output)
    if saved.labels != evaluation.model.labels:
        raise ExportInputError(
            f"{config.output!r}: the saved classifier's labels are not the report's: train it again"
        )
    head = fold(saved.chain)
    train_split, test_split = evaluation.train.split, evaluation.test.split
    per_label = -(-config.calibration_images // len(saved.labels))
    calibration_paths = sample_images(
        spark, config.output, train_split, test_split, config.calibration_images, per_label
    )
    golden_paths = sample_images(
        spark, config.output, test_split, train_split, config.golden_images, 1
    )
    _, calibration = read_images([path for path, _ in calibration_paths])
    golden_bytes, golden_pixels = read_images([path for path, _ in golden_paths])
    models = write_models(network, head, calibration)

    files, expected = [], {}
    for spec in FORMATS_OF[network.precision]:
        data = models[spec.file]
        probabilities = open_model(data, spec.format, os.cpu_count() or 1)(golden_pixels)
        names = io_names(data, spec.format)
        expected[spec.file] = [top(row, saved.labels, GOLDEN_TOP) for row in probabilities]
        files.append(
            ModelFile(
                file=spec.file,
                format=spec.format,
                precision=spec.precision,
                bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                input_name=names[0],
                output_name=names[1],
                runtime=runtime_version(spec.format),
                latency_ms_per_image=latency_ms(
                    data, spec.format, golden_pixels[0], config.latency_runs
                ),
            )
        )
        log.info(
            "%s: %.1f MB, %.1f ms per image on one core",
            spec.file,
            len(data) / 1e6,
            files[-1].latency_ms_per_image,
        )
    golden = [
        GoldenVector(
            image=f"{layout.GOLDEN_IMAGES}/{golden_name(index, label, path)}",
            source=path,
            label=label,
            resized_sha256=hashlib.sha256(golden_pixels[index].tobytes()).hexdigest(),
            expected_top5={name: rows[index] for name, rows in expected.items()},
        )
        for index, (path, label) in enumerate(golden_paths)
    ]
    card = ModelCard(
        schema=SCHEMA,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        run=config.output,
        labels=saved.labels,
        input=InputSpec(),
        output=OutputSpec(
            dtype="float32",
            shape=["N", len(saved.labels)],
            meaning="the probability of each label, in the order of `labels`; rows sum to 1",
        ),
        resize=RESIZE,
        network=NetworkFacts(
            architecture=network.architecture,
            precision=network.precision,
            engine=report.settings.engine,
            weights_source=report.weights.source,
            weights_file_sha256=report.weights.file_sha256,
            weights_arrays_sha256=report.weights.arrays_sha256,
        ),
        classifier=ClassifierFacts(
            test_accuracy=evaluation.accuracy,
            macro_f1=evaluation.macro_f1,
            test_split=test_split,
            test_images=evaluation.test.images,
            train_images=evaluation.train.images,
            reg_param=evaluation.model.reg_param,
            meaningful=evaluation.meaningful,
            run_id=report.run_id,
        ),
        models=files,
        latency=LatencyMeasure(
            batch=1,
            threads=1,
            cores=1,
            runs=config.latency_runs,
            statistic="median",
            cpu=cpu_name(),
        ),
        golden=golden,
    )
    location.begin()
    try:
        for name, data in models.items():
            storage.write_bytes(location.path(name), data)
        for vector, content in zip(golden, golden_bytes, strict=True):
            storage.write_bytes(location.path(vector.image), content)
        write_card(location.path(layout.MODEL_CARD), card)
        location.publish()
    except BaseException:
        location.discard(keep_work=False)
        raise
    return card

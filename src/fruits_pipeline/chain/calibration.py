"""A quantized network's calibration: a deterministic sample of the run's own images, the
network prepared with it on the driver, and how close its features stay to float32's.

The sample is the first images by the sha256 of their path (then the path): the same
images for the same listing wherever Spark reads them from, spread over the labels, and
chosen without reading any image's bytes but the sample's.  The images just after them in
that order (``FIDELITY_IMAGES``) are the fidelity check's, so no calibration image is
judged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_pipeline.chain.images import ImageDecodeError, decode_image, preprocess
from fruits_pipeline.chain.listing import read_images
from fruits_pipeline.chain.weights import LoadedWeights
from fruits_pipeline.engines import Engine, PreparedNetwork
from fruits_pipeline.engines.base import CalibrationSample
from fruits_pipeline.engines.onnxruntime_engine import onnx_session_extractor
from fruits_pipeline.errors import BadInput
from fruits_pipeline.results import layout, storage
from fruits_pipeline.results.report import (
    CalibrationFacts,
    FidelityFacts,
    RunReport,
    read_report,
)

log = logging.getLogger(__name__)

#: Images whose features the quantized and the float32 networks both compute in the run.
FIDELITY_IMAGES = 32

#: The network the fidelity is measured against.
REFERENCE = "onnxruntime float32 (the same weights)"


@dataclass(frozen=True)
class Calibrated:
    """A quantized network prepared on the driver, and the report's facts about it."""

    network: PreparedNetwork
    facts: CalibrationFacts


class KeptNetworkError(BadInput):
    """A run's kept quantized network is missing, or is not the one its report names."""


def kept_network(run: str, report: RunReport, engine: Engine) -> Calibrated:
    """Return the quantized network the finished run at ``run`` kept (``layout.NETWORK``),
    as ``engine`` runs it, with the run's calibration facts.

    Raises KeptNetworkError when the run calibrated no network, when the file is missing, or
    when its sha256 is not the one the run's report recorded."""
    facts = report.calibration
    if facts is None:
        raise KeptNetworkError(
            f"{run!r} was made with a {report.settings.engine} network, which kept no "
            f"calibrated network for engine {engine.name}: use --engine {report.settings.engine}"
        )
    stored = storage.read_bytes(storage.join(run, layout.NETWORK))
    if stored is None:
        raise KeptNetworkError(
            f"{run!r} has no {layout.NETWORK}: the quantized network its features came from "
            "is lost (a network calibrated again on other images would give other features)"
        )
    network = engine.restore(stored, facts.digest)
    if network.sha256 != facts.network_sha256:
        raise KeptNetworkError(
            f"{run!r}: {layout.NETWORK} has sha256 {network.sha256[:16]}…, but the run's "
            f"features came from {facts.network_sha256[:16]}…"
        )
    return Calibrated(network, replace(facts, restored_from=run))


def previous_network(output: str, engine: Engine, weights: LoadedWeights) -> Calibrated | None:
    """For ``--incremental``: the network the finished run at ``output`` kept, when
    ``engine`` made it from ``weights``; else None (the run calibrates its own).

    The updated run keeps the network its features came from, so that the rows of the
    images that did not change stay reusable (a new image could otherwise enter the
    calibration sample, and every row would be featurized again)."""
    report_uri = storage.join(output, layout.REPORT_JSON)
    if not (storage.exists(report_uri) and storage.exists(storage.join(output, layout.SUCCESS))):
        return None
    report = read_report(report_uri)
    if (
        report.settings.engine != engine.name
        or report.calibration is None
        or report.weights.arrays_sha256 != weights.arrays_sha256
    ):
        return None
    log.info("incremental: running the network the run at %s kept (not calibrating)", output)
    return kept_network(output, report, engine)


def sample_paths(images: DataFrame, count: int) -> list[str]:
    """Return the paths of the first ``count`` images of ``images`` (a listing's
    DataFrame) by the sha256 of the path, then the path.  Reads no image's bytes."""
    rows = (
        images.select("path")
        .orderBy(F.sha2(F.col("path"), 256), F.col("path"))
        .limit(count)
        .collect()
    )
    return [row["path"] for row in rows]


def read_batch(spark: SparkSession, root: str, paths: list[str]) -> tuple[np.ndarray, list[str]]:
    """Return the preprocessed batch of the images at ``paths`` that decode, sorted by
    path, and their paths; the others are left out (the extraction rejects them)."""
    if not paths:
        return np.zeros((0, 224, 224, 3), np.float32), []
    # a few hundred paths: the sample is small by design, unlike the listing
    wanted = spark.createDataFrame([(path,) for path in sorted(paths)], "path string")
    rows = read_images(spark, root, files=wanted).select("path", "content").collect()
    decoded = {}
    for row in rows:
        try:
            decoded[row["path"]] = decode_image(bytes(row["content"]))
        except ImageDecodeError:
            log.info("calibration: %s does not decode, left out", row["path"])
    kept = sorted(decoded)
    if not kept:
        return np.zeros((0, 224, 224, 3), np.float32), []
    return preprocess(np.stack([decoded[path] for path in kept])), kept


def calibrate(
    spark: SparkSession,
    images: DataFrame,
    root: str,
    engine: Engine,
    weights: LoadedWeights,
    threads: int,
) -> Calibrated:
    """Prepare ``engine``'s network (one with ``calibration_images``) with a sample of
    ``images`` (a listing's DataFrame, under the Spark URI ``root``), and measure its
    features against the float32 ONNX network's on the images after the sample."""
    paths = sample_paths(images, engine.calibration_images + FIDELITY_IMAGES)
    calibration_paths = paths[: engine.calibration_images]
    batch, kept = read_batch(spark, root, calibration_paths)
    sample = CalibrationSample(batch, tuple(kept))
    log.info("calibrating %s on %d images of the run", engine.name, len(kept))
    network = engine.prepare(weights, sample)
    check_batch, checked = read_batch(spark, root, paths[engine.calibration_images :])
    held_out = bool(checked)
    if not held_out:  # a run of few images: all of them calibrated
        check_batch, checked = batch[:FIDELITY_IMAGES], kept[:FIDELITY_IMAGES]
    fidelity = measure_fidelity(engine, network, weights, check_batch, threads, held_out)
    log.info(
        "%s: cosine to float32 features on %d images: median %.4f, min %.4f",
        engine.name,
        fidelity.images,
        fidelity.cosine_median,
        fidelity.cosine_min,
    )
    facts = CalibrationFacts(
        precision=network.precision,
        digest=network.calibration or "",
        images=len(kept),
        paths_sha256=sample.paths_sha256,
        settings={key: str(value) for key, value in (network.calibration_settings or {}).items()},
        network_sha256=network.sha256,
        fidelity=fidelity,
    )
    return Calibrated(network, facts)


def measure_fidelity(
    engine: Engine,
    network: PreparedNetwork,
    weights: LoadedWeights,
    batch: np.ndarray,
    threads: int,
    held_out: bool,
) -> FidelityFacts:
    """Return the cosine between ``network``'s features and the float32 ONNX network's on
    ``batch``."""
    from fruits_pipeline.engines.mobilenet_onnx import to_onnx

    reference = onnx_session_extractor(to_onnx(weights.layers).SerializeToString(), threads)
    ours = engine.extractor(network.payload, threads)
    parts = [
        row_cosines(ours(batch[start : start + 16]), reference(batch[start : start + 16]))
        for start in range(0, len(batch), 16)
    ]
    values = np.concatenate(parts) if parts else np.zeros(0)
    return FidelityFacts(
        images=len(values),
        held_out=held_out,
        reference=REFERENCE,
        cosine_median=round(float(np.median(values)), 6) if len(values) else float("nan"),
        cosine_min=round(float(values.min()), 6) if len(values) else float("nan"),
        cosine_mean=round(float(values.mean()), 6) if len(values) else float("nan"),
    )


def row_cosines(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return the cosine between each row of ``first`` and the same row of ``second`` (1.0
    for two zero rows, 0.0 for one)."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    dots = (first * second).sum(axis=1)
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    both_zero = (np.linalg.norm(first, axis=1) == 0) & (np.linalg.norm(second, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosines = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, cosines)

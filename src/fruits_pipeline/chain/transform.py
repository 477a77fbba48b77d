"""New images through a finished run's network and saved PCA, without refitting anything.

The new images are featurized with the same MobileNetV2 weights as the first run: the sha256
of the weight arrays must equal the one in its report, or nothing runs.  The features are
then projected with the run's ``pca_model/`` as it is, and written with the same layout as
a run (no ``pca_model/`` of their own), staged and published like one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession

from fruits_pipeline import engines
from fruits_pipeline.chain.calibration import Calibrated, KeptNetworkError, kept_network
from fruits_pipeline.chain.extract import (
    ExtractionWork,
    broadcast_network,
    extract,
    extraction_sections,
)
from fruits_pipeline.chain.filesystems import require_filesystems
from fruits_pipeline.chain.job import list_input
from fruits_pipeline.chain.pca import Projection
from fruits_pipeline.chain.weights import LoadedWeights, WeightsError, WeightsSpec
from fruits_pipeline.defaults import DEFAULT_BATCH_SIZE
from fruits_pipeline.errors import BadInput
from fruits_pipeline.progress import StageClock
from fruits_pipeline.results import layout, storage
from fruits_pipeline.results.location import OutputLocation
from fruits_pipeline.results.report import (
    PcaFacts,
    RunReport,
    TransformFacts,
    read_report,
)
from fruits_pipeline.results.writer import ResultsWriter
from fruits_pipeline.session import engine_threads

log = logging.getLogger(__name__)


class ModelError(BadInput):
    """``--model`` is not a finished run: no ``report.json`` or no ``pca_model/``."""


class WeightsMismatchError(WeightsError):
    """The weights given are not the ones the model's run used (sha256 of the arrays)."""


@dataclass
class TransformConfig:
    """What to transform: every option of ``fruits-pipeline transform``."""

    model: str
    input: str
    output: str
    weights: WeightsSpec
    engine: str
    batch_size: int = DEFAULT_BATCH_SIZE
    limit: int | None = None
    overwrite: bool = False

    def reads(self) -> dict[str, str | None]:
        """What the transform reads, by option: OUT2 must lie apart from all of it."""
        return {"--model": self.model, "--input": self.input, "--weights": self.weights.location}


def read_model_report(model: str) -> RunReport:
    """Return the report of the finished run at ``model`` (local or ``s3://``).

    Raises ModelError when it has no report or no ``pca_model/``.
    """
    report_uri = storage.join(model, layout.REPORT_JSON)
    if not storage.exists(report_uri):
        raise ModelError(f"--model {model!r} is not a finished run: it has no report.json")
    if not storage.exists(storage.join(model, layout.PCA_MODEL)):
        raise ModelError(f"--model {model!r} has no {layout.PCA_MODEL}/ to project with")
    try:
        return read_report(report_uri)
    except ValueError as error:
        raise ModelError(f"--model {model!r}: its report.json is not a run's: {error}") from None


def check_same_weights(model_report: RunReport, weights: LoadedWeights) -> None:
    """Raise WeightsMismatchError unless ``weights`` have the arrays the model's run used.

    The arrays' sha256 decides: the same network saved in another file format (legacy
    ``.h5`` or ``.weights.h5``) has another file sha256 but the same arrays, and is accepted.
    """
    expected = model_report.weights
    if weights.arrays_sha256 != expected.arrays_sha256:
        raise WeightsMismatchError(
            f"weights mismatch: {weights.spec.describe()!r} has weight arrays sha256 "
            f"{weights.arrays_sha256[:16]}…, but the PCA model was fitted on features from "
            f"{expected.source!r} (arrays sha256 {expected.arrays_sha256[:16]}…); "
            "pass --weights with the weights of that run"
        )
    if expected.file_sha256 and weights.file_sha256 != expected.file_sha256:
        log.info("weights file differs from the model's run but its arrays are the same")


def model_network(model: str, model_report: RunReport, engine: engines.Engine) -> Calibrated | None:
    """Return the quantized network the model's run kept, when its features came from one
    (an int8 engine's): new images must go through that very network, never one calibrated
    again on other images.  None for a float32 run (its weights rebuild its network).

    Raises KeptNetworkError when ``engine`` is not the run's and either of them calibrates,
    or when the kept network is missing or not the run's."""
    ran = model_report.settings.engine
    if model_report.calibration is None and not engine.calibration_images:
        return None
    if engine.name != ran:
        raise KeptNetworkError(
            f"--model {model!r} was fitted on features of engine {ran}: engine {engine.name} "
            f"computes other ones; use --engine {ran}"
        )
    return kept_network(model, model_report, engine)


def transform_job(
    spark: SparkSession,
    config: TransformConfig,
    model_report: RunReport,
    weights: LoadedWeights,
    seconds_before: dict[str, float] | None = None,
) -> RunReport:
    """Featurize the images under ``config.input`` with ``weights``, project them with the
    model's ``pca_model/`` and write OUT2; return the report (also ``report.json``).

    ``weights`` must already have passed ``check_same_weights``.  ``seconds_before`` holds
    stages timed before Spark.  Raises InputError when the input has no images; in every
    failure case nothing is left at OUT2.
    """
    clock = StageClock(seconds_before)
    engine = engines.get(config.engine)
    kept = model_network(config.model, model_report, engine)
    require_filesystems(
        spark, {"--input": config.input, "--output": config.output, "--model": config.model}
    )
    location = OutputLocation.prepare(config.output, config.overwrite, config.reads())
    writer = ResultsWriter(spark, location)
    with clock.stage("list"):
        listing = list_input(spark, config.input, config.limit)
    model_uri = storage.join(config.model, layout.PCA_MODEL)
    pca_model = PipelineModel.load(storage.spark_uri(model_uri))
    network = broadcast_network(spark, engine, weights, kept.network if kept else None)
    with (
        location.claimed(writer.run_id),
        listing,
        network,
        writer.staged(network.provenance) as staging,
    ):
        with clock.stage("extract"):
            extraction = extract(
                spark,
                listing,
                ExtractionWork.everything(listing),
                network,
                config.batch_size,
                engine_threads(spark),
                staging,
            )
        featurized = extraction.counts.featurized
        log.info("featurized %d images, rejected %d", featurized, extraction.counts.rejected)
        with clock.stage("project"):
            written = writer.write_tables(
                extraction.valid_files(), extraction.rejected, Projection.of(pca_model)
            )
            extraction.check_featurized(written)
            csv_rows = writer.write_csv(model_report.pca.k)
        facts = weights.facts()
        facts.model_source = model_report.weights.source
        facts.model_file_sha256 = model_report.weights.file_sha256
        facts.matches_model = True
        model_pca = model_report.pca
        report = RunReport(
            status="succeeded",
            command="transform",
            input=config.input,
            output=location.final,
            transform=TransformFacts(
                model=config.model,
                model_run_id=model_report.run_id,
                pca_model=model_uri,
                refit=False,
            ),
            counts=extraction.report_counts(listing.files_seen, csv_rows),
            pca=PcaFacts(**{**vars(model_pca), "from_model": config.model}),
            weights=facts,
            outputs=writer.outputs(pca_model=False),
            calibration=kept.facts if kept else None,
            **extraction_sections(
                spark, extraction, network, config.batch_size, config.limit, featurized
            ),
        )
        writer.publish(report, clock.total(), visuals=featurized > 0)
    return report

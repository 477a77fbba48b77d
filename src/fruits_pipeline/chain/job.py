"""The job, step by step: list the images, prepare the network, extract the features, fit
the PCA, write the results.

``run_job`` returns the run report (also written as ``report.json``).  Where the features
go, and how the output is published whole, is the results writer's business.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import SparkSession

from fruits_pipeline import engines
from fruits_pipeline.chain.calibration import calibrate, previous_network
from fruits_pipeline.chain.extract import broadcast_network, extract, extraction_sections
from fruits_pipeline.chain.filesystems import require_filesystems
from fruits_pipeline.chain.incremental import previous_run, remove_trained_outputs, trained_outputs
from fruits_pipeline.chain.listing import InputError, Listing, list_images
from fruits_pipeline.chain.pca import Projection, fit_two_pass_pca, linear_algebra
from fruits_pipeline.chain.reuse import plan_reuse
from fruits_pipeline.chain.weights import WeightsSpec, load_weights
from fruits_pipeline.defaults import DEFAULT_BATCH_SIZE, DEFAULT_VARIANCE_THRESHOLD
from fruits_pipeline.progress import StageClock
from fruits_pipeline.results.location import OutputLocation
from fruits_pipeline.results.report import PcaFacts, RunReport
from fruits_pipeline.results.writer import ResultsWriter
from fruits_pipeline.session import engine_threads

log = logging.getLogger(__name__)


@dataclass
class JobConfig:
    """What to run: every option of ``fruits-pipeline run``."""

    input: str
    output: str
    weights: WeightsSpec
    variance_threshold: float = DEFAULT_VARIANCE_THRESHOLD
    batch_size: int = DEFAULT_BATCH_SIZE
    limit: int | None = None
    overwrite: bool = False
    incremental: bool = False
    resume: bool = False
    engine: str = engines.DEFAULT_ENGINE

    def reads(self) -> dict[str, str | None]:
        """What the run reads, by option: OUTPUT must lie apart from all of it."""
        return {"--input": self.input, "--weights": self.weights.location}


def list_input(spark: SparkSession, uri: str, limit: int | None, at_least: int = 1) -> Listing:
    """List the images under ``uri``; raise InputError with fewer than ``at_least``."""
    listing = list_images(spark, uri, limit)
    if listing.files_seen == 0:
        raise InputError(f"no images (.jpg, .jpeg, .png) found under {uri!r}")
    if listing.files_seen < at_least:
        found = f"{listing.files_seen} image" + ("s" if listing.files_seen > 1 else "")
        raise InputError(f"only {found} under {uri!r}: PCA needs at least {at_least}")
    log.info("found %d images under %s", listing.files_seen, uri)
    return listing


def run_job(spark: SparkSession, config: JobConfig, spark_start_seconds: float = 0.0) -> RunReport:
    """Run the whole chain and return the run report.

    Raises a BadInput (NoFileSystemError, InputError, WeightsError, OutputExistsError,
    OutputBusyError, PCAInputError) for inputs that cannot make a run; in every failure
    case nothing at OUTPUT looks like a finished run, and the rows staged so far are kept
    for ``--resume``.
    """
    clock = StageClock(
        {"spark_start": round(spark_start_seconds, 3)} if spark_start_seconds else None
    )
    engine = engines.get(config.engine)
    # Before anything is listed, claimed or written: s3:// off EMR is refused in one line.
    require_filesystems(spark, {"--input": config.input, "--output": config.output})
    location = OutputLocation.prepare(
        config.output, config.overwrite or config.incremental, config.reads()
    )
    writer = ResultsWriter(spark, location)

    # One run at a time on an OUTPUT: a second one refuses here, naming the first.
    with location.claimed(writer.run_id):
        with clock.stage("list"):
            listing = list_input(spark, config.input, config.limit, at_least=2)
        # The network is prepared once, on the driver, and broadcast to the workers.
        calibrated = None
        with clock.stage("model"):
            weights = load_weights(config.weights)
            if not engine.calibration_images:
                network = broadcast_network(spark, engine, weights)
        # A quantized network is calibrated on a sample of the run's own images.
        if engine.calibration_images:
            with clock.stage("calibrate"):
                if config.incremental:  # the network of the run it updates, if it has one
                    calibrated = previous_network(location.final, engine, weights)
                if calibrated is None:
                    calibrated = calibrate(
                        spark, listing.images, listing.root, engine, weights, engine_threads(spark)
                    )
                network = broadcast_network(spark, engine, weights, calibrated.network)

        previous = None
        trained = []
        if config.incremental:
            previous = previous_run(spark, location.final, network.provenance)
            trained = trained_outputs(location.final)
        keep_previous = previous is not None and previous.rows is not None
        with (
            listing,
            network,
            writer.staged(network.provenance, config.resume, keep_previous) as staging,
        ):
            # A classifier trained on the previous features never survives beside new ones.
            remove_trained_outputs(location, trained)
            with clock.stage("extract"):
                plan = plan_reuse(spark, listing, staging, config.resume, previous)
                if plan.incremental is not None and trained:
                    plan.incremental.classifier_removed = True
                extraction = extract(
                    spark,
                    listing,
                    plan.work,
                    network,
                    config.batch_size,
                    engine_threads(spark),
                    staging,
                )
            featurized = extraction.counts.featurized
            log.info("featurized %d images, rejected %d", featurized, extraction.counts.rejected)
            if featurized < 2:
                raise InputError(
                    f"only {featurized} of {listing.files_seen} images could be decoded: "
                    "PCA needs at least 2"
                )

            # The PCA's passes read the stored features: the CNN never runs twice.
            with clock.stage("pca"):
                algebra = linear_algebra(spark)
                pca = fit_two_pass_pca(extraction.valid, config.variance_threshold)

            with clock.stage("write"):
                written = writer.write_tables(
                    extraction.valid_files(), extraction.rejected, Projection.of(pca.model)
                )
                extraction.check_featurized(written)
                writer.write_pca_model(pca.model)
                if calibrated is not None and calibrated.network.stored is not None:
                    writer.write_network(calibrated.network.stored)
                csv_rows = writer.write_csv(pca.k)

            report = RunReport(
                status="succeeded",
                input=config.input,
                output=location.final,
                counts=extraction.report_counts(listing.files_seen, csv_rows),
                pca=PcaFacts(
                    k=pca.k,
                    variance_threshold=config.variance_threshold,
                    variance_kept=pca.variance_kept,
                    fitted_on_rows=pca.rows,
                    cumulative_explained_variance=pca.cumulative_variance,
                    linear_algebra=algebra,
                ),
                weights=weights.facts(),
                outputs=writer.outputs(pca_model=True, network=calibrated is not None),
                incremental=plan.incremental,
                resume=plan.resume,
                calibration=calibrated.facts if calibrated else None,
                **extraction_sections(
                    spark,
                    extraction,
                    network,
                    config.batch_size,
                    config.limit,
                    featurized_now=featurized - plan.reused_featurized,
                    incremental=config.incremental,
                ),
            )
            writer.publish(report, clock.total())
    return report

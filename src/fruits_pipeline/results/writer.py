"""The results writer: everything a run or a transform leaves under OUTPUT, in one place.

``run`` and ``transform`` compute different things (a fitted PCA, or a saved one applied)
and hand the same kinds of results to a ``ResultsWriter``: the feature and rejection
tables, the PCA model (a run only), the CSV, then the report, which ``publish`` completes
with the plots and the page, writes last with ``_SUCCESS``, and publishes.  Output names
come from ``layout``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from fruits_pipeline.errors import BadInput
from fruits_pipeline.results import csv_format, layout, plots, storage
from fruits_pipeline.results.csv_format import csv_lines
from fruits_pipeline.results.location import OutputLocation
from fruits_pipeline.results.page import FIGURES, render_html
from fruits_pipeline.results.parts import (
    DerivedColumn,
    SourceFiles,
    write_parquet_parts,
    write_text_parts,
)
from fruits_pipeline.results.report import (
    Outputs,
    ProvenanceFacts,
    RunReport,
    VisualsFacts,
    write_report,
)
from fruits_pipeline.results.staging import Staging, open_staging

log = logging.getLogger(__name__)


class ResultsWriter:
    """Writes one run's outputs under its staging location, then publishes them whole."""

    def __init__(self, spark: SparkSession, location: OutputLocation) -> None:
        self.spark = spark
        self.location = location
        self.started_at = datetime.now(UTC)
        #: the run's id: in its lock, its staging and its report
        self.run_id = uuid.uuid4().hex

    def write_tables(
        self, valid: SourceFiles, rejected: DataFrame, project: Callable[[np.ndarray], np.ndarray]
    ) -> int:
        """Write ``features/`` (the valid images' rows, read by the executors from their
        files, with ``pca_features`` = ``project`` of their ``features``) and ``rejected/``
        (written even when empty); return the rows of ``features/``."""
        started = time.perf_counter()
        derived = DerivedColumn(name="pca_features", source="features", compute=project)
        # Spark's own "overwrite" would delete without asking whose files they are.
        self.location.remove(layout.FEATURES)
        parts = write_parquet_parts(self.spark, valid, self.location.path(layout.FEATURES), derived)
        rows = sum(part.rows for part in parts)
        log.info(
            "%s/ written: %d rows in %d files, %.1f s",
            layout.FEATURES,
            rows,
            len(parts),
            time.perf_counter() - started,
        )
        self.location.remove(layout.REJECTED)
        storage.write_parquet(rejected, self.location.spark_path(layout.REJECTED))
        return rows

    def write_pca_model(self, model: PipelineModel) -> None:
        """Write the fitted scaler + PCA as ``pca_model/``."""
        started = time.perf_counter()
        self.location.remove(layout.PCA_MODEL)
        model.write().save(self.location.spark_path(layout.PCA_MODEL))
        log.info("%s/ written, %.1f s", layout.PCA_MODEL, time.perf_counter() - started)

    def write_network(self, network: bytes) -> None:
        """Write the quantized feature network the run's features came from."""
        storage.write_bytes(self.location.path(layout.NETWORK), network)

    def write_csv(self, k: int) -> int:
        """Write ``features_pca.csv`` from the features table written before; return the rows."""
        started = time.perf_counter()
        features = self.spark.read.parquet(self.location.spark_path(layout.FEATURES))
        self.location.remove(layout.CSV_PARTS)
        rows = write_features_csv(
            features, self.location.path(layout.CSV), k, self.location.path(layout.CSV_PARTS)
        )
        self.location.remove(layout.CSV_PARTS)
        log.info("%s written: %d rows, %.1f s", layout.CSV, rows, time.perf_counter() - started)
        return rows

    def outputs(self, pca_model: bool, network: bool = False) -> Outputs:
        """Return where the tables, the CSV, the model, the kept network and the report
        will be."""
        final = self.location.final_path
        return Outputs(
            features=final(layout.FEATURES),
            rejected=final(layout.REJECTED),
            csv=final(layout.CSV),
            report=final(layout.REPORT_JSON),
            pca_model=final(layout.PCA_MODEL) if pca_model else None,
            network=final(layout.NETWORK) if network else None,
        )

    def publish(self, report: RunReport, seconds: dict[str, float], visuals: bool = True) -> None:
        """Complete ``report`` (run id, times, ``seconds`` per stage), write the plots and
        the page (when ``visuals``), then ``report.json`` and ``_SUCCESS`` last, and publish
        (which drops the staged rows: the tables hold them now).

        Raises LockLostError, before the markers, when another run took OUTPUT over."""
        report.run_id = self.run_id
        report.started_at = self.started_at.isoformat(timespec="seconds")
        report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        report.seconds = seconds
        if visuals:
            self.write_visuals(report)
        self.location.check_lock()
        # Written last: on S3 a folder without report.json and _SUCCESS is not a finished run.
        write_report(self.location.path(layout.REPORT_JSON), report)
        storage.write_text(self.location.path(layout.SUCCESS), "")
        self.location.publish()

    @contextmanager
    def staged(
        self, provenance: ProvenanceFacts, resume: bool = False, keep_previous: bool = False
    ) -> Iterator[Staging]:
        """Make room for the run (see ``OutputLocation.begin``) and open its staging, for
        rows made under ``provenance`` (with ``resume``, the units interrupted runs staged
        under the same key are kept for reuse: ``staging.open_staging``).  The caller holds
        OUTPUT's lock.

        If the body fails, remove whatever it wrote, so nothing at OUTPUT looks like a
        finished run; its staged units are kept for ``--resume``, unless the failure is a
        bad input (which a new run with the same input would meet again)."""
        self.location.begin(keep_previous=keep_previous)
        staging = open_staging(self.location.work, self.run_id, provenance, resume)
        try:
            yield staging
        except BadInput:
            self.location.discard(keep_work=False)
            raise
        except BaseException:
            self.location.discard(keep_work=True)
            log.warning(
                "the run failed; its staged rows are kept in %s: run it again with --resume "
                "to reuse them",
                staging.root,
            )
            raise

    def write_visuals(self, report: RunReport, max_points: int = plots.MAX_SCATTER_POINTS) -> None:
        """Write ``plots/*.png`` and ``report.html``, and record them in ``report``.

        Reads PC1/PC2 of at most ``max_points`` images from the features already written.
        A failure is logged and recorded in ``report.visuals`` but does not fail the run:
        the features are already written.
        """
        started = time.perf_counter()
        try:
            features = self.spark.read.parquet(self.location.spark_path(layout.FEATURES))
            points = plots.pca_points(features, max_points, total=report.counts.featurized)
            pngs = draw_run_plots(report, points)
            for name, png in pngs.items():
                storage.write_bytes(self.location.path(layout.PLOTS, name), png)
            report.outputs.plots = {
                name: self.location.final_path(layout.PLOTS, name) for name in pngs
            }
            report.outputs.report_html = self.location.final_path(layout.REPORT_HTML)
            report.visuals = VisualsFacts(
                scatter_points=len(points), seconds=round(time.perf_counter() - started, 3)
            )
            page = render_html(report, pngs)
            storage.write_bytes(self.location.path(layout.REPORT_HTML), page.encode("utf-8"))
            log.info("plots and report.html written in %.1f s", report.visuals.seconds)
        except Exception as error:  # the features are written: a plot must not lose them
            log.exception("could not write the plots and report.html")
            report.visuals = VisualsFacts(error=f"{type(error).__name__}: {error}")
            report.outputs.plots = None
            report.outputs.report_html = None


def draw_run_plots(report: RunReport, points) -> dict[str, bytes]:
    """Return every run's plots by file name: explained variance, PC1/PC2, labels."""
    pca, counts = report.pca, report.counts
    per_label = {label: vars(count) for label, count in counts.per_label.items()}
    return {
        layout.EXPLAINED_VARIANCE_PNG: plots.explained_variance(
            pca.cumulative_explained_variance, pca.variance_threshold, pca.k
        ),
        layout.PCA_SCATTER_PNG: plots.pca_scatter(points, total=points.attrs.get("total")),
        layout.LABELS_PNG: plots.labels_overview(per_label, counts.rejected_by_reason),
    }


def write_features_csv(features: DataFrame, uri: str, k: int, parts_uri: str) -> int:
    """Write ``path``, ``label``, ``pc_1`` … ``pc_k`` of ``features`` as one CSV at ``uri``,
    sorted by path; return the number of rows.

    The executors sort the rows, format their lines (``csv_format``) and write them in path
    order, one file per sorted partition, under ``parts_uri`` (which must not exist); the
    driver then joins those files' bytes behind the header, never looking at a row (the
    caller removes them).
    """
    sorted_rows = features.select("path", "label", "pca_features").orderBy("path")
    parts = write_text_parts(
        sorted_rows,
        parts_uri,
        lambda batch: csv_lines(batch["path"], batch["label"], batch["pca_features"], k),
    )
    storage.concatenate(
        uri, csv_format.header(k).encode("utf-8"), [storage.join(parts_uri, p.name) for p in parts]
    )
    return sum(part.rows for part in parts)


def read_plots(output: str) -> dict[str, bytes]:
    """Return the PNGs found under a finished ``OUTPUT/plots/`` by file name."""
    names = [name for name, _ in FIGURES] + [layout.CONFUSION_MATRIX_PNG]
    found = {name: storage.read_bytes(storage.join(output, layout.PLOTS, name)) for name in names}
    return {name: png for name, png in found.items() if png is not None}


def add_plot(output: str, report: RunReport, name: str, png: bytes) -> None:
    """Write the plot ``name`` into a finished OUTPUT and record it in ``report``."""
    uri = storage.join(output, layout.PLOTS, name)
    storage.write_bytes(uri, png)
    report.outputs.plots = {**(report.outputs.plots or {}), name: uri}


def update_finished(output: str, report: RunReport) -> None:
    """Render ``report.html`` again under a finished OUTPUT from ``report`` and the plots
    there, then write ``report.json`` (last, as a run does)."""
    page = storage.join(output, layout.REPORT_HTML)
    storage.write_bytes(page, render_html(report, read_plots(output)).encode("utf-8"))
    report.outputs.report_html = page
    write_report(storage.join(output, layout.REPORT_JSON), report)

"""Plots: real PNGs drawn by matplotlib (Agg), and the ones every run writes."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fruits_pipeline.results import layout, plots
from fruits_pipeline.results.location import OutputLocation
from fruits_pipeline.results.report import from_json
from fruits_pipeline.results.writer import ResultsWriter


def png_size(data: bytes) -> tuple[int, int]:
    """Decode ``data`` as a PNG (fails on anything else) and return its size in pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


@pytest.fixture(scope="module")
def run(small_run):
    return small_run


def test_explained_variance_marks_k_and_rejects_a_k_out_of_range():
    cumulative = np.cumsum(np.full(40, 1 / 40))
    assert png_size(plots.explained_variance(cumulative, 0.9, 36)) == (800, 480)
    with pytest.raises(ValueError, match="k=41"):
        plots.explained_variance(cumulative, 0.9, 41)
    with pytest.raises(ValueError):
        plots.explained_variance([], 0.9, 1)


def test_scatter_colours_the_largest_labels_and_greys_the_rest():
    rng = np.random.default_rng(0)
    sizes = {f"label {i:03d}": 1 + i % 17 for i in range(120)}
    labels = [label for label, n in sizes.items() for _ in range(n)]
    points = pd.DataFrame(
        {"label": labels, "pc1": rng.normal(size=len(labels)), "pc2": rng.normal(size=len(labels))}
    )
    top = plots.largest_labels(points["label"], 10)
    expected = sorted(sizes, key=lambda label: (-sizes[label], label))[:10]
    assert top == expected
    assert [sizes[label] for label in top] == [17] * 7 + [16] * 3  # i % 17 == 16 seven times
    assert png_size(plots.pca_scatter(points, total=5000)) == (1100, 700)
    assert png_size(plots.pca_scatter(points.iloc[:0])) == (1100, 700)  # no image at all


def test_labels_plot_grows_with_the_labels_and_survives_odd_names():
    per_label = {f"$fruit {i}$ <{i}>": {"featurized": i, "rejected": i % 3} for i in range(103)}
    per_label[""] = {"featurized": 1, "rejected": 0}  # a file at the root of a bucket
    reasons = {"empty": 2, "not_an_image": 0, "decompression_bomb": 1, "corrupt": 5}
    width, height = png_size(plots.labels_overview(per_label, reasons))
    assert width == 1100 and height > 1500
    assert plots.plain("$5 kiwi") == r"\$5 kiwi" and plots.plain("") == "(no label)"
    longest = plots.plain("é" * 127 + "x")  # 255 bytes, the longest folder name
    assert len(longest) == plots.PLOT_LABEL_CHARS and longest.endswith("é…")


def test_confusion_matrix_checks_its_shape():
    matrix = np.diag([5, 3, 0]) + np.array([[0, 1, 0], [2, 0, 0], [0, 0, 0]])
    assert png_size(plots.confusion_matrix(matrix, ["a", "b", "c"], "probe")) == (700, 700)
    with pytest.raises(ValueError, match="does not match"):
        plots.confusion_matrix(matrix, ["a", "b"], "probe")


def test_pca_points_brings_a_bounded_sample(spark):
    rows = [(f"l{i % 7}", [float(i), float(-i), 1.0]) for i in range(600)]
    frame = spark.createDataFrame(rows, "label string, pca_features array<float>")
    sample = plots.pca_points(frame, max_points=100)
    assert list(sample.columns) == ["label", "pc1", "pc2"]
    assert 60 <= len(sample) <= 100 and sample.attrs["total"] == 600
    assert (sample["pc2"] == -sample["pc1"]).all()
    one = spark.createDataFrame(
        [("a", [1.5]), ("b", [2.5])], "label string, pca_features array<float>"
    )
    assert plots.pca_points(one)["pc2"].tolist() == [0.0, 0.0]  # k = 1: no PC2


def test_every_run_writes_its_plots(run):
    written = run.report["outputs"]["plots"]
    assert set(written) == {
        layout.EXPLAINED_VARIANCE_PNG,
        layout.PCA_SCATTER_PNG,
        layout.LABELS_PNG,
    }
    for name, path in written.items():
        assert path == str(run.output / "plots" / name)
        assert png_size((run.output / "plots" / name).read_bytes())[0] >= 800
    assert run.report["visuals"]["scatter_points"] == run.report["counts"]["featurized"]
    assert run.report["outputs"]["report_html"] == str(run.output / "report.html")


def test_a_plot_failure_is_recorded_not_raised(spark, tmp_path, run):
    location = OutputLocation.prepare(str(tmp_path / "nowhere"), overwrite=False)
    report = from_json(run.report)
    report.visuals = None
    ResultsWriter(spark, location).write_visuals(report)  # no features parquet there
    assert report.visuals.error and report.outputs.report_html is None
    assert report.outputs.plots is None

"""The run's plots, drawn with matplotlib's Agg backend and returned as PNG bytes.

Every function here is pure: it takes numbers (lists, numpy arrays, pandas frames) and
returns the bytes of one PNG file, so the caller decides where it goes (a local folder,
``s3://``, or a ``data:`` URI in ``report.html``).  Figures are built with
``matplotlib.figure.Figure`` on an Agg canvas, never through ``pyplot``, so no global
state is touched and no display is needed.

``pca_points`` is the one Spark function: it brings at most a bounded sample of PC1/PC2
coordinates to the driver for ``pca_scatter``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

log = logging.getLogger(__name__)

#: Dots per inch of every PNG.
DPI = 100

#: Labels coloured in the scatter plot; the others are drawn in grey.
COLOURED_LABELS = 10

#: Most points the scatter plot brings to the driver.
MAX_SCATTER_POINTS = 20_000


#: Characters of a label a plot shows: a folder name may be 255 bytes long, and one such
#: name in the legend squeezed the scatter plot's axes to nothing.  The page's tables and
#: report.json keep every label whole.
PLOT_LABEL_CHARS = 40


def plain(text: str) -> str:
    """Return ``text`` safe for a matplotlib label: ``$`` would start mathtext, an empty
    label (a file at the root of a bucket) would be invisible, and a long one is cut to
    ``PLOT_LABEL_CHARS`` with an ellipsis."""
    if not text:
        return "(no label)"
    if len(text) > PLOT_LABEL_CHARS:
        text = text[: PLOT_LABEL_CHARS - 1] + "…"
    return text.replace("$", r"\$")


def to_png(figure: Figure) -> bytes:
    """Render ``figure`` with the Agg backend and return the PNG file's bytes."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def explained_variance(cumulative: Sequence[float], threshold: float, k: int) -> bytes:
    """Plot the cumulative explained-variance ratio against the number of components.

    ``cumulative`` holds ratios in [0, 1] for components 1..n (``report["pca"]``), the
    dashed line is ``threshold`` and the marked point is the chosen ``k``.  Returns PNG
    bytes (800x480 pixels).
    """
    values = np.asarray(cumulative, dtype=np.float64)
    if values.size == 0 or not 1 <= k <= values.size:
        raise ValueError(f"k={k} is not a component of {values.size} cumulative ratios")
    components = np.arange(1, values.size + 1)
    figure = Figure(figsize=(8, 4.8), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(components, values * 100, color="#1f77b4", linewidth=1.8, label="cumulative")
    axes.axhline(
        threshold * 100,
        color="#d62728",
        linestyle="--",
        linewidth=1.2,
        label=f"threshold {threshold:.1%}",
    )
    axes.axvline(k, color="#2ca02c", linestyle=":", linewidth=1.2)
    axes.plot(
        [k],
        [values[k - 1] * 100],
        "o",
        color="#2ca02c",
        markersize=7,
        label=f"k = {k} keeps {values[k - 1]:.1%}",
    )
    axes.set_xlim(0, values.size + 1)
    axes.set_ylim(min(values[0] * 100, threshold * 100) - 5, 101)
    axes.set_xlabel("number of principal components")
    axes.set_ylabel("cumulative explained variance (%)")
    axes.set_title(f"PCA: {k} of {values.size} components kept")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return to_png(figure)


def pca_points(
    features, max_points: int = MAX_SCATTER_POINTS, seed: int = 0, total: int | None = None
) -> pd.DataFrame:
    """Return at most ``max_points`` rows of ``label``, ``pc1``, ``pc2`` from a Spark
    DataFrame with ``label`` and ``pca_features`` (``pc2`` is 0 when k = 1); the frame's
    ``attrs["total"]`` is the number of rows sampled from.

    Samples on the executors (seeded) before anything reaches the driver, so memory on the
    driver is bounded by ``max_points`` whatever the number of images.  ``total``, when the
    caller knows the row count, saves counting it.
    """
    from pyspark.sql import functions as F

    total = features.count() if total is None else total
    if total > max_points:
        # a little over the fraction, then cut: sample() does not return an exact count
        features = features.sample(False, min(1.0, 1.1 * max_points / total), seed)
    coordinates = features.select(
        "label",
        F.col("pca_features")[0].cast("double").alias("pc1"),
        F.coalesce(F.col("pca_features")[1].cast("double"), F.lit(0.0)).alias("pc2"),
    ).limit(max_points)
    frame = coordinates.toPandas()
    log.info("scatter plot: %d of %d images", len(frame), total)
    frame.attrs["total"] = total
    return frame


def largest_labels(labels: pd.Series, count: int) -> list[str]:
    """Return the ``count`` labels with the most rows in ``labels``, largest first, ties
    broken by name (so the same labels are coloured on every run)."""
    sizes = labels.value_counts()
    ranked = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))
    return [label for label, _ in ranked[:count]]


def pca_scatter(
    points: pd.DataFrame, total: int | None = None, coloured: int = COLOURED_LABELS, seed: int = 0
) -> bytes:
    """Plot images on PC1/PC2: the ``coloured`` largest labels in colour (ties broken by
    name), every other label in grey, with a legend.

    ``points`` has ``label``, ``pc1``, ``pc2`` (see ``pca_points``); ``total`` is the number
    of images the points were sampled from (for the title).  Returns PNG bytes (1100x700).
    """
    figure = Figure(figsize=(11, 7), layout="constrained")
    axes = figure.add_subplot()
    total = len(points) if total is None else total
    sizes = points["label"].value_counts()
    top = largest_labels(points["label"], coloured)
    order = np.random.default_rng(seed).permutation(len(points))  # no label drawn on top
    shuffled = points.iloc[order]
    others = shuffled[~shuffled["label"].isin(top)]
    if len(others):
        rest = len(sizes) - len(top)
        axes.scatter(
            others["pc1"],
            others["pc2"],
            s=6,
            color="#b0b0b0",
            alpha=0.5,
            linewidths=0,
            label=f"{rest} other labels ({len(others)} images)",
        )
    palette = colormaps["tab10" if len(top) <= 10 else "tab20"]
    for index, label in enumerate(top):
        mine = shuffled[shuffled["label"] == label]
        axes.scatter(
            mine["pc1"],
            mine["pc2"],
            s=12,
            color=palette(index % palette.N),
            alpha=0.85,
            linewidths=0,
            label=f"{plain(label)} ({len(mine)})",
        )
    axes.set_xlabel("PC1")
    axes.set_ylabel("PC2")
    sampled = f", {len(points)} sampled" if len(points) < total else ""
    axes.set_title(f"{total} images on the first two principal components{sampled}")
    axes.grid(alpha=0.3)
    if len(points):
        axes.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            markerscale=2,
            title="label (images)",
            title_fontsize=9,
            frameon=False,
        )
    return to_png(figure)


def labels_overview(
    per_label: Mapping[str, Mapping[str, int]], rejected_by_reason: Mapping[str, int]
) -> bytes:
    """Plot images per label (featurized and rejected, stacked) and rejected images per
    reason, side by side.

    ``per_label`` maps label -> ``{"featurized": n, "rejected": n}`` and
    ``rejected_by_reason`` maps reason -> n (both as in ``report["counts"]``).  The figure
    grows with the number of labels so that every label name stays readable.  Returns PNG
    bytes (1100 pixels wide).
    """
    labels = sorted(per_label)
    featurized = np.array([per_label[label].get("featurized", 0) for label in labels])
    rejected = np.array([per_label[label].get("rejected", 0) for label in labels])
    height = max(3.5, 0.16 * len(labels) + 1.2)
    figure = Figure(figsize=(11, height), layout="constrained")
    # the reasons panel keeps about 3.5 inches, however tall the labels make the figure
    grid = figure.add_gridspec(2, 2, width_ratios=[3, 1], height_ratios=[3.5, height - 3.4])
    axes = figure.add_subplot(grid[:, 0])
    rows = np.arange(len(labels))
    axes.barh(rows, featurized, color="#1f77b4", label="featurized")
    axes.barh(rows, rejected, left=featurized, color="#d62728", label="rejected")
    axes.set_yticks(rows, [plain(label) for label in labels], fontsize=7 if len(labels) > 30 else 9)
    axes.invert_yaxis()
    axes.set_ylim(len(labels) - 0.5, -0.5)
    axes.set_xlabel("images")
    axes.set_xlim(0, max(1, int((featurized + rejected).max(initial=0))) * 1.08)
    axes.set_title(f"images per label ({len(labels)} labels)", loc="left")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)

    reasons = list(rejected_by_reason)
    counts = [int(rejected_by_reason[reason]) for reason in reasons]
    side = figure.add_subplot(grid[0, 1])
    side.bar(range(len(reasons)), counts, color="#d62728")
    side.set_xticks(range(len(reasons)), reasons, rotation=45, ha="right", fontsize=8)
    side.set_ylabel("images")
    side.set_title(f"rejected per reason ({sum(counts)} in all)")
    side.set_ylim(0, max(1, max(counts, default=0)) * 1.15)
    side.yaxis.set_major_locator(MaxNLocator(integer=True))
    for position, count in enumerate(counts):
        side.annotate(str(count), (position, count), ha="center", va="bottom", fontsize=8)
    side.grid(axis="y", alpha=0.3)
    return to_png(figure)


def confusion_matrix(matrix: np.ndarray, labels: Sequence[str], title: str) -> bytes:
    """Plot a confusion matrix, rows (true labels) normalised to sum to 1.

    ``matrix[i, j]`` counts test images of label ``labels[i]`` predicted as ``labels[j]``.
    Label names are shown when there are at most 120, counts in the cells when there are at
    most 20; the colour is the share of the row (recall on the diagonal).  Returns PNG bytes
    (square, 700 to 1500 pixels).
    """
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(labels):
        raise ValueError(f"matrix {counts.shape} does not match {len(labels)} labels")
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(labels)
    side = float(np.clip(3 + 0.11 * n, 7, 15))
    figure = Figure(figsize=(side, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.6, label="share of the true label's test images")
    if n <= 20:  # few labels: write the counts in the cells
        for (row, column), count in np.ndenumerate(counts.astype(np.int64)):
            if count:
                colour = "white" if shares[row, column] > 0.5 else "black"
                axes.text(column, row, str(count), ha="center", va="center", color=colour)
    if n <= 120:
        font = 9 if n <= 20 else max(3.5, 9 - n / 20)
        names = [plain(label) for label in labels]
        axes.set_xticks(range(n), names, rotation=90, fontsize=font)
        axes.set_yticks(range(n), names, fontsize=font)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    axes.set_title(title)
    return to_png(figure)

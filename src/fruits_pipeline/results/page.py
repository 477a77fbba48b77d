"""``report.html``: one self-contained page with the run's facts and its plots.

The page has no scripts, no external styles and no links it needs: every plot is a PNG
embedded as a ``data:image/png;base64`` URI, so it reads the same offline, attached to a
mail or opened from S3.

``write_visuals`` is what a run calls, just before ``report.json``: it writes
``plots/*.png`` and ``report.html``.  ``rewrite_html`` renders the page again from a
finished OUTPUT (``evaluate`` calls it after adding its section to the report).
"""

from __future__ import annotations

import base64
import html
import logging
import os
import time

import fsspec

from fruits_pipeline.results import plots
from fruits_pipeline.results import storage as outputs

log = logging.getLogger(__name__)

HTML_NAME = "report.html"
PLOTS = "plots"

#: The plots in the order the page shows them, with their captions.
FIGURES = [
    (plots.EXPLAINED_VARIANCE, "Cumulative explained variance of PCA pass one"),
    (plots.PCA_SCATTER, "Images on PC1/PC2, coloured by label"),
    (plots.LABELS, "Images per label and rejected images per reason"),
]

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1b1f24; background: #f6f7f9; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { margin: 0 0 4px; font-size: 1.7em; }
h2 { margin-top: 34px; border-bottom: 2px solid #d0d7de; padding-bottom: 4px; }
.sub { color: #57606a; margin: 0 0 16px; }
.banner { background: #fff1e5; border: 2px solid #d4761c; border-radius: 6px;
          padding: 10px 14px; margin: 14px 0; font-weight: 600; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 16px;
        min-width: 130px; }
.card .value { font-size: 1.6em; font-weight: 700; }
.card .name { color: #57606a; font-size: 0.85em; }
table { border-collapse: collapse; background: #fff; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.9em; word-break: break-all; }
figure { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; margin: 14px 0;
         padding: 10px; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: #57606a; font-size: 0.9em; margin-top: 6px; text-align: center; }
details { margin: 8px 0; }
footer { color: #57606a; font-size: 0.85em; margin-top: 36px; }
"""


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def png_data_uri(png: bytes) -> str:
    """Return ``png`` as a ``data:image/png;base64,…`` URI for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _table(rows: list[tuple[object, object]], numeric: bool = False) -> str:
    cell = '<td class="num">' if numeric else "<td>"
    body = "".join(f"<tr><th>{_esc(key)}</th>{cell}{_esc(val)}</td></tr>" for key, val in rows)
    return f"<table>{body}</table>"


def _grid(header: list[str], rows: list[list[object]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_esc(name)}</th>" for name in header)
    lines = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_esc(v)}</td>' if i >= numeric_from else f"<td>{_esc(v)}</td>"
            for i, v in enumerate(row)
        )
        lines.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _card(value: object, name: str) -> str:
    return (
        f'<div class="card"><div class="value">{_esc(value)}</div>'
        f'<div class="name">{_esc(name)}</div></div>'
    )


def _figure(png: bytes | None, name: str, caption: str) -> str:
    if png is None:
        return f"<p>The plot <code>{_esc(name)}</code> is missing.</p>"
    return (
        f'<figure><img src="{png_data_uri(png)}" alt="{_esc(caption)}" id="{_esc(name)}">'
        f"<figcaption>{_esc(caption)} (<code>plots/{_esc(name)}</code>)</figcaption></figure>"
    )


def not_meaningful_banner(weights: dict) -> str:
    """Return the warning shown when the features come from seeded random weights."""
    return (
        f"These features come from RANDOM weights ({weights.get('source')}): they are NOT "
        "meaningful. They only show that the pipeline runs; any accuracy measured on them "
        "says nothing about real fruit. Run again with --weights imagenet or a MobileNetV2 "
        "weights file."
    )


def render_html(report: dict, pngs: dict[str, bytes]) -> str:
    """Return the whole ``report.html`` page for ``report`` (the ``report.json`` dict).

    ``pngs`` maps plot file names (``plots.EXPLAINED_VARIANCE``…) to PNG bytes; each is
    embedded as a data URI.  Sections whose facts are absent from ``report`` are left out,
    so the page also renders the report of a ``transform`` run.
    """
    counts = report.get("counts", {})
    pca = report.get("pca", {})
    weights = report.get("weights", {})
    title = "fruits-pipeline " + ("transform" if "transform" in report else "run") + " report"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body><main>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="sub">{_esc(report.get("output"))} &middot; run {_esc(report.get("run_id"))}'
        f" &middot; {_esc(report.get('started_at'))} to {_esc(report.get('finished_at'))}</p>",
    ]
    if weights and not weights.get("meaningful", True):
        parts.append(
            f'<div class="banner" id="not-meaningful">{_esc(not_meaningful_banner(weights))}</div>'
        )
    parts.append('<section id="summary"><h2>Summary</h2><div class="cards">')
    parts.append(_card(counts.get("files_seen", "?"), "images read"))
    parts.append(_card(counts.get("featurized", "?"), "featurized"))
    parts.append(_card(counts.get("rejected", "?"), "rejected"))
    parts.append(_card(len(counts.get("per_label", {})), "labels"))
    if pca:
        parts.append(_card(pca.get("k"), "PCA components (k)"))
        parts.append(_card(f"{pca.get('variance_kept', 0):.1%}", "variance kept"))
    evaluation = report.get("evaluation")
    if evaluation:
        parts.append(_card(f"{evaluation['accuracy']:.1%}", "probe accuracy"))
    parts.append("</div>")
    facts = [
        ("status", report.get("status")),
        ("input", report.get("input")),
        ("output", report.get("output")),
    ]
    if "transform" in report:
        facts.append(("PCA model from", report["transform"].get("model")))
    if pca:
        facts += [
            ("variance threshold", f"{pca.get('variance_threshold', 0):.1%}"),
            ("PCA fitted on", f"{pca.get('fitted_on_rows')} images"),
        ]
    facts += [
        ("weights", weights.get("source")),
        ("weights meaningful", "yes" if weights.get("meaningful") else "NO (random weights)"),
        ("weights file sha256", weights.get("file_sha256") or "none (no file)"),
        ("weight arrays sha256", weights.get("arrays_sha256")),
    ]
    parts.append(_table(facts))
    parts.append("</section>")

    shown = [(name, caption) for name, caption in FIGURES if name in pngs or pca]
    if shown:
        parts.append('<section id="plots"><h2>Plots</h2>')
        for name, caption in shown:
            parts.append(_figure(pngs.get(name), name, caption))
        parts.append("</section>")

    if evaluation:
        parts.append(_evaluation_section(evaluation, pngs.get(plots.CONFUSION_MATRIX)))

    reasons = counts.get("rejected_by_reason", {})
    per_label = counts.get("per_label", {})
    parts.append('<section id="counts"><h2>Counts</h2>')
    parts.append("<h3>Rejected images per reason</h3>")
    parts.append(_grid(["reason", "images"], [[r, n] for r, n in reasons.items()]))
    parts.append(f"<details><summary>Images per label ({len(per_label)} labels)</summary>")
    parts.append(
        _grid(
            ["label", "featurized", "rejected"],
            [
                [label or "(no label)", c.get("featurized"), c.get("rejected")]
                for label, c in per_label.items()
            ],
        )
    )
    parts.append("</details></section>")

    parts.append('<section id="run"><h2>Run</h2>')
    seconds = report.get("seconds", {})
    if seconds:
        parts.append("<h3>Seconds per stage</h3>")
        parts.append(_grid(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in seconds.items()]))
    if "model_builds" in report:
        builds = report["model_builds"]
        cnn = report.get("cnn", {})
        parts.append("<h3>Model</h3>")
        parts.append(
            _table(
                [
                    (
                        "model builds (driver, workers)",
                        f"{builds.get('driver')}, {builds.get('workers')}",
                    ),
                    ("CNN calls per image", cnn.get("calls_per_image")),
                    ("CNN batches", cnn.get("batches")),
                ]
            )
        )
    if "settings" in report:
        parts.append("<h3>Settings</h3>")
        parts.append(_table(list(report["settings"].items())))
    if "versions" in report:
        parts.append("<h3>Versions</h3>")
        parts.append(_table(list(report["versions"].items())))
    if "outputs" in report:
        parts.append("<h3>Outputs</h3>")
        parts.append(_table([(k, v) for k, v in report["outputs"].items() if k != "plots"]))
    parts.append("</section>")
    parts.append(
        "<footer>Written by fruits-pipeline. The same facts are in <code>report.json</code>;"
        " the plots are also files under <code>plots/</code>.</footer>"
    )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _evaluation_section(evaluation: dict, confusion_png: bytes | None) -> str:
    parts = ['<section id="evaluation"><h2>Evaluation: linear probe</h2>']
    if not evaluation.get("meaningful", True):
        parts.append(f'<div class="banner">{_esc(evaluation.get("note"))}</div>')
    parts.append('<div class="cards">')
    parts.append(_card(f"{evaluation['accuracy']:.1%}", "accuracy"))
    parts.append(_card(f"{evaluation['macro_f1']:.3f}", "macro-F1"))
    parts.append(_card(evaluation["train"]["images"], "training images"))
    parts.append(_card(evaluation["test"]["images"], "test images"))
    parts.append("</div>")
    model = evaluation.get("model", {})
    parts.append(
        _table(
            [
                ("classifier", model.get("name")),
                (
                    "trained on",
                    f"{evaluation['train']['images']} images under "
                    f"'{evaluation['train']['split']}' ({evaluation['train']['labels']} labels)",
                ),
                (
                    "tested on",
                    f"{evaluation['test']['images']} images under "
                    f"'{evaluation['test']['split']}' ({evaluation['test']['labels']} labels)",
                ),
                ("training accuracy", f"{evaluation['train']['accuracy']:.1%}"),
                (
                    "test labels never seen in training",
                    ", ".join(evaluation["test"]["unseen_labels"]) or "none",
                ),
                (
                    "max iterations, regularisation",
                    f"{model.get('max_iter')}, {model.get('reg_param')}",
                ),
                ("seconds", evaluation.get("seconds")),
            ]
        )
    )
    worst = evaluation.get("worst_classes", [])
    parts.append(f"<h3>The {len(worst)} worst classes (lowest F1)</h3>")
    rows = [
        [
            w["label"] or "(no label)",
            w["support"],
            f"{w['recall']:.2f}",
            f"{w['precision']:.2f}",
            f"{w['f1']:.2f}",
            f"{w['confused_with']} ({w['confused_count']})" if w["confused_with"] else "-",
        ]
        for w in worst
    ]
    header = ["label", "test images", "recall", "precision", "F1", "most often taken for"]
    parts.append(_grid(header, rows) if rows else "<p>No test images.</p>")
    parts.append(
        _figure(confusion_png, plots.CONFUSION_MATRIX, "Confusion matrix on the test split")
    )
    parts.append("</section>")
    return "\n".join(parts)


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` (local path or ``s3://``), creating local folders."""
    fs, path = fsspec.core.url_to_fs(outputs.fsspec_uri(uri))
    if not outputs.is_remote(uri):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fs.pipe_file(path, data)


def read_bytes(uri: str) -> bytes | None:
    """Return the bytes at ``uri`` (local path or ``s3://``), or None when it is absent."""
    fs, path = fsspec.core.url_to_fs(outputs.fsspec_uri(uri))
    return fs.cat_file(path) if fs.exists(path) else None


def write_visuals(
    spark, location, report: dict, max_points: int = plots.MAX_SCATTER_POINTS
) -> None:
    """Write ``plots/*.png`` and ``report.html`` under the run's staging output.

    Reads PC1/PC2 of at most ``max_points`` images from the features parquet already
    written there.  Adds the plots' and the page's final paths to ``report["outputs"]`` and
    ``report["visuals"]`` (seconds taken, or the error).  A failure here is logged and
    recorded in the report but does not fail the run: the features are already written.
    """
    from fruits_pipeline.commands.run import FEATURES

    started = time.perf_counter()
    try:
        pca, counts = report["pca"], report["counts"]
        features = spark.read.parquet(location.spark_path(FEATURES))
        points = plots.pca_points(features, max_points, total=counts["featurized"])
        pngs = {
            plots.EXPLAINED_VARIANCE: plots.explained_variance(
                pca["cumulative_explained_variance"], pca["variance_threshold"], pca["k"]
            ),
            plots.PCA_SCATTER: plots.pca_scatter(points, total=points.attrs.get("total")),
            plots.LABELS: plots.labels_overview(counts["per_label"], counts["rejected_by_reason"]),
        }
        for name, png in pngs.items():
            write_bytes(location.path(PLOTS, name), png)
        report.setdefault("outputs", {})["plots"] = {
            name: location.final_path(PLOTS, name) for name in pngs
        }
        report["outputs"]["report_html"] = location.final_path(HTML_NAME)
        report["visuals"] = {"scatter_points": len(points)}
        report["visuals"]["seconds"] = round(time.perf_counter() - started, 3)
        page = render_html(report, pngs)
        write_bytes(location.path(HTML_NAME), page.encode("utf-8"))
        log.info("plots and report.html written in %.1f s", report["visuals"]["seconds"])
    except Exception as error:  # the features are written: a plot must not lose them
        log.exception("could not write the plots and report.html")
        report["visuals"] = {"error": f"{type(error).__name__}: {error}"}
        report.get("outputs", {}).pop("plots", None)
        report.get("outputs", {}).pop("report_html", None)


def read_plots(output: str) -> dict[str, bytes]:
    """Return the PNGs found under ``OUTPUT/plots/`` by file name."""
    names = [name for name, _ in FIGURES] + [plots.CONFUSION_MATRIX]
    found = {name: read_bytes(outputs.join(output, PLOTS, name)) for name in names}
    return {name: png for name, png in found.items() if png is not None}


def rewrite_html(output: str, report: dict) -> str:
    """Render ``report.html`` again under a finished ``output`` from ``report`` and the
    plots already there; return the page's path."""
    uri = outputs.join(output, HTML_NAME)
    write_bytes(uri, render_html(report, read_plots(output)).encode("utf-8"))
    return uri

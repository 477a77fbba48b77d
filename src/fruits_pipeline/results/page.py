"""``report.html``: one self-contained page with the run's facts and its plots.

The page has no scripts, no external styles and no links it needs: every plot is a PNG
embedded as a ``data:image/png;base64`` URI, so it reads the same offline, attached to a
mail or opened from S3.  ``render_html`` is pure: a report and PNG bytes in, the page out.
"""

from __future__ import annotations

import base64
import html

from fruits_pipeline.results import layout
from fruits_pipeline.results.report import CalibrationFacts, Evaluation, RunReport, WeightsFacts

#: The plots in the order the page shows them, with their captions.
FIGURES = [
    (layout.EXPLAINED_VARIANCE_PNG, "Cumulative explained variance of PCA pass one"),
    (layout.PCA_SCATTER_PNG, "Images on PC1/PC2, coloured by label"),
    (layout.LABELS_PNG, "Images per label and rejected images per reason"),
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


def not_meaningful_banner(weights: WeightsFacts) -> str:
    """Return the warning shown when the features come from seeded random weights."""
    return (
        f"These features come from RANDOM weights ({weights.source}): they are NOT "
        "meaningful. They only show that the pipeline runs; any accuracy measured on them "
        "says nothing about real fruit. Run again with --weights imagenet or a MobileNetV2 "
        "weights file."
    )


def render_html(report: RunReport, pngs: dict[str, bytes]) -> str:
    """Return the whole ``report.html`` page for ``report``.

    ``pngs`` maps plot file names (``layout.EXPLAINED_VARIANCE_PNG``…) to PNG bytes; each is
    embedded as a data URI.  A transform's page says so and names the model it used.
    """
    counts, pca, weights = report.counts, report.pca, report.weights
    title = "fruits-pipeline " + ("transform" if report.is_transform else "run") + " report"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body><main>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="sub">{_esc(report.output)} &middot; run {_esc(report.run_id)}'
        f" &middot; {_esc(report.started_at)} to {_esc(report.finished_at)}</p>",
    ]
    if not weights.meaningful:
        parts.append(
            f'<div class="banner" id="not-meaningful">{_esc(not_meaningful_banner(weights))}</div>'
        )
    parts.append('<section id="summary"><h2>Summary</h2><div class="cards">')
    parts.append(_card(counts.files_seen, "images read"))
    parts.append(_card(counts.featurized, "featurized"))
    parts.append(_card(counts.rejected, "rejected"))
    parts.append(_card(len(counts.per_label), "labels"))
    parts.append(_card(pca.k, "PCA components (k)"))
    parts.append(_card(f"{pca.variance_kept:.1%}", "variance kept"))
    if report.evaluation:
        parts.append(_card(f"{report.evaluation.accuracy:.1%}", "classifier accuracy"))
    parts.append("</div>")
    facts = [("status", report.status), ("input", report.input), ("output", report.output)]
    if report.transform:
        facts.append(("PCA model from", report.transform.model))
    facts += [
        ("variance threshold", f"{pca.variance_threshold:.1%}"),
        ("PCA fitted on", f"{pca.fitted_on_rows} images"),
        ("weights", weights.source),
        ("weights meaningful", "yes" if weights.meaningful else "NO (random weights)"),
        ("weights file sha256", weights.file_sha256 or "none (no file)"),
        ("weight arrays sha256", weights.arrays_sha256),
    ]
    parts.append(_table(facts))
    parts.append("</section>")

    parts.append('<section id="plots"><h2>Plots</h2>')
    for name, caption in FIGURES:
        parts.append(_figure(pngs.get(name), name, caption))
    parts.append("</section>")

    if report.evaluation:
        confusion = pngs.get(layout.CONFUSION_MATRIX_PNG)
        parts.append(_evaluation_section(report.evaluation, confusion))

    parts.append('<section id="counts"><h2>Counts</h2>')
    parts.append("<h3>Rejected images per reason</h3>")
    parts.append(
        _grid(["reason", "images"], [[r, n] for r, n in counts.rejected_by_reason.items()])
    )
    parts.append(f"<details><summary>Images per label ({len(counts.per_label)} labels)</summary>")
    parts.append(
        _grid(
            ["label", "featurized", "rejected"],
            [
                [label or "(no label)", c.featurized, c.rejected]
                for label, c in counts.per_label.items()
            ],
        )
    )
    parts.append("</details></section>")

    parts.append('<section id="run"><h2>Run</h2>')
    if report.seconds:
        parts.append("<h3>Seconds per stage</h3>")
        parts.append(
            _grid(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in report.seconds.items()])
        )
    builds, cnn = report.model_builds, report.cnn
    if report.calibration:
        parts.append(_calibration_part(report.calibration))
    parts.append("<h3>Model</h3>")
    parts.append(
        _table(
            [
                ("model builds (driver, workers)", f"{builds.driver}, {builds.workers}"),
                ("CNN calls per image", cnn.calls_per_image),
                ("CNN batches", cnn.batches),
            ]
        )
    )
    parts.append("<h3>Settings</h3>")
    parts.append(_table([(k, v) for k, v in vars(report.settings).items() if v is not None]))
    parts.append("<h3>Versions</h3>")
    parts.append(_table(list(report.versions.items())))
    parts.append("<h3>Outputs</h3>")
    parts.append(
        _table(
            [
                (name, where)
                for name, where in vars(report.outputs).items()
                if where is not None and name != "plots"
            ]
        )
    )
    parts.append("</section>")
    parts.append(
        "<footer>Written by fruits-pipeline. The same facts are in <code>report.json</code>;"
        " the plots are also files under <code>plots/</code>.</footer>"
    )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _calibration_part(calibration: CalibrationFacts) -> str:
    """The quantized network: its precision, its calibration sample, its fidelity."""
    rows: list[tuple[object, object]] = [
        ("precision", calibration.precision),
        ("calibration images", calibration.images),
        ("their paths' sha256", calibration.paths_sha256),
        ("calibration digest", calibration.digest),
        ("network sha256", calibration.network_sha256),
    ]
    rows += [(f"quantization {name}", value) for name, value in calibration.settings.items()]
    if calibration.restored_from:
        rows.append(("network kept by", calibration.restored_from))
    fidelity = calibration.fidelity
    if fidelity:
        rows += [
            (
                "cosine to float32 features (median, min, mean)",
                f"{fidelity.cosine_median:.4f}, {fidelity.cosine_min:.4f}, "
                f"{fidelity.cosine_mean:.4f}",
            ),
            (
                "fidelity measured on",
                f"{fidelity.images} images"
                + (" not in the calibration sample" if fidelity.held_out else " (calibration's)"),
            ),
        ]
    return '<h3 id="calibration">Quantized network</h3>' + _table(rows)


def _evaluation_section(evaluation: Evaluation, confusion_png: bytes | None) -> str:
    parts = ['<section id="evaluation"><h2>Classifier: trained and tested</h2>']
    if not evaluation.meaningful:
        parts.append(f'<div class="banner">{_esc(evaluation.note)}</div>')
    train, test, model = evaluation.train, evaluation.test, evaluation.model
    parts.append('<div class="cards">')
    parts.append(_card(f"{evaluation.accuracy:.1%}", "accuracy"))
    parts.append(_card(f"{evaluation.macro_f1:.3f}", "macro-F1"))
    parts.append(_card(train.images, "training images"))
    parts.append(_card(test.images, "test images"))
    parts.append("</div>")
    parts.append(
        _table(
            [
                ("classifier", model.name),
                (
                    "trained on",
                    f"{train.images} images under '{train.split}' ({train.labels} labels)",
                ),
                ("tested on", f"{test.images} images under '{test.split}' ({test.labels} labels)"),
                ("training accuracy", f"{train.accuracy:.1%}"),
                (
                    "test labels never seen in training",
                    ", ".join(test.unseen_labels or []) or "none",
                ),
                ("max iterations, regularisation", f"{model.max_iter}, {model.reg_param:g}"),
                ("saved as", model.location or "not saved"),
                ("seconds", evaluation.seconds),
            ]
        )
    )
    choice = model.regularisation
    if choice and choice.tried:
        parts.append(
            f"<h3>Regularisation, chosen on {choice.validation_images} validation images</h3>"
        )
        parts.append(f"<p>{_esc(choice.rule)}.</p>")
        rows = [
            [
                f"{t.reg_param:g}" + (" (chosen)" if t.reg_param == choice.chosen else ""),
                f"{t.accuracy:.2%}",
                f"{t.log_loss:.4f}",
            ]
            for t in choice.tried
        ]
        header = ["regularisation", "validation accuracy", "validation log-loss"]
        parts.append(_grid(header, rows))
    worst = evaluation.worst_classes
    parts.append(f"<h3>The {len(worst)} worst classes (lowest F1)</h3>")
    rows = [
        [
            w.label or "(no label)",
            w.support,
            f"{w.recall:.2f}",
            f"{w.precision:.2f}",
            f"{w.f1:.2f}",
            f"{w.confused_with} ({w.confused_count})" if w.confused_with else "-",
        ]
        for w in worst
    ]
    header = ["label", "test images", "recall", "precision", "F1", "most often taken for"]
    parts.append(_grid(header, rows) if rows else "<p>No test images.</p>")
    parts.append(
        _figure(confusion_png, layout.CONFUSION_MATRIX_PNG, "Confusion matrix on the test split")
    )
    parts.append("</section>")
    return "\n".join(parts)

"""The small run (``results_run``) trained and exported, shared by the tests of ``train``,
``export`` and ``predict`` through the session fixtures ``trained_run`` and ``exported``
(conftest.py): TFLite conversion is slow, so it happens once per test session.  The
training happens in a copy of the small run, which stays as ``run`` wrote it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from results_run import SmallRun

from fruits_pipeline.cli import main
from fruits_pipeline.results import layout

#: Calibration images of the session's int8 model (the small run has 80 training images).
CALIBRATION_IMAGES = 12

#: How far a float model's probabilities may be from Spark's.  The ONNX model runs the
#: arithmetic of the run's own engine (ONNX Runtime); TFLite's float kernels sum in another
#: order, which the tests' seeded network amplifies to about 1.6e-4 (with the real ImageNet
#: weights, 1.0e-5 on 2,060 test images: `make bench-classifier`, docs/performance.md).
PROBABILITY_TOLERANCE = {layout.ONNX_MODEL: 1e-4, layout.TFLITE_FLOAT32_MODEL: 1e-3}


@dataclass
class Exported:
    """The small run, trained, and the folder ``export`` wrote for it."""

    run: SmallRun
    folder: Path
    card: dict
    summary: str


def train_copy(run: SmallRun, base: Path) -> SmallRun:
    """Copy ``run``'s OUTPUT into the new folder ``base``, train it, and return the copy."""
    output = base / "output"
    shutil.copytree(run.output, output, symlinks=True)
    code = main(["train", str(output), "--max-iter", "30", "--quiet"], default_master="local[2]")
    assert code == 0, "train failed on the small run"
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    return SmallRun(run.input, output, report, run.weights, run.real_data)


def export_run(run: SmallRun, folder: Path) -> Exported:
    """Export the trained ``run`` into ``folder`` (which must not exist yet)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(
            [
                "export",
                str(run.output),
                "--to",
                str(folder),
                "--calibration-images",
                str(CALIBRATION_IMAGES),
                "--latency-runs",
                "3",
                "--quiet",
            ],
            default_master="local[2]",
        )
    assert code == 0, err.getvalue()[-3000:]
    card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
    return Exported(run, folder, card, out.getvalue())

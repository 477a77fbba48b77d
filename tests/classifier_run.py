"""The session's small run (``results_run``) trained once and exported once, shared by the
tests of ``train``, ``export`` and ``predict``: TFLite conversion is slow, so it happens
once per test session."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from results_run import SmallRun, small_run

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


_DONE: dict[str, object] = {}


def trained_run(tmp_path_factory, weights_file: Path) -> SmallRun:
    """Return the session's small run after ``fruits-pipeline train`` (run the first time)."""
    run = small_run(tmp_path_factory, weights_file)
    if "trained" not in _DONE:
        code = main(
            ["train", str(run.output), "--max-iter", "30", "--quiet"], default_master="local[2]"
        )
        assert code == 0, "train failed on the small run"
        _DONE["trained"] = json.loads((run.output / "report.json").read_text(encoding="utf-8"))
    return run


def exported(tmp_path_factory, weights_file: Path) -> Exported:
    """Return the session's export of the trained small run (made the first time)."""
    run = trained_run(tmp_path_factory, weights_file)
    if "exported" not in _DONE:
        folder = tmp_path_factory.mktemp("export") / "models"
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
        _DONE["exported"] = Exported(run, folder, card, out.getvalue())
    return _DONE["exported"]

"""Running the command line in-process, as the tests that need a finished run do."""

from __future__ import annotations

import json
from pathlib import Path

from fruits_pipeline.cli import main


def run_ok(capsys, *args: str) -> tuple[dict, str]:
    """Run ``fruits-pipeline run ARGS`` on the test session's SparkSession; fail the test
    unless it exits 0.  Returns the run's report.json and the printed summary."""
    code = main(["run", *args], default_master="local[2,2]")
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    output = Path(args[args.index("--output") + 1])
    return json.loads((output / "report.json").read_text()), captured.out

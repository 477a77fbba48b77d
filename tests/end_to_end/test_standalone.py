"""Executors in their own JVMs, as on EMR: the job on a Spark standalone cluster on
127.0.0.1, submitted with spark-submit, the package shipped with --py-files
(tests/standalone_run.py, started in the background: tests/background.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from standalone_run import JOB_OPTIONS, SHIPPED_VERSION

from fruits_pipeline.cli import main

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def features_by_path(spark, output: Path) -> dict[str, tuple[str, list[float]]]:
    return {
        r["path"]: (r["label"], r["features"])
        for r in spark.read.parquet(str(output / "features")).collect()
    }


def test_standalone_cluster_gives_the_local_result(spark, capsys, tmp_path, background):
    run = background.take("test_standalone_cluster_gives_the_local_result")
    assert run.done.returncode == 0, run.done.stderr[-4000:]

    local = tmp_path / "local"
    options = ["--input", str(run.source), *JOB_OPTIONS, "--output", str(local)]
    assert main(["run", *options], default_master="local[2]") == 0
    capsys.readouterr()

    report = json.loads((run.output / "report.json").read_text())
    assert report["versions"]["fruits_pipeline"] == SHIPPED_VERSION  # not the installed copy
    assert report["settings"]["master"] == run.master
    assert report["model_builds"]["workers"] == 2  # once per executor's Python worker
    assert report["cnn"]["calls_per_image"] == 1.0
    assert report["counts"]["featurized"] == 18

    ours, theirs = features_by_path(spark, run.output), features_by_path(spark, local)
    assert sorted(ours) == sorted(theirs)
    for path, (label, values) in ours.items():
        assert label == theirs[path][0]
        assert np.allclose(values, theirs[path][1], atol=1e-5)

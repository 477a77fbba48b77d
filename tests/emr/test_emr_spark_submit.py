"""The step we send is a step that works: its spark-submit arguments, run with the local
spark-submit on a few images.

Two swaps, both explicit below: the s3:// paths become local folders holding the very bytes
the submitter uploads, and ``--deploy-mode cluster`` becomes ``--master local[2]`` (a local
master cannot run in cluster mode; on EMR the master is YARN, from spark-defaults).
Everything else (--conf, --py-files with the zip, the entry file, the job options) is sent
as built.  Slow (a Spark start and a CNN pass): the only such test in tests/emr."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import networks
import pytest

from fruits_pipeline.emr import bundle, options, requests, targets
from fruits_pipeline.session import QUICK_JVM_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv" / "bin"


@pytest.mark.slow
@pytest.mark.spark
def test_the_step_runs_with_local_spark_submit(tmp_path, network_cache):
    from fruits_pipeline.sample_images import write_sample_tree

    images = tmp_path / "images"
    count = write_sample_tree(str(images), per_class=2, seed=0)
    parsed = options.parse_options(
        ["--bucket", "fruits-eu", "--input", "s3://fruits-eu/data/Test/", "--run-id", "r1"]
        + ["--create", "--", "--weights", "random:0", "--batch-size", "8"]
    )
    kit = bundle.KitFiles.find()
    plan = requests.make_plan(parsed, kit, tmp_path, targets.target_for(parsed, kit))
    args = plan.job.step["HadoopJarStep"]["Args"]

    # Swap 1: s3:// -> local folders.  The code folder gets exactly what would be uploaded.
    code = tmp_path / "code"
    code.mkdir()
    for file in plan.files:
        (code / file.name).write_bytes(file.body)
    output = tmp_path / "output"
    local = {
        plan.layout.code: f"{code}/",
        parsed.input: f"{images}/",
        plan.layout.output: f"{output}/",
    }
    swapped = []
    for arg in args:
        for uri, path in local.items():
            arg = arg.replace(uri, path)
        swapped.append(arg)
    assert not [arg for arg in swapped if arg.startswith("s3://")]

    # Swap 2: cluster deploy mode -> a local master.
    assert swapped[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    command = [str(VENV / "spark-submit"), "--master", "local[2]", *swapped[3:]]

    python = str(VENV / "python")
    env = {
        **os.environ,
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # the JIT flags of a laptop run for spark-submit's JVM, in its environment, so that
        # the command stays the step's (a cold, short JVM spends most of its CPU compiling)
        "SPARK_SUBMIT_OPTS": QUICK_JVM_OPTIONS,
    }
    for name in ("AWS_ENDPOINT_URL", "SPARK_HOME", "PYTHONPATH"):
        env.pop(name, None)
    # the session's networks (tests/networks.py): a hook folder alone on PYTHONPATH, after
    # which spark-submit puts the --py-files zip first, so that the driver runs the zip's code
    cached = networks.process_env(network_cache)
    env.update(PYTHONPATH=cached["PYTHONPATH"], **{networks.ENV: cached[networks.ENV]})
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]

    report = json.loads((output / "report.json").read_text())
    assert report["counts"]["files_seen"] == count == 12
    assert report["counts"]["featurized"] == count
    assert report["settings"]["master"] == "local[2]"
    assert report["settings"]["batch_size"] == 8
    with open(output / "features_pca.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == count + 1
    assert "RANDOM WEIGHTS" in done.stdout  # the job's own summary, printed under spark-submit

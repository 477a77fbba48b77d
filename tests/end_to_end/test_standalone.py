"""Executors in their own JVMs, as on EMR: a Spark standalone master and two workers on
127.0.0.1, the job submitted with spark-submit and the package shipped with --py-files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import networks
import numpy as np
import pyspark
import pytest
from s3_server import free_port

from fruits_pipeline.cli import main
from fruits_pipeline.sample_images import write_sample_tree
from fruits_pipeline.session import QUICK_JVM_OPTIONS

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SPARK_HOME = Path(pyspark.__file__).parent
SHIPPED_VERSION = "0.0.0+shipped-by-py-files"


def shipped_package(folder: Path) -> Path:
    """Zip src/fruits_pipeline for --py-files, with a version of its own, so that the test
    can tell the shipped code from the copy installed in the test's environment."""
    archive = folder / "fruits_pipeline.zip"
    source = ROOT / "src" / "fruits_pipeline"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(source.rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if path.name == "__init__.py" and path.parent == source:
                text = text.replace('__version__ = "', f'__version__ = "{SHIPPED_VERSION}"  # "')
            zipped.writestr(str(path.relative_to(source.parent)), text)
    return archive


def wait_for_workers(ui_url: str, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(ui_url + "/json/", timeout=2) as answer:
                state = json.load(answer)
            if sum(w["state"] == "ALIVE" for w in state.get("workers", [])) >= count:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{count} standalone workers did not register within {timeout:.0f} s")


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """A standalone master and two 1-core workers, each in its own JVM; yields the URL."""
    folder = tmp_path_factory.mktemp("standalone")
    port, ui_port = free_port(), free_port()
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOG_DIR": str(folder / "logs"),
        "SPARK_WORKER_DIR": str(folder / "work"),
        "SPARK_LOCAL_DIRS": str(folder / "local"),
        "SPARK_NO_DAEMONIZE": "1",
        # every JVM of this small cluster is cold and short-lived: a laptop run's JIT flags
        # (the result the test compares does not depend on them)
        "SPARK_DAEMON_JAVA_OPTS": QUICK_JVM_OPTIONS,
    }
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    master_url = f"spark://127.0.0.1:{port}"
    processes = [
        subprocess.Popen(
            [
                spark_class,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui_port),
            ],
            env=env,
            stdout=open(folder / "master.log", "w"),
            stderr=subprocess.STDOUT,
        )
    ]
    for index in range(2):
        processes.append(
            subprocess.Popen(
                [
                    spark_class,
                    "org.apache.spark.deploy.worker.Worker",
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    "1",
                    "--memory",
                    "3g",
                    "--webui-port",
                    str(free_port()),
                    "--work-dir",
                    str(folder / f"work-{index}"),
                    master_url,
                ],
                env=env,
                stdout=open(folder / f"worker-{index}.log", "w"),
                stderr=subprocess.STDOUT,
            )
        )
    try:
        wait_for_workers(f"http://127.0.0.1:{ui_port}", 2)
        yield master_url
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def features_by_path(spark, output: Path) -> dict[str, tuple[str, list[float]]]:
    return {
        r["path"]: (r["label"], r["features"])
        for r in spark.read.parquet(str(output / "features")).collect()
    }


def test_standalone_cluster_gives_the_local_result(
    spark, capsys, tmp_path, standalone_cluster, network_cache
):
    source = tmp_path / "images"
    write_sample_tree(str(source), per_class=3, seed=9)
    job_options = ["--input", str(source), "--weights", "random:0", "--batch-size", "4"]

    local = tmp_path / "local"
    assert main(["run", *job_options, "--output", str(local)], default_master="local[2]") == 0
    capsys.readouterr()

    cluster = tmp_path / "cluster"
    python = sys.executable
    command = [
        str(SPARK_HOME / "bin" / "spark-submit"),
        "--master",
        standalone_cluster,
        "--deploy-mode",
        "client",  # standalone runs Python drivers in client mode only
        "--conf",
        f"spark.pyspark.python={python}",
        "--conf",
        f"spark.pyspark.driver.python={python}",
        "--conf",
        "spark.executor.cores=1",
        "--conf",
        "spark.executor.memory=1g",
        "--conf",
        f"spark.driver.extraJavaOptions={QUICK_JVM_OPTIONS}",
        "--conf",
        f"spark.executor.extraJavaOptions={QUICK_JVM_OPTIONS}",
        "--py-files",
        str(shipped_package(tmp_path)),
        str(ROOT / "scripts" / "spark_job.py"),
        "run",
        *job_options,
        "--output",
        str(cluster),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=540,
        # the session's networks (tests/networks.py): spark-submit puts the --py-files zip
        # before them on PYTHONPATH, so the driver still runs the shipped code
        env={**networks.process_env(network_cache), "SPARK_HOME": str(SPARK_HOME)},
    )
    assert result.returncode == 0, result.stderr[-4000:]

    report = json.loads((cluster / "report.json").read_text())
    assert report["versions"]["fruits_pipeline"] == SHIPPED_VERSION  # not the installed copy
    assert report["settings"]["master"] == standalone_cluster
    assert report["model_builds"]["workers"] == 2  # once per executor's Python worker
    assert report["cnn"]["calls_per_image"] == 1.0
    assert report["counts"]["featurized"] == 18

    ours, theirs = features_by_path(spark, cluster), features_by_path(spark, local)
    assert sorted(ours) == sorted(theirs)
    for path, (label, values) in ours.items():
        assert label == theirs[path][0]
        assert np.allclose(values, theirs[path][1], atol=1e-5)

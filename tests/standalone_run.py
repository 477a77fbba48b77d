"""The job on executors in their own JVMs, as on EMR: a Spark standalone master and two
1-core workers on 127.0.0.1, the job submitted with spark-submit and the package shipped
with --py-files (tests/end_to_end/test_standalone.py checks what it wrote)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import networks
import pyspark
from s3_server import free_port

from fruits_pipeline.sample_images import write_sample_tree

ROOT = Path(__file__).resolve().parents[1]
SPARK_HOME = Path(pyspark.__file__).parent
SHIPPED_VERSION = "0.0.0+shipped-by-py-files"
#: The options of the job on the cluster and of the local run it is compared with.
JOB_OPTIONS = ["--weights", "random:0", "--batch-size", "4"]


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


def wait_for_workers(ui_url: str, count: int, timeout: float = 180) -> None:
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


@contextmanager
def standalone_cluster(folder: Path) -> Iterator[str]:
    """A standalone master and two 1-core workers, each in its own JVM; yields the URL."""
    port, ui_port = free_port(), free_port()
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOG_DIR": str(folder / "logs"),
        "SPARK_WORKER_DIR": str(folder / "work"),
        "SPARK_LOCAL_DIRS": str(folder / "local"),
        "SPARK_NO_DAEMONIZE": "1",
    }
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    master_url = f"spark://127.0.0.1:{port}"
    master = [
        "org.apache.spark.deploy.master.Master",
        *("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port)),
    ]
    commands = [("master", master)]
    for index in range(2):
        worker = [
            "org.apache.spark.deploy.worker.Worker",
            *("--host", "127.0.0.1", "--cores", "1", "--memory", "3g"),
            *("--webui-port", str(free_port()), "--work-dir", str(folder / f"work-{index}")),
            master_url,
        ]
        commands.append((f"worker-{index}", worker))
    processes = []
    try:
        for name, command in commands:
            with open(folder / f"{name}.log", "w") as log:
                processes.append(
                    subprocess.Popen(
                        [spark_class, *command], env=env, stdout=log, stderr=subprocess.STDOUT
                    )
                )
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


@dataclass(frozen=True)
class ClusterRun:
    """What the job on the standalone cluster was given and what it said."""

    source: Path
    output: Path
    master: str
    done: subprocess.CompletedProcess


def run_on_cluster(folder: Path, cache: Path) -> ClusterRun:
    """Draw 18 images into ``folder`` and run the job on them on a new standalone cluster,
    its driver's networks from the session's ``cache``."""
    source, output = folder / "images", folder / "cluster"
    write_sample_tree(str(source), per_class=3, seed=9)
    python = sys.executable
    with standalone_cluster(folder) as master:
        command = [
            str(SPARK_HOME / "bin" / "spark-submit"),
            *("--master", master),
            *("--deploy-mode", "client"),  # standalone runs Python drivers in client mode only
            *("--conf", f"spark.pyspark.python={python}"),
            *("--conf", f"spark.pyspark.driver.python={python}"),
            *("--conf", "spark.executor.cores=1", "--conf", "spark.executor.memory=1g"),
            *("--py-files", str(shipped_package(folder))),
            str(ROOT / "scripts" / "spark_job.py"),
            *("run", "--input", str(source), *JOB_OPTIONS, "--output", str(output)),
        ]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=540,
            # the session's networks (tests/networks.py): spark-submit puts the --py-files zip
            # before them on PYTHONPATH, so the driver still runs the shipped code
            env={**networks.process_env(cache), "SPARK_HOME": str(SPARK_HOME)},
        )
    return ClusterRun(source, output, master, done)

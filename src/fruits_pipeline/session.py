"""The SparkSession the job runs in, locally or under spark-submit on a cluster."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

#: Settings every run needs, whatever the master.
JOB_CONF = {
    # Python workers stay alive between tasks, so each builds MobileNetV2 only once.
    "spark.python.worker.reuse": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    # Spark's progress bar only where a person watches a terminal; log files get
    # progress.log_progress lines instead.
    "spark.ui.showConsoleProgress": "true" if sys.stderr.isatty() else "false",
}

#: Extra settings for a laptop run started by the console script (no spark-submit).
LOCAL_CONF = {
    "spark.driver.memory": "2g",
    "spark.sql.shuffle.partitions": "8",
}


def build_spark(
    master: str | None, app_name: str = "fruits-pipeline", extra_conf: dict[str, str] | None = None
) -> SparkSession:
    """Return a SparkSession for the job, reusing the active one if there is one.

    ``master`` None leaves the master to spark-submit (as on EMR); a ``local[...]`` master
    also makes the Python workers run this interpreter, so they find the same packages.
    """
    builder = SparkSession.builder.appName(app_name)
    conf = dict(JOB_CONF)
    if master:
        builder = builder.master(master)
        if master.startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            conf.update(LOCAL_CONF)
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark

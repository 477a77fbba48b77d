"""The SparkSession the job runs in, locally or under spark-submit on a cluster, and the
versions it runs on."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

from pyspark.sql import SparkSession

from fruits_pipeline.java_runtime import describe_java, use_java

#: OpenBLAS' thread count, set to one per task.  Spark ML calls the native BLAS from every
#: task at once (PCA's projection is one ``dgemv`` per row), and a multithreaded OpenBLAS
#: then spins its threads against the tasks' own; Spark's own guide advises one thread per
#: task for the same reason (docs/performance.md has the measurements).
BLAS_THREADS_ENV = "OPENBLAS_NUM_THREADS"

#: Settings every run needs, whatever the master.
JOB_CONF = {
    # One BLAS thread per task on executors (a local run's JVM gets it from build_spark).
    f"spark.executorEnv.{BLAS_THREADS_ENV}": "1",
    # Python workers stay alive between tasks, so each builds MobileNetV2 only once.
    "spark.python.worker.reuse": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    # Spark's progress bar only where a person watches a terminal; log files get
    # progress.log_progress lines instead.
    "spark.ui.showConsoleProgress": "true" if sys.stderr.isatty() else "false",
}

#: Extra settings for a laptop run started by the console script (no spark-submit).
#: JVM options of a short local run, which spends much of its JVM time compiling: the C1
#: compiler alone and the parallel collector make it faster (docs/performance.md).
QUICK_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseParallelGC"

LOCAL_CONF = {
    "spark.driver.memory": "2g",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.extraJavaOptions": QUICK_JVM_OPTIONS,
}


def build_spark(
    master: str | None, app_name: str = "fruits-pipeline", extra_conf: dict[str, str] | None = None
) -> SparkSession:
    """Return a SparkSession for the job, reusing the active one if there is one.

    ``master`` None leaves the master to spark-submit (as on EMR); a ``local[...]`` master
    also makes the Python workers run this interpreter, so they find the same packages.
    Before this process starts a JVM, the Java it runs on is chosen (java_runtime.use_java):
    raises NoUsableJava, a BadInput, for a JAVA_HOME Spark cannot run on.
    """
    if master and SparkSession.getActiveSession() is None:
        use_java()
    builder = SparkSession.builder.appName(app_name)
    conf = dict(JOB_CONF)
    if master:
        builder = builder.master(master)
        if master.startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            # Read when the JVM starts: in local mode the tasks run in the driver's JVM.
            os.environ.setdefault(BLAS_THREADS_ENV, "1")
            conf.update(LOCAL_CONF)
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


#: Spark setting for the inference engine's threads in each Python worker (ONNX Runtime's
#: intra-op threads or TensorFlow's pools; default: spark.task.cpus).
ENGINE_THREADS_CONF = "spark.fruits.engineThreads"


def engine_threads(spark: SparkSession) -> int:
    """Return how many threads each Python worker gives the inference engine:
    ``spark.task.cpus`` (the cores each task owns), unless ``spark.fruits.engineThreads``
    says otherwise."""
    default = spark.conf.get("spark.task.cpus", "1")
    return max(1, int(spark.conf.get(ENGINE_THREADS_CONF, default)))


@contextmanager
def session_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Apply SQL ``settings`` for the body only, then restore the previous values."""
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def installed_version(*distributions: str) -> str:
    """The version of the first of ``distributions`` installed, read from its metadata:
    importing TensorFlow to read ``__version__`` costs seconds in a process that never
    loads it (a run whose network is kept, ``transform``).  TensorFlow is two
    distributions (``tensorflow-cpu`` on x86-64, ``tensorflow`` elsewhere: pyproject.toml)."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    raise metadata.PackageNotFoundError(" or ".join(distributions))


def versions(spark: SparkSession) -> dict[str, str]:
    """Return the versions that decide a run's features, but the engine's own: the package,
    Python, Spark and the Java the driver runs on, and the libraries that read, decode and
    load (Keras loads the weights on the driver whatever the engine)."""
    from fruits_pipeline import __version__

    system = spark.sparkContext._jvm.java.lang.System
    return {
        "fruits_pipeline": __version__,
        "python": platform.python_version(),
        "spark": spark.version,
        "java": describe_java(system.getProperty("java.version"), system.getProperty("java.home")),
        "tensorflow": installed_version("tensorflow-cpu", "tensorflow"),
        "keras": installed_version("keras"),
        "numpy": installed_version("numpy"),
        "pillow": installed_version("pillow"),
        "pyarrow": installed_version("pyarrow"),
    }

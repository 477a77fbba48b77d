"""Whether the session's JVM can read and write a URI's scheme, asked once on the driver
before a command lists or writes anything.

Outside Amazon EMR (a laptop, a standalone cluster) Spark has no Hadoop FileSystem for
``s3://``: the job would otherwise die at its first read or write with a Java stack trace.
The check asks the JVM itself (Hadoop's ``FileSystem.getFileSystemClass``), never the master
string: on EMR, EMRFS answers for ``s3://``, and a local session given S3A answers too.
"""

from __future__ import annotations

from py4j.protocol import Py4JError
from pyspark.sql import SparkSession

from fruits_pipeline.errors import BadInput, first_line
from fruits_pipeline.results import storage

#: Hadoop's S3 connector, in the ``hadoop-aws`` jar (whose version must be Spark's Hadoop's).
S3A_CLASS = "org.apache.hadoop.fs.s3a.S3AFileSystem"


class NoFileSystemError(BadInput):
    """Spark has no filesystem for the scheme of an input or an output (``s3://`` off EMR)."""


def scheme(uri: str) -> str:
    """Return the scheme Spark reads ``uri`` with: ``file`` for local paths."""
    return uri.split("://", 1)[0].lower() if storage.is_remote(uri) else "file"


def missing_filesystem(spark: SparkSession, name: str) -> str | None:
    """Return why the session has no Hadoop FileSystem for the scheme ``name``, or None
    when it has one.  Asks the JVM with the session's Hadoop configuration (``spark.hadoop.*``
    settings included), so ``fs.s3.impl`` naming a class that is not there counts as none."""
    jvm = spark.sparkContext._jvm
    conf = spark._jsparkSession.sessionState().newHadoopConf()
    try:
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(name, conf)
    except Py4JError as error:
        java = getattr(error, "java_exception", None)
        return first_line(java.toString() if java is not None else error)
    return None


def require_filesystems(spark: SparkSession, uris: dict[str, str]) -> None:
    """Raise NoFileSystemError, one line naming what to add, for the first of ``uris``
    (what it is, e.g. ``"--input"`` -> its URI) whose scheme the session cannot open.
    Each scheme is asked once."""
    answers: dict[str, str | None] = {}
    for role, uri in uris.items():
        name = scheme(uri)
        if name not in answers:
            answers[name] = missing_filesystem(spark, name)
        if answers[name] is not None:
            hadoop = spark.sparkContext._jvm.org.apache.hadoop.util.VersionInfo.getVersion()
            raise NoFileSystemError(
                f"{role} {uri!r}: this Spark has no filesystem for {name}:// "
                f"({answers[name]}); " + what_to_add(name, hadoop)
            )


def what_to_add(name: str, hadoop: str) -> str:
    """Return, as part of one line, what a session needs to open ``name://`` URIs."""
    if name not in ("s3", "s3a"):
        return f"add the Hadoop connector for {name}:// to Spark's classpath"
    mapping = f" and spark.hadoop.fs.s3.impl={S3A_CLASS}" if name == "s3" else ""
    return (
        "Amazon EMR provides it (EMRFS); elsewhere add S3A: the hadoop-aws jar of Spark's "
        f"Hadoop {hadoop} and its aws-java-sdk-bundle (spark.jars.packages="
        f"org.apache.hadoop:hadoop-aws:{hadoop} fetches both){mapping}: see docs/usage.md"
    )

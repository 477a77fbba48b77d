"""The README's first command, `make demo`, on a machine without Java (its setup taken as
done: it runs inside that setup's .venv), its network from the session's cache
(tests/networks.py); tests/test_java_runtime.py checks what it did."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import networks

ROOT = Path(__file__).resolve().parents[1]


def path_without_java(folder: Path) -> str:
    """A PATH with every command of this one but ``java`` (links in the new ``folder``)."""
    folder.mkdir(parents=True)
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


@dataclass(frozen=True)
class Demo:
    """Where `make demo` wrote, and what it said."""

    folder: Path
    done: subprocess.CompletedProcess


def make_demo_without_java(folder: Path, cache: Path) -> Demo:
    """Run `make demo` into ``folder``/demo with no java on PATH and no JAVA_HOME."""
    demo = folder / "demo"
    cached = networks.process_env(cache)
    done = subprocess.run(
        ["make", "-C", str(ROOT), "-o", ".venv/.installed", "demo", f"DEMO={demo}"],
        env=environment(
            JAVA_HOME=None,
            PATH=path_without_java(folder / "no-java"),
            PYSPARK_PYTHON=None,
            PYTHONPATH=cached["PYTHONPATH"],
            **{networks.ENV: cached[networks.ENV]},
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return Demo(demo, done)

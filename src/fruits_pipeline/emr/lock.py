"""Write the wheelhouse locks, ``emr/lock/requirements-ARCH.txt``, from pyproject.toml's pins:

    .venv/bin/python -m fruits_pipeline.emr.lock            # both architectures
    .venv/bin/python -m fruits_pipeline.emr.lock --architecture x86_64

pyproject.toml stays the one source of truth: its ``[project] dependencies`` (minus what EMR
provides, pyspark), their markers evaluated for the nodes (Linux, Python 3.11, the lock's
architecture), are resolved by pip's own resolver for the nodes' platform (``pip install
--dry-run --report`` with the cross-platform options), and the lock keeps every package of
the resolved set with the sha256 of the wheel pip picked.  Needs the package index (PyPI);
nothing else in the kit does.  Your pip configuration is ignored here, so that a local
folder or an extra index cannot slip a file into the lock that the index does not serve.

pip evaluates the markers of dependencies for the machine it runs on, not for ``--platform``;
the lock is refused when a marker of the resolved set would decide otherwise on the nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

from fruits_pipeline.emr.bundle import PROVIDED_BY_EMR, KitFiles, requirement_name
from fruits_pipeline.emr.errors import UsageError
from fruits_pipeline.emr.wheelhouse import (
    ARCHITECTURES,
    PYTHON_VERSION,
    LockedWheel,
    normalize_name,
    parse_lock,
    pip_platform_options,
)

DEFAULT_INDEX = "https://pypi.org/simple"
#: pip settings kept from the environment: how to reach an index, not where packages come from.
KEPT_PIP_SETTINGS = frozenset(
    {"PIP_CERT", "PIP_CLIENT_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_PROXY", "PIP_RETRIES"}
)


def node_environment(architecture: str) -> dict[str, str]:
    """Return the marker environment of a node: this interpreter's (Python 3.11), on Linux
    and ``architecture``."""
    from pip._vendor.packaging.markers import default_environment

    return {
        **default_environment(),
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": architecture,
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def top_requirements(pyproject: Path, architecture: str) -> list[str]:
    """Return pyproject's dependencies the nodes install, markers evaluated for a node of
    ``architecture`` and dropped (pip would evaluate them for this machine)."""
    from pip._vendor.packaging.requirements import Requirement

    with open(pyproject, "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    environment = node_environment(architecture)
    kept = []
    for line in dependencies:
        if requirement_name(line) in PROVIDED_BY_EMR:
            continue
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        requirement.marker = None
        kept.append(str(requirement))
    return kept


def pip_environment() -> dict[str, str]:
    """Return the environment pip resolves in: no pip configuration file, and of the PIP_
    variables only those in KEPT_PIP_SETTINGS."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PIP_") or name in KEPT_PIP_SETTINGS
    }
    return {**kept, "PIP_CONFIG_FILE": os.devnull}


def resolve(requirements: list[str], architecture: str, index_url: str) -> dict:
    """Return pip's installation report for ``requirements`` on a node of ``architecture``
    (nothing is installed; wheels' metadata is read from the index)."""
    with tempfile.TemporaryDirectory(prefix="fruits-lock-") as folder:
        listing = Path(folder) / "requirements.txt"
        listing.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        report = Path(folder) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        command += ["--quiet", "--index-url", index_url, "--report", str(report)]
        command += [*pip_platform_options(architecture), "--requirement", str(listing)]
        done = subprocess.run(command, capture_output=True, text=True, env=pip_environment())
        if done.returncode != 0:
            raise UsageError(f"pip could not resolve for {architecture}: {done.stderr.strip()}")
        return json.loads(report.read_text(encoding="utf-8"))


def wheels_of(report: dict, architecture: str) -> list[LockedWheel]:
    """Return the lock's wheels from pip's installation report, sorted by name.

    Raises UsageError for a file that did not come from the index, without a sha256, or not
    a wheel, and for a marker of the resolved set that a node would evaluate otherwise than
    this machine did."""
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement

    here = {**default_environment(), "extra": ""}
    node = node_environment(architecture)
    wheels = []
    for item in report["install"]:
        metadata, download = item["metadata"], item["download_info"]
        name = normalize_name(metadata["name"])
        url = download["url"]
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        sha256 = download.get("archive_info", {}).get("hashes", {}).get("sha256")
        if urlsplit(url).scheme not in ("http", "https"):
            raise UsageError(f"{name} came from {url}, not from the index")
        if not sha256 or not filename.endswith(".whl"):
            raise UsageError(f"{name}: {filename} is not a wheel with a sha256")
        for line in metadata.get("requires_dist", []):
            marker = Requirement(line).marker
            if marker is not None and marker.evaluate(here) != marker.evaluate(node):
                raise UsageError(
                    f"{name} requires {line!r}: pip decided that for this machine, a "
                    f"{architecture} node would decide otherwise; lock on a {architecture} machine"
                )
        wheels.append(LockedWheel(name, metadata["version"], sha256, filename))
    return sorted(wheels, key=lambda wheel: wheel.name)


def lock_text(wheels: list[LockedWheel], architecture: str) -> str:
    """Return the lock file's content: a header that says what it is and how it was made,
    then one line per wheel."""
    header = [
        f"# Wheelhouse lock for the EMR nodes: Python {PYTHON_VERSION}, Amazon Linux 2023 "
        f"(manylinux, glibc 2.34), {architecture}.",
        "# Every package the bootstrap installs, pinned, with the sha256 of the wheel pip picked",
        "# for that platform (its file name after each line).  Written from pyproject.toml's",
        "# [project] dependencies (minus pyspark, EMR's Spark) by",
        "#     .venv/bin/python -m fruits_pipeline.emr.lock",
        "# Do not edit: change pyproject.toml and run that command again.",
    ]
    return "\n".join([*header, *(wheel.line for wheel in wheels)]) + "\n"


def write_lock(kit: KitFiles, architecture: str, index_url: str) -> Path:
    """Resolve and write the lock of ``architecture`` in ``kit``; return its path."""
    requirements = top_requirements(kit.pyproject, architecture)
    wheels = wheels_of(resolve(requirements, architecture, index_url), architecture)
    text = lock_text(wheels, architecture)
    parse_lock(text, architecture)  # what is written must read back
    path = kit.lock(architecture)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fruits_pipeline.emr.lock",
        description="Write emr/lock/requirements-ARCH.txt from pyproject.toml's pins.",
    )
    parser.add_argument("--architecture", choices=ARCHITECTURES, action="append")
    parser.add_argument("--index-url", default=DEFAULT_INDEX, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    if sys.version_info[:2] != tuple(int(part) for part in PYTHON_VERSION.split(".")):
        print(f"run this with Python {PYTHON_VERSION}, the nodes' Python", file=sys.stderr)
        return 2
    kit = KitFiles.find()
    try:
        for architecture in args.architecture or ARCHITECTURES:
            path = write_lock(kit, architecture, args.index_url)
            count = sum(1 for line in path.read_text().splitlines() if "--hash=" in line)
            print(f"{path.relative_to(kit.root)}: {count} wheels for {architecture}")
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The code a run uploads for the cluster, built from the kit's files in the checkout.

Four files: the package as a zip for ``--py-files`` (without the parts that never run on the
cluster), the spark-submit entry file, the bootstrap script, and ``requirements.txt``
generated from pyproject.toml.  ``KitFiles`` says where the kit's files are; everything here
reads them through it, so a test can point it at another folder.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fruits_pipeline.emr.errors import UsageError

ZIP_NAME = "fruits_pipeline.zip"
ENTRY_NAME = "spark_job.py"
BOOTSTRAP_NAME = "bootstrap-emr.sh"
REQUIREMENTS_NAME = "requirements.txt"

#: Installed by EMR itself: pip must not shadow the cluster's Spark.
PROVIDED_BY_EMR = frozenset({"pyspark"})
#: Sub-packages left out of the zip: this submitter and the benchmark run on the user's
#: machine, never on the cluster.
NOT_SHIPPED = frozenset({"emr", "bench"})


@dataclass(frozen=True)
class KitFiles:
    """Where the kit's files are: a checkout of the project, or a folder laid out like one."""

    root: Path

    @property
    def package(self) -> Path:
        return self.root / "src" / "fruits_pipeline"

    @property
    def entry(self) -> Path:
        return self.root / "scripts" / ENTRY_NAME

    @property
    def bootstrap(self) -> Path:
        return self.root / "bootstrap" / BOOTSTRAP_NAME

    @property
    def pyproject(self) -> Path:
        return self.root / "pyproject.toml"

    @property
    def cluster_config(self) -> Path:
        return self.root / "emr" / "cluster-config.json"

    def lock(self, architecture: str) -> Path:
        """The wheelhouse lock of ``architecture`` (emr/wheelhouse.py says what it is)."""
        return self.root / "emr" / "lock" / f"requirements-{architecture}.txt"

    @classmethod
    def at(cls, root: Path) -> KitFiles:
        """Return the kit under ``root``; raise UsageError when a file of it is missing."""
        kit = cls(Path(root))
        paths = (kit.package, kit.entry, kit.bootstrap, kit.pyproject, kit.cluster_config)
        missing = [path.relative_to(kit.root).as_posix() for path in paths if not path.exists()]
        if missing:
            raise UsageError(
                f"the EMR kit's files are not in {kit.root} (missing: {', '.join(missing)}); "
                "run the submitter from the project's checkout, installed there by make setup"
            )
        return kit

    @classmethod
    def find(cls) -> KitFiles:
        """Return the kit of the checkout this package is installed from (editable, as
        ``make setup`` installs it), where this file is src/fruits_pipeline/emr/bundle.py."""
        return cls.at(Path(__file__).resolve().parents[3])


@dataclass(frozen=True)
class CodeFile:
    """One file of the run's code: its name under ``code/`` and its bytes."""

    name: str
    body: bytes
    content_type: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def code_files(kit: KitFiles, workdir: Path) -> list[CodeFile]:
    """Build and return the run's code files: the package zip, the entry file, the bootstrap
    script and requirements.txt.  Writes only under ``workdir``; no network."""
    zip_path = build_py_files_zip(kit.package, workdir / ZIP_NAME)
    requirements = requirements_text(kit.pyproject).encode("utf-8")
    return [
        CodeFile(ZIP_NAME, zip_path.read_bytes(), "application/zip"),
        CodeFile(ENTRY_NAME, kit.entry.read_bytes(), "text/x-python"),
        CodeFile(BOOTSTRAP_NAME, kit.bootstrap.read_bytes(), "text/x-shellscript"),
        CodeFile(REQUIREMENTS_NAME, requirements, "text/plain"),
    ]


def shipped_files(package_dir: Path) -> list[Path]:
    """Return, sorted, the package's files that go into the zip: all but compiled caches and
    the sub-packages in NOT_SHIPPED."""
    return sorted(
        path
        for path in package_dir.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix != ".pyc"
        and path.relative_to(package_dir).parts[0] not in NOT_SHIPPED
    )


def build_py_files_zip(package_dir: Path, destination: Path) -> Path:
    """Write a zip of the package for ``--py-files`` to ``destination`` and return it.

    Deterministic (sorted entries, fixed timestamps), so the same code gives the same bytes
    and the same sha256.
    """
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in shipped_files(package_dir):
            name = (Path(package_dir.name) / path.relative_to(package_dir)).as_posix()
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return destination


def requirements_text(pyproject: Path) -> str:
    """Return requirements.txt content: pyproject's ``[project] dependencies``, exact pins and
    markers kept, minus the packages EMR provides (pyspark)."""
    with open(pyproject, "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    kept = [d for d in dependencies if requirement_name(d) not in PROVIDED_BY_EMR]
    header = [
        "# Generated from pyproject.toml [project] dependencies by scripts/submit_step.py.",
        "# Left out, provided by EMR: " + ", ".join(sorted(PROVIDED_BY_EMR)) + ".",
    ]
    return "\n".join([*header, *kept]) + "\n"


def requirement_name(requirement: str) -> str:
    """Return the normalized project name at the start of a requirement string."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", name.group(1)).lower() if name else ""

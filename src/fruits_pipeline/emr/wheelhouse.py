"""The cluster's wheelhouse: a wheel for the nodes' platform of every package they install,
so that the bootstrap installs with pip's index disabled and the cluster needs no internet.

What goes in it is the lock, ``emr/lock/requirements-ARCH.txt``: every package of the
resolved set pinned, each with the sha256 of the one wheel pip picked for the platform
(written by ``python -m fruits_pipeline.emr.lock`` from pyproject.toml's pins).  The
submitter builds the wheelhouse on this machine with pip's own cross-platform download
options, keeps it under a local cache folder, and uploads it once to
``s3://BUCKET/PREFIX/wheelhouse/DIGEST/``, DIGEST naming the lock's pins and hashes: a later
run with the same lock finds it there and uploads nothing.  The lock itself is uploaded
last, as ``requirements-lock.txt``, so a wheelhouse with its lock is complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fruits_pipeline.emr.errors import UsageError
from fruits_pipeline.emr.s3paths import s3_uri

log = logging.getLogger(__name__)

#: The nodes' Python (EMR 7.x on Amazon Linux 2023: /usr/bin/python3.11).
PYTHON_VERSION = "3.11"
#: The CPU architectures a lock exists for: x86-64 instance types, and Graviton (aarch64).
ARCHITECTURES = ("x86_64", "aarch64")
#: Amazon Linux 2023 has glibc 2.34: a manylinux wheel for glibc 2.34 or older runs there.
GLIBC_MINOR = 34
#: The lock's name inside a wheelhouse, local or on S3.
LOCK_NAME = "requirements-lock.txt"

_LINE = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)\s+--hash=sha256:(?P<sha256>[0-9a-f]{64})"
    r"\s+#\s*(?P<filename>\S+\.whl)\s*"
)


@dataclass(frozen=True)
class LockedWheel:
    """One package of a lock: its pin, and the wheel file pip picked for the platform."""

    name: str  # normalized (PEP 503)
    version: str
    sha256: str
    filename: str

    @property
    def line(self) -> str:
        """The lock file's line: a pip requirement with its hash, the file name after ``#``."""
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}  # {self.filename}"


@dataclass(frozen=True)
class Lock:
    """A lock file, read: the wheels of one platform, and the file's text."""

    architecture: str
    wheels: tuple[LockedWheel, ...]
    text: str

    @property
    def digest(self) -> str:
        """sha256 of the pins and hashes alone, so that a new comment in the file does not
        make a new wheelhouse."""
        lines = sorted(f"{w.name}=={w.version} sha256:{w.sha256}" for w in self.wheels)
        return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()

    def version_of(self, name: str) -> str | None:
        """Return the locked version of project ``name`` (None: not in the lock)."""
        wanted = normalize_name(name)
        return next((w.version for w in self.wheels if w.name == wanted), None)


def normalize_name(name: str) -> str:
    """Return a project name normalized as PEP 503 says (``Foo_Bar`` -> ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str, architecture: str, where: str = "lock") -> Lock:
    """Return the Lock in ``text``; raise UsageError, naming ``where``, on a line that is not
    ``name==version --hash=sha256:HEX  # FILE.whl`` (comments and blank lines aside)."""
    wheels = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        match = _LINE.fullmatch(raw.strip())
        if not match:
            raise UsageError(
                f"{where}:{number}: expected 'name==version --hash=sha256:HEX  # FILE.whl', "
                f"got {raw.strip()!r}"
            )
        wheels.append(
            LockedWheel(
                normalize_name(match["name"]),
                match["version"],
                match["sha256"],
                match["filename"],
            )
        )
    if not wheels:
        raise UsageError(f"{where}: the lock lists no wheel")
    names = [w.name for w in wheels]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"{where}: locked more than once: {', '.join(twice)}")
    return Lock(architecture, tuple(wheels), text)


def read_lock(path: Path, architecture: str) -> Lock:
    """Return the lock at ``path``; raise UsageError when it is missing or malformed."""
    if not path.is_file():
        raise UsageError(
            f"no wheelhouse lock for {architecture} at {path}: "
            "write it with `.venv/bin/python -m fruits_pipeline.emr.lock`"
        )
    return parse_lock(path.read_text(encoding="utf-8"), architecture, where=str(path))


def platform_tags(architecture: str) -> list[str]:
    """Return the wheel platform tags a node of ``architecture`` accepts, best first: each
    manylinux glibc level up to Amazon Linux 2023's, and manylinux2014 (pip widens that one
    to manylinux2010 and manylinux1 itself)."""
    if architecture not in ARCHITECTURES:
        raise UsageError(f"no wheelhouse for {architecture}: one of {', '.join(ARCHITECTURES)}")
    tags = [f"manylinux_2_{minor}_{architecture}" for minor in range(GLIBC_MINOR, 16, -1)]
    return [*tags, f"manylinux2014_{architecture}"]


def pip_platform_options(architecture: str) -> list[str]:
    """Return pip's options that pick wheels for the nodes instead of for this machine."""
    options = ["--only-binary=:all:", "--implementation", "cp"]
    options += ["--python-version", PYTHON_VERSION, "--abi", "cp" + PYTHON_VERSION.replace(".", "")]
    for tag in platform_tags(architecture):
        options += ["--platform", tag]
    return options


def architecture_of(instance_type: str) -> str:
    """Return the CPU architecture of an EC2 instance type: aarch64 for Graviton (a1, and
    families with a ``g`` after the generation, m7g, c6gn, r6gd, t4g...), x86_64 otherwise."""
    family = instance_type.split(".", 1)[0]
    if family == "a1" or re.fullmatch(r"[a-z]+\d+g[a-z]*", family):
        return "aarch64"
    return "x86_64"


@dataclass(frozen=True)
class Wheelhouse:
    """Where a lock's wheelhouse lives in S3: ``s3://BUCKET/PREFIX/wheelhouse/DIGEST/``."""

    bucket: str
    prefix: str  # PREFIX/wheelhouse/DIGEST, no slashes at the ends
    lock: Lock
    lock_path: Path

    @property
    def uri(self) -> str:
        return s3_uri(self.bucket, self.prefix) + "/"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def missing(self, present: Iterable[str]) -> list[str]:
        """Return the names (wheels, then the lock, last) not among the keys ``present``."""
        keys = set(present)
        names = [wheel.filename for wheel in self.lock.wheels] + [LOCK_NAME]
        return [name for name in names if self.key(name) not in keys]


def wheelhouse_prefix(prefix: str, digest: str) -> str:
    """Return the key prefix of a wheelhouse: ``PREFIX/wheelhouse/DIGEST``."""
    return "/".join(part for part in (prefix, "wheelhouse", digest) if part)


def cache_folder(digest: str) -> Path:
    """Return the local folder that keeps the wheelhouse of ``digest`` between runs
    ($XDG_CACHE_HOME, else ~/.cache, then fruits-pipeline/wheelhouse/DIGEST)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fruits-pipeline" / "wheelhouse" / digest


def download_command(lock: Lock, lock_path: Path, destination: Path) -> list[str]:
    """Return the pip command that downloads the lock's wheels for the nodes' platform into
    ``destination``; pip refuses any file whose sha256 is not the lock's."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",  # the lock is the whole resolved set already
        "--require-hashes",
        *pip_platform_options(lock.architecture),
        "--dest",
        str(destination),
        "--requirement",
        str(lock_path),
    ]


def file_sha256(path: Path) -> str:
    """Return the sha256 of the file at ``path`` (read in blocks: wheels are large)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def build_local(wheelhouse: Wheelhouse, folder: Path) -> dict[str, Path]:
    """Make sure ``folder`` holds every wheel of the lock, downloading what is missing with
    pip (the user's pip settings apply: an index mirror, say); return {file name: path}.

    Raises UsageError when pip fails or a wheel is not the locked one."""
    lock = wheelhouse.lock
    folder.mkdir(parents=True, exist_ok=True)
    expected = {wheel.filename: wheel for wheel in lock.wheels}
    present = [
        name
        for name, wheel in expected.items()
        if (folder / name).is_file() and file_sha256(folder / name) == wheel.sha256
    ]
    if len(present) < len(expected):
        log.info(
            "downloading %d wheels for %s into %s",
            len(expected) - len(present),
            lock.architecture,
            folder,
        )
        done = subprocess.run(
            download_command(lock, wheelhouse.lock_path, folder),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise UsageError(
                f"pip could not download the wheelhouse of {wheelhouse.lock_path}: "
                + (lines[-1].strip() if lines else f"exit {done.returncode}")
            )
    wrong = [
        name
        for name, wheel in expected.items()
        if not (folder / name).is_file() or file_sha256(folder / name) != wheel.sha256
    ]
    if wrong:
        raise UsageError(
            f"the local wheelhouse {folder} lacks the locked wheel of: {', '.join(wrong)} "
            "(pip picked another file: regenerate the lock)"
        )
    return {name: folder / name for name in expected}


class WheelStore(Protocol):
    """What publishing a wheelhouse asks of S3 (``aws.Aws`` answers)."""

    def list_keys(self, bucket: str, prefix: str) -> set[str]:
        """Return every key under ``prefix``."""
        ...

    def upload_path(self, path: Path, bucket: str, key: str, extra: dict) -> None:
        """Upload the file at ``path`` to ``key``, with PutObject's ``extra`` parameters."""
        ...


@dataclass(frozen=True)
class Published:
    """What publishing did: the wheelhouse's URI and the names it uploaded (none: reused)."""

    uri: str
    uploaded: tuple[str, ...]
    wheels: int

    @property
    def reused(self) -> bool:
        return not self.uploaded


def upload_params(name: str, sha256: str, sse: dict) -> dict:
    """Return PutObject's extra parameters for one file of a wheelhouse."""
    kind = "text/plain" if name == LOCK_NAME else "application/octet-stream"
    return {"ContentType": kind, "Metadata": {"sha256": sha256}, **sse}


def publish(store: WheelStore, wheelhouse: Wheelhouse, folder: Path, sse: dict) -> Published:
    """Upload what S3 lacks of the wheelhouse (its wheels, then its lock), building the local
    wheelhouse in ``folder`` only when something is missing; return what was done."""
    present = store.list_keys(wheelhouse.bucket, wheelhouse.prefix + "/")
    missing = wheelhouse.missing(present)
    count = len(wheelhouse.lock.wheels)
    if not missing:
        log.info("wheelhouse %s is complete (%d wheels): reused", wheelhouse.uri, count)
        return Published(wheelhouse.uri, (), count)
    wheels = [name for name in missing if name != LOCK_NAME]
    files = build_local(wheelhouse, folder) if wheels else {}
    for name in wheels:
        path = files[name]
        store.upload_path(
            path,
            wheelhouse.bucket,
            wheelhouse.key(name),
            upload_params(name, file_sha256(path), sse),
        )
    # The lock last, again after a repair: a wheelhouse with its lock is complete.
    lock_params = upload_params(LOCK_NAME, file_sha256(wheelhouse.lock_path), sse)
    store.upload_path(
        wheelhouse.lock_path, wheelhouse.bucket, wheelhouse.key(LOCK_NAME), lock_params
    )
    uploaded = (*wheels, LOCK_NAME)
    log.info("wheelhouse %s: uploaded %d files", wheelhouse.uri, len(uploaded))
    return Published(wheelhouse.uri, uploaded, count)

"""A small wheelhouse, made here without the network, and a kit that locks it.

The real lock (emr/lock/) names 68 wheels and half a gigabyte, which a test must never
download.  These wheels are real (installable by pip, with a RECORD of hashes), written from
tiny throwaway projects, so the submitter's pip download and the bootstrap's pip install run
for real, offline: fp-alpha needs fp-beta (a transitive package of the lock), fp-gamma is a
pin of its own.  The kit is the checkout's files (linked) with its own pyproject.toml pins and
locks."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from fruits_pipeline.emr import bundle, wheelhouse
from fruits_pipeline.emr.lock import lock_text

ROOT = Path(__file__).resolve().parents[2]

#: name -> (version, its Requires-Dist)
PACKAGES = {
    "fp-alpha": ("1.0", ["fp-beta==2.0"]),
    "fp-beta": ("2.0", []),
    "fp-gamma": ("0.3", []),
}
#: pyproject.toml's dependencies in the small kit (pyspark is left out, as EMR provides it).
PINS = ["pyspark==3.5.6", "fp-alpha==1.0", "fp-gamma==0.3; sys_platform == 'linux'"]


def record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def make_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """Write a pure-Python wheel of one module to ``folder``; return its path."""
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {line}\n" for line in requires)
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: fruits-pipeline-tests\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{path},{record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            archive.writestr(zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return path


def make_wheels(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {
        name: make_wheel(folder, name, version, requires)
        for name, (version, requires) in PACKAGES.items()
    }


def locked(paths: dict[str, Path]) -> list[wheelhouse.LockedWheel]:
    return sorted(
        (
            wheelhouse.LockedWheel(
                name, PACKAGES[name][0], wheelhouse.file_sha256(path), path.name
            )
            for name, path in paths.items()
        ),
        key=lambda wheel: wheel.name,
    )


def make_kit(root: Path, paths: dict[str, Path]) -> bundle.KitFiles:
    """Write the small kit under ``root``: the checkout's code, bootstrap and cluster
    configuration (linked), this module's pins, and a lock of the small wheels for both
    architectures (pure-Python wheels fit both)."""
    root.mkdir(parents=True)
    for part in ("src", "scripts", "bootstrap"):
        (root / part).symlink_to(ROOT / part)
    (root / "emr" / "lock").mkdir(parents=True)
    (root / "emr" / "cluster-config.json").symlink_to(ROOT / "emr" / "cluster-config.json")
    dependencies = ", ".join(f'"{pin}"' for pin in PINS)
    (root / "pyproject.toml").write_text(f"[project]\ndependencies = [{dependencies}]\n")
    kit = bundle.KitFiles.at(root)
    for architecture in wheelhouse.ARCHITECTURES:
        kit.lock(architecture).write_text(lock_text(locked(paths), architecture))
    return kit


def small_lock(kit: bundle.KitFiles, architecture: str = "x86_64") -> wheelhouse.Lock:
    return wheelhouse.read_lock(kit.lock(architecture), architecture)

"""Whether what a command writes overlaps what it reads, once each path says where it really
points.

A command that writes inside its input, or whose output holds its input, can replace or
remove the user's files (``--input data/images --output data --overwrite``), so every
command that writes refuses such a pair before Spark starts.  Paths are compared as the
filesystem resolves them: relative paths, ``..``, trailing slashes, symlinks and ``file:``
URIs locally; on S3, the bucket and the key's folders (``s3://``, ``s3a://`` and ``s3n://``
name the same objects).  Written by hand: no library compares a local path with a URI.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from fruits_pipeline.errors import BadInput
from fruits_pipeline.results.storage import local_path

S3_SCHEMES = ("s3://", "s3a://", "s3n://")


class OverlapError(BadInput):
    """What a command writes overlaps what it reads."""


@dataclass(frozen=True)
class Place:
    """Where a path or URI points: ``root`` is ``/`` locally or ``s3://BUCKET``, ``parts``
    the folders and name below it."""

    root: str
    parts: tuple[str, ...]

    @classmethod
    def of(cls, uri: str) -> Place:
        """Return where ``uri`` points (a local path, a ``file:`` URI or an S3 URI)."""
        if uri.startswith(S3_SCHEMES):
            bucket, _, key = uri.split("://", 1)[1].partition("/")
            key = posixpath.normpath("/" + key).strip("/")
            return cls(root="s3://" + bucket, parts=tuple(p for p in key.split("/") if p))
        if "://" in uri and not uri.startswith("file://"):
            scheme = uri.split("://", 1)[0]
            raise BadInput(f"{uri!r}: unsupported scheme {scheme}:// (use a path or s3://)")
        # realpath resolves symlinks in the part that exists, and ".." and "." everywhere
        resolved = os.path.realpath(local_path(uri))
        return cls(root="/", parts=tuple(p for p in resolved.split(os.sep) if p))

    def contains(self, other: Place) -> bool:
        """True when ``other`` is this place or lies inside it."""
        return self.root == other.root and other.parts[: len(self.parts)] == self.parts

    def __str__(self) -> str:
        path = "/".join(self.parts)
        return f"/{path}" if self.root == "/" else f"{self.root}/{path}"


def refuse_overlap(reads: Mapping[str, str | None], writes: Mapping[str, str]) -> None:
    """Raise OverlapError, one line naming both, when a path of ``writes`` and one of
    ``reads`` (option name -> path or URI; None is skipped) are the same place or one lies
    inside the other."""
    for read_name, read in reads.items():
        if not read:
            continue
        source = Place.of(read)
        for write_name, written in writes.items():
            target = Place.of(written)
            if source.contains(target) or target.contains(source):
                how = (
                    "are the same place"
                    if source == target
                    else f"overlap ({target} is inside {source})"
                    if source.contains(target)
                    else f"overlap ({source} is inside {target})"
                )
                raise OverlapError(
                    f"{read_name} {read!r} and {write_name} {written!r} {how}: "
                    f"give a {write_name} apart from {read_name}"
                )

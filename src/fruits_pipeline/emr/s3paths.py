"""Where things are in S3: ``s3://`` URIs, and a run's place, ``PREFIX/runs/RUN_ID/``.

A run keeps its uploaded code under ``code/``, EMR's logs under ``logs/`` and the job's
results under ``output/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fruits_pipeline.emr.errors import UsageError


def s3_uri(bucket: str, key: str) -> str:
    """Return ``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str, what: str = "URI") -> tuple[str, str]:
    """Return (bucket, key) of an ``s3://`` URI; raise UsageError otherwise."""
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if not match:
        raise UsageError(f"{what} {uri!r} must be an s3:// URI (the cluster reads from S3)")
    return match.group(1), match.group(2)


def run_prefix(prefix: str, run_id: str) -> str:
    """Return the key prefix of a run: ``PREFIX/runs/RUN_ID`` (no slashes at the ends)."""
    return "/".join(part for part in (prefix, "runs", run_id) if part)


@dataclass(frozen=True)
class RunLayout:
    """Where a run lives in S3."""

    bucket: str
    prefix: str  # PREFIX/runs/RUN_ID

    def uri(self, *names: str) -> str:
        return s3_uri(self.bucket, "/".join([self.prefix, *names]))

    @property
    def code(self) -> str:
        return self.uri("code") + "/"

    @property
    def output(self) -> str:
        return self.uri("output") + "/"

    @property
    def logs(self) -> str:
        return self.uri("logs") + "/"

    def key(self, *names: str) -> str:
        return "/".join([self.prefix, *names])

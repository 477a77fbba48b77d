"""Where a run writes, and how it is published: never half-written.

A local output is built in a hidden sibling folder and renamed into place at the end, so a
failed or killed run never leaves a half-written OUTPUT.  On S3, where there is no rename,
the run first removes the old ``_SUCCESS`` and ``report.json``, writes in place, and writes
``report.json`` then ``_SUCCESS`` last: a prefix without ``_SUCCESS`` is not a finished run.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass

from fruits_pipeline.errors import BadInput
from fruits_pipeline.results import layout
from fruits_pipeline.results.storage import exists, is_remote, join, local_path, remove, spark_uri

log = logging.getLogger(__name__)


class OutputExistsError(BadInput):
    """OUTPUT already exists and ``--overwrite`` was not given."""


@dataclass
class OutputLocation:
    """A run's output: ``final`` is what the user asked for, ``staging`` where Spark writes."""

    final: str
    staging: str
    overwrite: bool

    @classmethod
    def prepare(cls, uri: str, overwrite: bool) -> OutputLocation:
        """Check OUTPUT and choose the staging place; writes nothing.

        Raises OutputExistsError when OUTPUT exists and ``overwrite`` is False.
        """
        if exists(uri) and not overwrite:
            raise OutputExistsError(
                f"output {uri!r} already exists: pass --overwrite to replace it"
            )
        if is_remote(uri):
            return cls(final=uri.rstrip("/"), staging=uri.rstrip("/"), overwrite=overwrite)
        final = local_path(uri)
        parent, name = os.path.split(final)
        staging = os.path.join(parent, f".{name}.incomplete-{uuid.uuid4().hex[:8]}")
        return cls(final=final, staging=staging, overwrite=overwrite)

    @property
    def in_place(self) -> bool:
        return self.final == self.staging

    def begin(self, keep_previous: bool = False) -> None:
        """Make room for the run.

        On S3 the finished-run markers go first, so that a run that dies midway never looks
        complete; with ``overwrite`` the old output goes too, unless ``keep_previous`` (an
        incremental run reads it and overwrites it part by part).
        """
        if self.in_place:
            remove(join(self.final, layout.SUCCESS))
            remove(join(self.final, layout.REPORT_JSON))
            if self.overwrite and not keep_previous and exists(self.final):
                log.info("removing the previous output at %s", self.final)
                remove(self.final)
        else:
            os.makedirs(os.path.dirname(self.staging), exist_ok=True)

    def path(self, *names: str) -> str:
        """Return where ``names`` is written during the run (under staging)."""
        return join(self.staging, *names)

    def spark_path(self, *names: str) -> str:
        """Return ``path(*names)`` as a URI for Spark's writers."""
        return spark_uri(self.path(*names))

    def final_path(self, *names: str) -> str:
        """Return where ``names`` will be once the run is published."""
        return join(self.final, *names)

    def publish(self) -> None:
        """Move a local staging folder into place, replacing an old output, and remove the
        staging folders that killed runs left beside it."""
        if self.in_place:
            return
        if os.path.exists(self.final):
            old = self.staging + ".old"
            os.rename(self.final, old)
            os.rename(self.staging, self.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.staging, self.final)
        parent, name = os.path.split(self.final)
        for entry in os.listdir(parent):
            if entry.startswith(f".{name}.incomplete-"):
                log.info("removing %s, left by an interrupted run", entry)
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)

    def discard(self) -> None:
        """Remove whatever a failed run wrote."""
        try:
            remove(self.staging)
        except Exception as error:  # cleanup must not hide the original failure
            log.warning("could not remove %s: %s", self.staging, error)

"""Where a run writes, and how it is published: never half-written, one run at a time, and
never over anything the tool did not write.

Beside OUTPUT, two hidden siblings: ``.NAME.lock``, held by the one run writing OUTPUT
(``results/lock.py``), and ``.NAME.incomplete``, the run's staging (``results/staging.py``:
its units of extracted rows, kept when the run dies, for ``--resume``).  Before anything
starts, OUTPUT is checked against what the command reads (``results/overlap.py``) and, when
it exists, against the tool's marker (``results/owned.py``): ``--overwrite`` replaces only a
run of this tool.

A local output is built in the staging folder and renamed into place at the end, so a
failed or killed run never leaves a half-written OUTPUT.  On S3, where there is no rename,
the run first removes the old ``_SUCCESS`` and ``report.json``, writes its tables in place,
and writes ``report.json`` then ``_SUCCESS`` last: a prefix without ``_SUCCESS`` is not a
finished run; its staging prefix holds only the units.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from fruits_pipeline.errors import BadInput
from fruits_pipeline.results import layout, owned
from fruits_pipeline.results.lock import Holder, OutputLock, lock_for
from fruits_pipeline.results.overlap import refuse_overlap
from fruits_pipeline.results.storage import exists, is_remote, join, local_path, spark_uri

log = logging.getLogger(__name__)


class OutputExistsError(BadInput):
    """OUTPUT already exists and ``--overwrite`` was not given."""


@dataclass
class OutputLocation:
    """A run's output: ``final`` is what the user asked for, ``staging`` where Spark writes
    the tables, ``work`` where the run stages its resumable work (locally the same folder)."""

    final: str
    staging: str
    overwrite: bool
    work: str = ""
    lock_uri: str = ""
    lock: OutputLock | None = None

    @classmethod
    def prepare(
        cls,
        uri: str,
        overwrite: bool,
        reads: Mapping[str, str | None] | None = None,
        option: str = "--output",
    ) -> OutputLocation:
        """Check OUTPUT and choose the staging place; writes nothing.

        Raises OverlapError when OUTPUT (or its staging) and a path of ``reads`` (option
        name -> path; what the command reads) overlap, OutputBusyError when a live run is
        writing OUTPUT, OutputExistsError when OUTPUT exists and ``overwrite`` is False,
        ForeignPathError when it exists and is not the tool's, and BadInput for a bucket's
        or a filesystem's root (its staging and lock have no place beside it).  ``option``
        names OUTPUT in the messages.
        """
        if is_remote(uri):
            final = uri.rstrip("/")
            parent, _, name = final.partition("://")[2].rpartition("/")
            if not parent:
                raise BadInput(f"{option} {uri!r} is a bucket: give a folder in it (…/NAME)")
            parent = final[: len(final) - len(name) - 1]
            work = f"{parent}/.{name}{layout.STAGING_SUFFIX}"
            lock = f"{parent}/.{name}{layout.LOCK_SUFFIX}"
            location = cls(final, staging=final, overwrite=overwrite, work=work, lock_uri=lock)
        else:
            final = local_path(uri)
            parent, name = os.path.split(final)
            if not name:
                raise BadInput(f"{option} {uri!r} is a filesystem's root: give a folder in it")
            staging = os.path.join(parent, f".{name}{layout.STAGING_SUFFIX}")
            lock = os.path.join(parent, f".{name}{layout.LOCK_SUFFIX}")
            location = cls(final, staging=staging, overwrite=overwrite, work=staging, lock_uri=lock)
        refuse_overlap(reads or {}, {option: uri, f"{option}'s staging": location.work})
        # A live run first: its OUTPUT may already exist on S3, where it writes in place.
        location.check_free()
        if exists(uri):
            if not overwrite:
                raise OutputExistsError(
                    f"{option} {uri!r} already exists: pass --overwrite to replace it"
                )
            owned.check_replaceable(final, option)
        if exists(location.work):
            owned.check_replaceable(location.work, f"{option}'s staging")
        return location

    @property
    def in_place(self) -> bool:
        return self.final == self.staging

    def check_free(self) -> None:
        """Raise OutputBusyError when a live run holds OUTPUT's lock: a quick answer, before
        Spark starts (``claimed`` decides)."""
        lock_for(self.final, self.lock_uri).check_free()

    @contextmanager
    def claimed(self, run_id: str) -> Iterator[OutputLocation]:
        """Hold OUTPUT's lock for the body; raise OutputBusyError naming the live run that
        holds it."""
        lock = lock_for(self.final, self.lock_uri)
        lock.acquire(Holder.this_process(run_id))
        self.lock = lock
        try:
            yield self
        finally:
            self.lock = None
            lock.release()

    def begin(self, keep_previous: bool = False) -> None:
        """Make room for the run, and mark what it writes as the tool's.

        On S3 the finished-run markers go first, so that a run that dies midway never looks
        complete; with ``overwrite`` the old output goes too, unless ``keep_previous`` (an
        incremental run reads it and overwrites it part by part).
        """
        if self.in_place:
            self.remove(layout.SUCCESS)
            self.remove(layout.REPORT_JSON)
            if self.overwrite and not keep_previous and exists(self.final):
                log.info("removing the previous output at %s", self.final)
                owned.remove(self.final, owner=self.final)
        owned.mark(self.staging)

    def remove(self, *names: str) -> None:
        """Remove ``names`` under staging (see ``owned.remove``)."""
        owned.remove(self.path(*names), owner=self.staging)

    def path(self, *names: str) -> str:
        """Return where ``names`` is written during the run (under staging)."""
        return join(self.staging, *names)

    def spark_path(self, *names: str) -> str:
        """Return ``path(*names)`` as a URI for Spark's writers."""
        return spark_uri(self.path(*names))

    def final_path(self, *names: str) -> str:
        """Return where ``names`` will be once the run is published."""
        return join(self.final, *names)

    def check_lock(self) -> None:
        """Raise LockLostError when another run took OUTPUT's lock over (S3)."""
        if self.lock is not None:
            self.lock.check()

    def publish(self) -> None:
        """Locally: move the staging folder into place, without its work, replacing an old
        output (the tool's, checked again).  On S3: remove the staging prefix (the tables
        are in place, ``_SUCCESS`` written)."""
        if self.in_place:
            owned.remove(self.work, owner=self.work)
            return
        self.remove(layout.EXTRACTED)
        self.remove(layout.STAGING_MANIFEST)
        if not os.path.exists(self.final):
            os.rename(self.staging, self.final)
            return
        owned.check_replaceable(self.final)
        old = self.staging + ".old"
        owned.remove(old, owner=old)  # a publish killed between its two renames left it
        os.rename(self.final, old)
        os.rename(self.staging, self.final)
        owned.remove(old, owner=old)

    def discard(self, keep_work: bool) -> None:
        """Remove whatever a failed run wrote; with ``keep_work``, keep its staged units
        (and, locally, the staging folder they are in) for ``--resume``."""
        doomed = [] if keep_work and not self.in_place else [self.staging]
        if not keep_work and self.in_place:
            doomed.append(self.work)
        for uri in doomed:
            try:
                owned.remove(uri, owner=uri)
            except Exception as error:  # cleanup must not hide the original failure
                log.warning("could not remove %s: %s", uri, error)

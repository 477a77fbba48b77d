"""One run at a time per OUTPUT: a lock beside it, naming the run that holds it.

A second run on an OUTPUT that a live run is writing refuses at once, in one line naming the
holder (``OutputBusyError``, exit 2): it never touches the live run's staging, and the
published OUTPUT is always one whole run.  Refusing rather than waiting or working apart:
two runs on one OUTPUT are almost always a mistake (a step submitted twice), waiting would
hide it for hours, and on S3, where a run writes in place, two runs cannot both publish whole.

- Local (``.NAME.lock`` beside OUTPUT): ``flock``, which the kernel releases the moment the
  holder dies, however it dies; the file holds the holder's name for the refusal.
- S3 (``.NAME.lock`` object beside the OUTPUT prefix): a lease.  It is created with
  ``If-None-Match: *`` (only one creator succeeds), renewed every ``RENEW_SECONDS`` with
  ``If-Match`` on its own ETag, and taken over, also with ``If-Match``, only when its holder
  is dead: on the same host a process that no longer exists, elsewhere a lease not renewed
  for ``LEASE_SECONDS`` (measured with S3's own clock, so hosts' clocks do not matter).
  A holder whose renewal fails because another run took the lease over stops before
  publishing (``LockLostError``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from fruits_pipeline.errors import BadInput

log = logging.getLogger(__name__)

#: An S3 lease not renewed for this long belongs to a dead run and may be taken over.
LEASE_SECONDS = 180
#: How often a live run renews its S3 lease.
RENEW_SECONDS = 30
#: The tag every object a run stages on S3 carries, for a lifecycle rule (docs/usage.md).
STAGING_TAG = "fruits-pipeline=staging"


class OutputBusyError(BadInput):
    """Another live run is writing OUTPUT."""


class LockLostError(RuntimeError):
    """This run's S3 lease was taken over by another run: it must not publish."""


@dataclass(frozen=True)
class Holder:
    """Who holds an OUTPUT's lock."""

    run_id: str
    host: str
    pid: int
    started_at: str

    @classmethod
    def this_process(cls, run_id: str) -> Holder:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(run_id=run_id, host=socket.gethostname(), pid=os.getpid(), started_at=started)

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder | None:
        """Read a holder back; None for an empty or foreign file."""
        try:
            return cls(**json.loads(data.decode("utf-8")))
        except (ValueError, TypeError):
            return None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode("utf-8")

    def describe(self) -> str:
        return (
            f"run {self.run_id[:12]} (host {self.host}, pid {self.pid}, started {self.started_at})"
        )

    def dead_on_this_host(self) -> bool:
        """True when the holder ran on this host and its process is gone."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False


def busy(output: str, holder: Holder | None, detail: str = "") -> OutputBusyError:
    who = holder.describe() if holder else "another run"
    return OutputBusyError(
        f"output {output!r} is being written by {who}{detail}: wait for it to finish, or "
        "stop it and run again (with --resume to keep its work)"
    )


class OutputLock(ABC):
    """The lock of one OUTPUT."""

    def __init__(self, output: str, uri: str) -> None:
        self.output = output
        self.uri = uri

    @abstractmethod
    def acquire(self, holder: Holder) -> None:
        """Take the lock for ``holder``; raise OutputBusyError naming the live holder."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock up (nothing happens when it is not held)."""

    @abstractmethod
    def live_holder(self) -> tuple[Holder | None, str] | None:
        """Return the live holder (None when unnamed) and a detail for the message, or
        None when no live run holds the lock.  Only a hint: ``acquire`` decides."""

    def check_free(self) -> None:
        """Raise OutputBusyError when a live run holds the lock (before Spark starts)."""
        found = self.live_holder()
        if found is not None:
            raise busy(self.output, *found)

    @abstractmethod
    def check(self) -> None:
        """Raise LockLostError when the lock is no longer this run's."""


class LocalLock(OutputLock):
    """``flock`` on a file beside a local OUTPUT."""

    def __init__(self, output: str, uri: str) -> None:
        super().__init__(output, uri)
        self.fd: int | None = None
        self.created_parent: str | None = None

    def acquire(self, holder: Holder) -> None:
        parent = os.path.dirname(self.uri)
        if not os.path.isdir(parent):
            os.makedirs(parent)
            self.created_parent = parent
        while True:
            fd = os.open(self.uri, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                current = Holder.from_bytes(os.pread(fd, 4096, 0))
                os.close(fd)
                self._remove_created_parent()
                raise busy(self.output, current) from None
            # The holder before us may have removed the file between our open and our lock:
            # then we hold a lock on a file nobody else can see, and must start again.
            try:
                same = os.stat(self.uri).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.to_bytes(), 0)
        self.fd = fd

    def live_holder(self) -> tuple[Holder | None, str] | None:
        try:
            fd = os.open(self.uri, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return Holder.from_bytes(os.pread(fd, 4096, 0)), ""
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def check(self) -> None:
        """A lock ``flock`` holds cannot be lost while this process lives."""

    def release(self) -> None:
        if self.fd is None:
            return
        # Removed while still locked, so that no one locks the old file after us.
        try:
            os.unlink(self.uri)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None
        self._remove_created_parent()

    def _remove_created_parent(self) -> None:
        if self.created_parent:
            try:
                os.rmdir(self.created_parent)  # only when nothing else was written there
            except OSError:
                pass
            self.created_parent = None


class S3Lease(OutputLock):
    """A lease object beside an S3 OUTPUT, written with S3's conditional writes."""

    def __init__(self, output: str, uri: str) -> None:
        super().__init__(output, uri)
        bucket, _, key = uri.split("://", 1)[1].partition("/")
        self.bucket, self.key = bucket, key
        self.etag: str | None = None
        self.holder: Holder | None = None
        self.lost_to: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def acquire(self, holder: Holder) -> None:
        for _ in range(5):
            try:
                self.etag = self._put(holder, IfNoneMatch="*")
                break
            except _PreconditionFailed:
                pass
            current = self._read()
            if current is None:
                continue  # released meanwhile: try to create it again
            other, etag, age = current
            if not self._dead(other, age):
                raise busy(self.output, other, self._detail(age))
            log.warning(
                "taking over the lock of %s, which is dead",
                other.describe() if other else "an unknown run",
            )
            try:
                self.etag = self._put(holder, IfMatch=etag)
                break
            except _PreconditionFailed:
                continue  # another run took it over first, or it was renewed
        else:
            raise busy(self.output, None, " (the lock kept changing)")
        self.holder = holder
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="output-lease", daemon=True)
        self._renewer.start()

    def live_holder(self) -> tuple[Holder | None, str] | None:
        current = self._read()
        if current is None or self._dead(current[0], current[2]):
            return None
        return current[0], self._detail(current[2])

    @staticmethod
    def _detail(age: float) -> str:
        return f", its lease renewed {age:.0f} s ago (a dead run's expires after {LEASE_SECONDS} s)"

    def check(self) -> None:
        if self.lost_to is not None:
            raise LockLostError(
                f"the lock of {self.output!r} was taken over by {self.lost_to}: "
                "this run stopped before publishing"
            )

    def release(self) -> None:
        if self.holder is None:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
            if head["ETag"] == self.etag:  # never remove a lease another run took over
                self.client.delete_object(Bucket=self.bucket, Key=self.key)
        except Exception as error:  # the run's outcome must not depend on this
            log.warning("could not remove the lock %s: %s", self.uri, error)
        self.holder = None

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                self.etag = self._put(self.holder, IfMatch=self.etag)
            except _PreconditionFailed:
                current = self._read()
                self.lost_to = current[0].describe() if current and current[0] else "another run"
                log.error("lost the lock of %s to %s", self.output, self.lost_to)
                return
            except Exception as error:  # a network hiccup: try again at the next tick
                log.warning("could not renew the lock %s: %s", self.uri, error)

    def _put(self, holder: Holder | None, **condition: str) -> str:
        from botocore.exceptions import ClientError

        body = holder.to_bytes() if holder else b""
        try:
            answer = self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=body, Tagging=STAGING_TAG, **condition
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise _PreconditionFailed from None
            raise
        return answer["ETag"]

    def _read(self) -> tuple[Holder | None, str, float] | None:
        """Return the lease's holder, ETag and age in seconds by S3's clock; None if absent."""
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        body = answer["Body"].read()
        date = answer["ResponseMetadata"]["HTTPHeaders"].get("date")
        now = parsedate_to_datetime(date) if date else datetime.now(UTC)
        age = (now - answer["LastModified"]).total_seconds()
        return Holder.from_bytes(body), answer["ETag"], age

    @staticmethod
    def _dead(holder: Holder | None, age: float) -> bool:
        if holder is not None and holder.dead_on_this_host():
            return True
        return age >= LEASE_SECONDS


class _PreconditionFailed(Exception):
    """S3 refused a conditional write."""


def lock_for(output: str, uri: str) -> OutputLock:
    """Return the lock of ``output`` kept at ``uri`` (a local path or ``s3://``)."""
    if uri.startswith(("s3://", "s3a://")):
        return S3Lease(output, "s3://" + uri.split("://", 1)[1])
    return LocalLock(output, uri)

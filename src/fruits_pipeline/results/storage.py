"""Files, local or on S3: paths and URIs in the forms Spark and fsspec read, and the files a
run writes outside Spark (JSON, CSV, bytes).

Parquet and the PCA model go through Spark's own writers (``write_parquet`` sets the job's
options).  Everything else goes through fsspec, so that ``s3://`` (s3fs, honouring
``AWS_ENDPOINT_URL``) and local paths work the same way.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import fsspec

from fruits_pipeline.errors import first_line

log = logging.getLogger(__name__)

#: Parquet writer options for the job's tables.  Dictionary encoding is off: the 1280
#: features of a row are nearly all distinct floats, so parquet-mr built a dictionary for
#: them only to fall back to plain encoding, at a CPU cost measured in docs/performance.md.
PARQUET_OPTIONS = {"parquet.enable.dictionary": "false"}


def write_parquet(frame, uri: str, mode: str = "errorifexists") -> None:
    """Write the Spark DataFrame ``frame`` as parquet at the Spark URI ``uri`` with
    ``PARQUET_OPTIONS``; ``mode`` is Spark's save mode."""
    frame.write.mode(mode).options(**PARQUET_OPTIONS).parquet(uri)


def is_remote(uri: str) -> bool:
    """Return True for URIs with a scheme other than ``file``: ``s3://``, ``s3a://``…"""
    return "://" in uri and not uri.startswith("file://")


def local_path(uri: str) -> str:
    """Return the filesystem path of a local path or ``file:`` URI, made absolute."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    elif uri.startswith("file:"):
        uri = uri[len("file:") :]
    return os.path.abspath(uri)


def spark_uri(uri: str) -> str:
    """Return ``uri`` in the form Spark reads: ``file:`` + absolute path for local paths."""
    return uri if is_remote(uri) else "file:" + local_path(uri)


def fsspec_uri(uri: str) -> str:
    """Return ``uri`` in the form fsspec opens: EMRFS' ``s3://``/``s3a://`` both map to s3fs."""
    if uri.startswith("s3a://"):
        return "s3://" + uri[len("s3a://") :]
    return uri if is_remote(uri) else local_path(uri)


def join(base: str, *names: str) -> str:
    """Join path parts with ``/``, for both URIs and local paths."""
    return "/".join([base.rstrip("/"), *names])


def _filesystem(uri: str):
    """Return fsspec's filesystem and path for ``uri``; on S3 with no cached listing, since
    other processes (workers, other runs) write there too."""
    fs, path = fsspec.core.url_to_fs(fsspec_uri(uri))
    if is_remote(uri):
        fs.invalidate_cache(path)
    return fs, path


def exists(uri: str) -> bool:
    """Return True when something is at ``uri`` (a file, a folder or an S3 prefix)."""
    fs, path = _filesystem(uri)
    return fs.exists(path)


def delete(uri: str) -> None:
    """Remove a file or a whole folder/prefix at ``uri``; nothing happens when it is absent.

    Only ``owned.remove`` calls this, after checking that the tool wrote ``uri``."""
    fs, path = _filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_json(uri: str, payload: dict) -> None:
    """Write ``payload`` as indented UTF-8 JSON to ``uri`` (local or ``s3://``)."""
    with fsspec.open(fsspec_uri(uri), "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False, sort_keys=False)
        handle.write("\n")


def write_text(uri: str, text: str) -> None:
    """Write ``text`` as UTF-8 to ``uri`` (local or ``s3://``)."""
    with fsspec.open(fsspec_uri(uri), "w", encoding="utf-8") as handle:
        handle.write(text)


def read_json(uri: str) -> dict:
    """Read a JSON document from ``uri`` (local or ``s3://``)."""
    with fsspec.open(fsspec_uri(uri), "r", encoding="utf-8") as handle:
        return json.load(handle)


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` (local path or ``s3://``), creating local folders."""
    fs, path = fsspec.core.url_to_fs(fsspec_uri(uri))
    if not is_remote(uri):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fs.pipe_file(path, data)


def write_atomic(uri: str, data: bytes, tagging: str | None = None) -> None:
    """Write ``data`` to ``uri`` so that it appears whole or not at all, even if the process
    dies midway (see ``atomic_file``).  On S3 one PUT is atomic (the object exists whole or
    not at all); ``tagging`` (``key=value``) tags it, for lifecycle rules.
    """
    if is_remote(uri):
        fs, path = fsspec.core.url_to_fs(fsspec_uri(uri))
        extra = {"Tagging": tagging} if tagging else {}
        fs.pipe_file(path, data, **extra)
        return
    with atomic_file(uri) as handle:
        handle.write(data)


@contextmanager
def atomic_file(uri: str) -> Iterator[BinaryIO]:
    """Yield a binary file whose bytes appear at ``uri`` whole when the block ends, and
    nowhere if it fails or the process dies midway.

    Locally: a hidden temporary file beside ``uri`` (Spark's readers skip ``.x`` names),
    flushed to disk, then renamed over it.  Remote: a local temporary file, uploaded when
    complete (an S3 object exists whole or not at all).
    """
    if is_remote(uri):
        with tempfile.NamedTemporaryFile(prefix="fruits-part-") as handle:
            yield handle
            handle.flush()
            fs, path = fsspec.core.url_to_fs(fsspec_uri(uri))
            fs.put_file(handle.name, path)
        return
    path = local_path(uri)
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(temporary, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def list_names(uri: str) -> list[str]:
    """Return the names directly under the folder or prefix ``uri``, sorted, as they are now
    (never a cached listing); [] when it does not exist."""
    fs, path = _filesystem(uri)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    names = [entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries]
    return sorted(name for name in names if name)


def read_parquet(uri: str):
    """Return the parquet file at ``uri`` as an arrow table: a local path, or a URI as
    Spark's ``inputFiles`` gives it (``file:`` or ``s3://``, percent-encoded)."""
    import pyarrow.parquet as pq

    if uri.startswith("file:"):
        uri = unquote(urlsplit(uri).path)
    elif is_remote(uri):
        parts = urlsplit(uri)
        uri = f"{parts.scheme}://{parts.netloc}{unquote(parts.path)}"
    if not is_remote(uri):
        return pq.read_table(local_path(uri))
    fs, path = fsspec.core.url_to_fs(fsspec_uri(uri))
    return pq.read_table(path, filesystem=fs)


def read_bytes(uri: str) -> bytes | None:
    """Return the bytes at ``uri`` (local path or ``s3://``), or None when it is absent."""
    fs, path = fsspec.core.url_to_fs(fsspec_uri(uri))
    return fs.cat_file(path) if fs.exists(path) else None


#: Bytes copied at a time when files are joined.
COPY_BLOCK = 8 * 1024 * 1024


def concatenate(uri: str, head: bytes, parts: list[str]) -> int:
    """Write ``head`` then the bytes of each file of ``parts``, in order, as one file at
    ``uri`` (local or ``s3://``, streamed in blocks); return the bytes written."""
    written = 0
    with fsspec.open(fsspec_uri(uri), "wb") as target:
        target.write(head)
        written += len(head)
        for part in parts:
            with fsspec.open(fsspec_uri(part), "rb") as source:
                while block := source.read(COPY_BLOCK):
                    target.write(block)
                    written += len(block)
    return written


def write_csv(uri: str, header: list[str], rows: Iterable[Iterable[object]]) -> int:
    """Stream ``rows`` into a UTF-8 CSV file at ``uri`` and return how many were written.

    Rows are written as they come, in blocks, so memory stays flat however many there are.
    """
    count = 0
    with fsspec.open(fsspec_uri(uri), "w", encoding="utf-8", newline="") as handle:
        block = io.StringIO()
        writer = csv.writer(block)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
            if count % 1000 == 0:
                handle.write(block.getvalue())
                block.seek(0)
                block.truncate()
        handle.write(block.getvalue())
    return count


def unreachable_endpoint(error: BaseException) -> str | None:
    """Return one line saying that S3 could not be reached, when that is what ``error`` (or
    an error it came from) says, else None: a wrong ``AWS_ENDPOINT_URL`` or no network is
    the user's to fix, and its Python traceback tells them nothing more."""
    from botocore.exceptions import ConnectionError as NoConnection

    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, NoConnection):
            endpoint = os.environ.get("AWS_ENDPOINT_URL")
            where = f"AWS_ENDPOINT_URL={endpoint}" if endpoint else "no AWS_ENDPOINT_URL set"
            reason = first_line(cause)
            return f"cannot reach S3: {reason} ({where}): check the endpoint and the network"
        cause = cause.__cause__ or cause.__context__
    return None

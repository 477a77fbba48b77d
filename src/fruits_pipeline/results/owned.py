"""What the tool owns, and the one way it removes files.

Every folder the tool makes (a run's OUTPUT or its staging, an export's DIR) gets a marker,
``layout.OWNER_MARKER``, before anything else is written in it.  ``--overwrite`` replaces
only a folder that carries it (``check_replaceable``), and ``remove`` deletes only inside
such a folder: a path the tool did not make is refused whatever the caller asks, so that a
wrong argument or a bug can cost a run, never a user's files.  An empty folder counts as
the tool's to replace: removing it loses nothing.
"""

from __future__ import annotations

import json
import logging
import os

from fruits_pipeline.errors import PROG, BadInput
from fruits_pipeline.results import layout, storage
from fruits_pipeline.results.overlap import Place

log = logging.getLogger(__name__)


class ForeignPathError(BadInput):
    """A path the tool did not write, which it was about to replace or remove."""


def mark(folder: str) -> None:
    """Say that the tool owns ``folder`` (creating it locally)."""
    data = json.dumps({"written_by": PROG}).encode("utf-8")
    storage.write_atomic(storage.join(folder, layout.OWNER_MARKER), data)


def is_owned(folder: str) -> bool:
    """True when ``folder`` carries the tool's marker."""
    data = storage.read_bytes(storage.join(folder, layout.OWNER_MARKER))
    if data is None:
        return False
    try:
        return json.loads(data.decode("utf-8")).get("written_by") == PROG
    except (ValueError, AttributeError):
        return False


def is_empty_folder(uri: str) -> bool:
    """True for a local folder with nothing in it, or an S3 prefix with no objects."""
    if storage.is_remote(uri):
        return not storage.list_names(uri)
    path = storage.local_path(uri)
    return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)


def check_replaceable(uri: str, what: str = "output") -> None:
    """Raise ForeignPathError (one line naming ``uri``) unless ``uri`` is absent, an empty
    folder, or a folder the tool wrote."""
    if not storage.is_remote(uri) and os.path.islink(storage.local_path(uri)):
        raise ForeignPathError(
            f"{what} {uri!r} is a symbolic link: refusing to replace it; give the folder "
            "it points to, or another path"
        )
    if not storage.exists(uri) or is_empty_folder(uri) or is_owned(uri):
        return
    raise ForeignPathError(
        f"{what} {uri!r} exists and was not written by {PROG} (no {layout.OWNER_MARKER} "
        "in it): refusing to replace it; remove it yourself or choose another path"
    )


def remove(uri: str, owner: str) -> None:
    """Remove the file or folder ``uri`` (nothing happens when it is absent), which must be
    ``owner`` or lie inside it, where ``owner`` is a folder the tool wrote (or an empty one).
    Anything else raises ForeignPathError and removes nothing."""
    if not Place.of(owner).contains(Place.of(uri)):
        raise ForeignPathError(f"refusing to remove {uri!r}: it is not inside {owner!r}")
    if not storage.exists(uri):
        return
    if not (is_owned(owner) or is_empty_folder(owner)):
        raise ForeignPathError(
            f"refusing to remove {uri!r}: {owner!r} was not written by {PROG} "
            f"(no {layout.OWNER_MARKER} in it)"
        )
    log.debug("removing %s", uri)
    storage.delete(uri)

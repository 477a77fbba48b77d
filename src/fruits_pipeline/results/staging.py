"""A run's resumable work: the extraction's rows, stored in small units as they are made.

The staging folder of OUTPUT (``OutputLocation.work``) holds ``staging.json`` (the
provenance of the rows staged there, and the runs that staged them) and, under
``extracted.incomplete/run-RUN/``, one parquet file per unit of about ``UNIT_IMAGES`` rows.
Each Python worker writes its units itself, each with one atomic write
(``storage.write_atomic``), then its check (``_unit-….check``: its rows and the sha256 of its
bytes, hidden from Spark's readers by the ``_``): a run that dies loses only the units it
was making, and a unit is reused only when its check is there and still holds.  A run
started again with ``--resume`` under the same provenance key reuses the verified units of
the runs before it; without ``--resume``, or under another
key, the staging is removed first.  Only the holder of OUTPUT's lock (``results/lock.py``)
opens, adopts or removes a staging.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import asdict, dataclass, field

from fruits_pipeline.results import layout, owned, storage
from fruits_pipeline.results.lock import STAGING_TAG
from fruits_pipeline.results.report import ProvenanceFacts

log = logging.getLogger(__name__)

#: Rows per unit.  A run that dies loses the units its workers were making, at most one per
#: running task: 256 images are a few seconds of one core's work (docs/performance.md), and
#: 1.3 MB of features, so that a million images make 4,000 files, not hundreds of thousands
#: of tiny ones that S3 and Spark's readers would pay for per file.
UNIT_IMAGES = 256

UNIT_PREFIX = "unit-"
RUN_PREFIX = "run-"
#: ``_`` + the unit's name + this: a unit's rows and sha256, written after the unit
CHECK_SUFFIX = ".check"


@dataclass
class StagingManifest:
    """``staging.json``: the provenance of the staged rows, and the runs that staged them."""

    provenance: ProvenanceFacts
    runs: list[str] = field(default_factory=list)


@dataclass
class Staging:
    """The staging a run writes its units into, and the units of earlier runs it reuses."""

    root: str
    run_id: str
    #: runs whose units this run may reuse (``--resume`` under the same key), oldest first
    adopted: list[str]
    #: why nothing was adopted, when ``--resume`` was given
    note: str | None = None

    @property
    def units_root(self) -> str:
        return storage.join(self.root, layout.EXTRACTED)

    def units_folder(self, run_id: str | None = None) -> str:
        """Where the units of ``run_id`` (this run by default) are."""
        return storage.join(self.units_root, RUN_PREFIX + (run_id or self.run_id)[:12])

    def finished_units(self, run_id: str | None = None) -> list[str]:
        """The names of the finished units of ``run_id`` (this run by default)."""
        return finished_units(self.units_folder(run_id))

    def verified_units(self) -> list[str]:
        """The URIs of the adopted runs' units that pass their check (``verified``)."""
        return [
            storage.join(self.units_folder(run), name)
            for run in self.adopted
            for name in verified(self.units_folder(run))
        ]


def finished_units(folder: str) -> list[str]:
    """Return the unit files in ``folder``: only whole ones exist under a unit's name."""
    return [n for n in storage.list_names(folder) if n.startswith(UNIT_PREFIX)]


def check_name(unit: str) -> str:
    """The name of the check file of the unit named ``unit``."""
    return "_" + unit + CHECK_SUFFIX


def unit_check(data: bytes) -> dict:
    """What a unit's check records of the unit's bytes ``data``: its rows and sha256."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
    return {"rows": rows, "sha256": hashlib.sha256(data).hexdigest()}


def verified(folder: str) -> list[str]:
    """Return the names of the units in ``folder`` whose check was written and still holds
    (same rows, same sha256); log the others, which are not reused: a unit without its check
    was being written, or its check, when its run died; one that fails it was changed."""
    import json

    names = storage.list_names(folder)
    good = []
    for unit in (n for n in names if n.startswith(UNIT_PREFIX)):
        recorded = storage.read_bytes(storage.join(folder, check_name(unit)))
        data = storage.read_bytes(storage.join(folder, unit))
        try:
            ok = recorded is not None and json.loads(recorded) == unit_check(data or b"")
        except (ValueError, OSError) as error:  # not parquet, or the check is not JSON
            log.debug("%s: %s", unit, error)
            ok = False
        if ok:
            good.append(unit)
        else:
            log.warning("staged unit %s/%s fails its check: featurized again", folder, unit)
    return good


def read_manifest(root: str) -> StagingManifest | None:
    """Return the staging's manifest, or None when there is none or it cannot be read."""
    uri = storage.join(root, layout.STAGING_MANIFEST)
    data = storage.read_bytes(uri)
    if data is None:
        return None
    try:
        import json

        document = json.loads(data.decode("utf-8"))
        return StagingManifest(
            provenance=ProvenanceFacts(**document["provenance"]), runs=list(document["runs"])
        )
    except (ValueError, TypeError, KeyError):
        log.warning("unreadable %s: its staged rows will not be reused", uri)
        return None


def write_manifest(root: str, manifest: StagingManifest) -> None:
    import json

    data = json.dumps(asdict(manifest), indent=2).encode("utf-8")
    storage.write_atomic(storage.join(root, layout.STAGING_MANIFEST), data, STAGING_TAG)


def open_staging(root: str, run_id: str, provenance: ProvenanceFacts, resume: bool) -> Staging:
    """Start this run's staging at ``root`` and return it.

    With ``resume`` and a staging made under the same provenance key, its finished units
    are kept for reuse and this run's are added beside them; otherwise whatever is at
    ``root`` is removed first.  The caller holds OUTPUT's lock: any staging found there
    belongs to a run that is dead.
    """
    manifest = read_manifest(root)
    adopted: list[str] = []
    if manifest is None:
        note = "no staging of an interrupted run was found"
    elif manifest.provenance.key != provenance.key:
        note = "the staged rows were made under another provenance: " + (
            provenance.differences(manifest.provenance)
        )
    else:
        folders = set(storage.list_names(storage.join(root, layout.EXTRACTED)))
        adopted = [run for run in manifest.runs if RUN_PREFIX + run[:12] in folders]
        note = None if adopted else "the interrupted run had staged no rows yet"
    if not resume:
        adopted = []
        if manifest is not None:
            note = "not reused without --resume"
    if adopted:
        log.info("resuming: the staged rows of %d interrupted run(s) are reused", len(adopted))
    elif storage.list_names(root) not in ([], [layout.OWNER_MARKER]):
        log.info("removing the staging of an interrupted run at %s (%s)", root, note)
        owned.remove(root, owner=root)
    owned.mark(root)
    write_manifest(root, StagingManifest(provenance=provenance, runs=[*adopted, run_id]))
    return Staging(root=root, run_id=run_id, adopted=adopted, note=None if adopted else note)


def write_unit(folder: str, frame, schema) -> tuple[str, list[str]]:
    """Write the rows of the pandas ``frame`` as one unit in ``folder``, atomically, with
    the arrow ``schema``; return its name and its paths.

    Runs in the Python workers.  The name is derived from the rows' paths, so that a retried
    task writes the same units again instead of new ones.  The unit's check is written after
    it, atomically too: a unit without one is never reused.
    """
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [str(path) for path in frame["path"]]
    name = UNIT_PREFIX + hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest()[:24]
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    buffer = io.BytesIO()
    # No dictionary encoding, as for the job's other tables (storage.PARQUET_OPTIONS).
    pq.write_table(table, buffer, compression="snappy", use_dictionary=False)
    data = buffer.getvalue()
    unit = name + ".parquet"
    storage.write_atomic(storage.join(folder, unit), data, STAGING_TAG)
    check = json.dumps(unit_check(data)).encode("utf-8")
    storage.write_atomic(storage.join(folder, check_name(unit)), check, STAGING_TAG)
    return unit, paths

"""Runs killed at chosen points, and what their tests need to start, watch and kill them.

``kill_at`` starts ``fruits-pipeline run`` as its own process group and follows it through
some of ``KILL_POINTS``, each an event the test observes (a stage line in its log, a unit
appearing in its staging), never a moment on the clock.  At each point but the last it copies
what the run has left on disk while the group is stopped; at the last it kills the run.  One
run so gives every point a float32 run passes; a cold run costs far more than a copy.
``KilledRuns`` starts the killed runs a test session selected in the background, a few at
once, as the session begins: a cold run leaves the cores idle while its JVM and workers
start, and the other tests fill them.  The session fixture ``killed_runs`` (conftest.py)
holds them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import networks
import pyarrow.parquet as pq

from fruits_pipeline.sample_images import write_sample_tree

SCRIPT = Path(sys.executable).parent / "fruits-pipeline"


#: ``fruits-pipeline`` whose publish writes the file ``sys.argv[1]`` and waits there to be
#: killed: the moment between ``_SUCCESS`` in the staging and its rename is milliseconds
#: long, too short to observe from outside.
PAUSED_AT_PUBLISH = """
import sys, time
from fruits_pipeline.cli import main
from fruits_pipeline.results.location import OutputLocation
marker = sys.argv.pop(1)
def publish(self):
    open(marker, "w").close()
    time.sleep(3600)
OutputLocation.publish = publish
sys.exit(main(sys.argv[1:]))
"""


#: ``sitecustomize`` of a run's Python processes (its folder put on ``PYTHONPATH``, which
#: Spark passes on to its workers): once two units are written, a unit's write stops halfway
#: through its bytes, writes the file ``$STALLED_UNIT_MARKER`` and waits there to be killed,
#: as a node lost while it writes.
STALLED_UNIT_WRITE = """
import os, time
from fruits_pipeline.results import storage
write_atomic = storage.write_atomic
def stalled(uri, data, tagging=None):
    folder, name = os.path.split(storage.local_path(uri))
    done = [n for n in os.listdir(folder) if n.startswith("unit-")] if os.path.isdir(folder) else []
    if not name.startswith("unit-") or len(done) < 2:
        return write_atomic(uri, data, tagging)
    with storage.atomic_file(uri) as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        open(os.environ["STALLED_UNIT_MARKER"], "a").close()
        time.sleep(3600)
storage.write_atomic = stalled
"""


def start_run(
    source: Path,
    output: Path,
    *extra: str,
    cache: Path,
    pause_at_publish: Path | None = None,
    stall_unit_write: Path | None = None,
) -> subprocess.Popen:
    """Start ``fruits-pipeline run`` as its own process group (its JVM and Python workers),
    its networks from the session's ``cache``; with ``pause_at_publish``, one that stops in
    its publish (``PAUSED_AT_PUBLISH``); with ``stall_unit_write`` (a marker file), one whose
    unit writes stop (``STALLED_UNIT_WRITE``)."""
    command = [str(SCRIPT), "run", "--input", str(source), "--output", str(output), *extra]
    if pause_at_publish:
        command = [sys.executable, "-c", PAUSED_AT_PUBLISH, str(pause_at_publish), *command[1:]]
    environment = networks.process_env(cache, STALLED_UNIT_WRITE if stall_unit_write else "")
    if stall_unit_write:
        environment["STALLED_UNIT_MARKER"] = str(stall_unit_write)
    return subprocess.Popen(
        [*command, "--weights", RESUME_WEIGHTS, "--master", "local[2]"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=environment,
    )


def wait_until(process: subprocess.Popen, condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            time.sleep(1)  # a Watched run's reader thread takes the rest of the log
            said = getattr(process, "watched_lines", None) or [process.stderr.read()]
            raise AssertionError(f"the run ended before {what}: {''.join(said)[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def kill_driver(process: subprocess.Popen) -> None:
    """SIGKILL the driver alone, as a lost node would; its JVM and Python workers notice
    their pipes close and exit on their own (killed after 20 s if they have not)."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            os.killpg(process.pid, 0)
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the run's whole process group at once, as a node lost with all it runs."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def staged_units(staging: Path) -> list[Path]:
    return sorted(staging.glob("extracted.incomplete/run-*/unit-*.parquet"))


def checked_rows(units: list[Path]) -> int:
    """The rows of the ``units`` whose check was written (the others are never reused)."""
    return sum(
        pq.read_table(unit).num_rows
        for unit in units
        if (unit.parent / f"_{unit.name}.check").exists()
    )


class Watched:
    """A run started with ``start_run`` whose log lines are read as they come (a thread
    drains its stderr, so that it never blocks on a full pipe)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: list[str] = []
        process.watched_lines = self.lines  # for wait_until's message
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    def said(self, words: str) -> bool:
        return any(words in line for line in list(self.lines))


#: Where a killed run dies, each an event the test observes in the run's log or staging
#: (6 units: 48 images in 6 tasks, 8 rows each, in batches of 4).
KILL_POINTS = {
    "listing": lambda run, staging: run.said("stage list: started"),
    "calibration": lambda run, staging: run.said("stage calibrate: started"),
    "extraction, first unit": lambda run, staging: len(staged_units(staging)) >= 1,
    "extraction, middle": lambda run, staging: len(staged_units(staging)) >= 3,
    "extraction, late": lambda run, staging: len(staged_units(staging)) >= 5,
    "a unit being written": lambda run, staging: (staging.parent / "stalled").exists(),
    "pca": lambda run, staging: run.said("stage pca: started"),
    "write stage": lambda run, staging: run.said("stage write: started"),
    "publishing": lambda run, staging: (staging.parent / "publishing").exists(),
}
#: Images of the killed runs' input (``write_resume_source``).
RESUME_IMAGES = 48
#: The killed runs' network.
RESUME_WEIGHTS = "random:0"
RESUME_OPTIONS = ["--weights", RESUME_WEIGHTS, "--batch-size", "4"]
#: Kill points of a quantized run only: its network is calibrated on the run's own images.
INT8_POINTS = {"calibration"}
INT8_OPTIONS = ["--engine", "onnxruntime-int8"]


def options_at(point: str) -> list[str]:
    """The run options of the killed run, its resume and its clean run at ``point``."""
    return RESUME_OPTIONS + (INT8_OPTIONS if point in INT8_POINTS else [])


#: Kill points that need a run of their own: a quantized run, and one whose unit writes stall.
OWN_RUN_POINTS = INT8_POINTS | {"a unit being written"}


def snapshot(process: subprocess.Popen, folder: Path, copy: Path) -> None:
    """Copy ``folder`` (an OUTPUT's parent: its staging and lock) to ``copy`` while the run's
    whole process group is stopped: the copy is what a SIGKILL of the group at that moment
    would leave on disk (the local lock is an flock, which a copied file does not hold)."""
    os.killpg(process.pid, signal.SIGSTOP)
    try:
        shutil.copytree(folder, copy, symlinks=True)
    finally:
        os.killpg(process.pid, signal.SIGCONT)


def assert_never_half_published(output: Path) -> None:
    """Either no OUTPUT, or a whole run (killed after its rename)."""
    assert not output.exists() or (output / "_SUCCESS").exists()


def kill_at(source: Path, folder: Path, points: tuple[str, ...], cache: Path) -> dict[str, Killed]:
    """Start a run on ``source``, its OUTPUT ``folder/out``, that passes ``points`` in that
    order (``KILL_POINTS``): at each but the last, its state is copied to a folder beside
    ``folder`` (``snapshot``); at the last, it is killed: its driver alone, or, for a unit
    being written, the whole node.  Returns point -> ``Killed``."""
    output = folder / "out"
    staging = folder / f".{output.name}.incomplete"
    last = points[-1]
    pause = folder / "publishing" if last == "publishing" else None
    stall = folder / "stalled" if last == "a unit being written" else None
    process = start_run(
        source, output, *options_at(last), cache=cache, pause_at_publish=pause,
        stall_unit_write=stall,
    )
    run = Watched(process)
    killed = {}
    try:
        for point in points:
            reached = KILL_POINTS[point]
            wait_until(run.process, lambda reached=reached: reached(run, staging), point)
            if point != last:
                copy = folder.with_name(f"{folder.name}-{len(killed)}")
                snapshot(process, folder, copy)
                killed[point] = Killed(source, copy / output.name)
    finally:
        (kill_group if stall else kill_driver)(run.process)
    killed[last] = Killed(source, output)
    if stall:  # it died with a unit half-written beside the whole ones
        assert list(staging.glob("extracted.incomplete/run-*/.unit-*.parquet.tmp-*"))
    for each in killed.values():
        assert_never_half_published(each.output)
    return killed


KILLED_TEST = "test_a_run_killed_anywhere_resumes_to_the_clean_run"

#: The test that takes a run killed late in its extraction on its own copy of the input
#: (it changes an image and the staged units before it resumes), and that point.
VERIFIED_TEST = "test_a_resume_reuses_only_the_rows_it_kept_from_verified_units"
VERIFIED_POINT = "extraction, late"


@dataclass(frozen=True)
class Kill:
    """One killed run to make: the points it passes (``kill_at``), and whether on its own
    copy of the input."""

    points: tuple[str, ...]
    own_source: bool = False


@dataclass(frozen=True)
class Killed:
    """What a killed run left: its input and its OUTPUT (staging and lock beside it)."""

    source: Path
    output: Path


def selected_kills(items) -> list[Kill]:
    """The killed runs the session's selected test ``items`` take: one run for all the
    points a float32 run passes, one for each point that needs a run of its own."""
    points, kills = set(), set()
    for item in items:
        name = getattr(item, "originalname", None)
        if name == KILLED_TEST and hasattr(item, "callspec"):
            points.add(item.callspec.params["point"])
        elif name == VERIFIED_TEST:
            kills.add(Kill((VERIFIED_POINT,), own_source=True))
    shared = tuple(point for point in KILL_POINTS if point in points - OWN_RUN_POINTS)
    kills |= {Kill((point,)) for point in points & OWN_RUN_POINTS}
    # the longest run first: it passes every point up to its publishing
    return ([Kill(shared)] if shared else []) + sorted(kills, key=lambda kill: kill.points)


#: Killed runs started side by side: each waits for its own events, so running them together
#: changes what they cost, not what they leave (a cold run leaves the cores idle while its
#: JVM and workers start); three at once, each a JVM, a driver and two Python workers, stay
#: well within the memory of a small machine.
KILLED_AT_ONCE = 3


class KilledRuns:
    """The killed runs of ``kills``, started together in the background, ``KILLED_AT_ONCE``
    at a time; a point asked for again (as ``pytest --count N`` does) is killed anew."""

    def __init__(self, kills: list[Kill], source: Path, cache: Path, base: Path) -> None:
        self.source, self.cache, self.base = source, cache, base
        self.pool = ThreadPoolExecutor(KILLED_AT_ONCE)
        self.started = {}
        for kill in kills:
            future = self.pool.submit(self.kill, kill)
            self.started.update({(point, kill.own_source): future for point in kill.points})

    def kill(self, kill: Kill) -> dict[str, Killed]:
        folder = Path(tempfile.mkdtemp(prefix="killed-", dir=self.base))
        source = self.source
        if kill.own_source:
            source = folder / "images"
            shutil.copytree(self.source, source)
        return kill_at(source, folder, kill.points, self.cache)

    def take(self, point: str, own_source: bool = False) -> Killed:
        """A run killed at ``point`` (its failure, if it failed, raised here)."""
        started = self.started.pop((point, own_source), None)
        killed = started.result() if started else self.kill(Kill((point,), own_source))
        return killed[point]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def write_resume_source(source: Path) -> Path:
    """Write the killed runs' input, ``RESUME_IMAGES`` drawn images, into ``source``."""
    # fewer images than features: the PCA is rank-deficient, as in the issue that found it
    assert write_sample_tree(str(source), per_class=RESUME_IMAGES // 6, seed=5) == RESUME_IMAGES
    return source

"""Planted bugs the suite must catch: ``make mutants``, or ``python tests/mutants.py [NAME…]``.

Each mutant is a bug that would cost users most (what is removed or replaced, which features
go with which image, what a resume reuses), written as one exact replacement in the product's
source.  For each, a scratch copy of the checkout gets the replacement, the tests named to
catch it run there, and the mutant counts as caught when they fail.  The last line says
``mutants: N caught, M missed``; the exit code is 1 when one was missed or no longer applies.

To add one: append a ``Mutant`` below, with ``old`` copied exactly from the source (it must
occur once) and the fewest tests that catch it; run ``python tests/mutants.py NAME``.
Written by hand: mutation tools (mutmut, cosmic-ray) plant random mutants and run the whole
suite for each, hours here, where these are the few bugs we decided must never pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """A planted bug: ``old`` replaced by ``new`` in ``file``, caught by ``tests``."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant(
        "remove-a-foreign-path",
        "src/fruits_pipeline/results/owned.py",
        "    if not (is_owned(owner) or is_empty_folder(owner)):\n",
        "    if False:\n",
        ("tests/results/test_owned.py::test_remove_refuses_a_path_the_tool_did_not_write",),
    ),
    Mutant(
        "overwrite-what-the-tool-did-not-write",
        "src/fruits_pipeline/results/owned.py",
        "    if not storage.exists(uri) or is_empty_folder(uri) or is_owned(uri):\n",
        "    if True:\n",
        ("tests/results/test_owned.py::test_an_existing_staging_that_is_not_ours_is_refused",),
    ),
    Mutant(
        "write-into-the-input",
        "src/fruits_pipeline/results/overlap.py",
        "            if source.contains(target) or target.contains(source):\n",
        "            if source == target:\n",
        ("tests/results/test_owned.py::test_places_overlap_as_the_filesystem_resolves_them",),
    ),
    Mutant(
        "overlap-through-a-symlink",
        "src/fruits_pipeline/results/overlap.py",
        "        resolved = os.path.realpath(local_path(uri))\n",
        "        resolved = os.path.normpath(local_path(uri))\n",
        ("tests/results/test_owned.py::test_a_symlink_is_where_it_points",),
    ),
    Mutant(
        "resume-reuses-a-half-written-unit",
        "src/fruits_pipeline/results/staging.py",
        "            ok = recorded is not None and json.loads(recorded)"
        ' == unit_check(data or b"")\n',
        "            ok = True\n",
        (
            "tests/end_to_end/test_reliability.py::"
            "test_a_resume_reuses_only_the_rows_it_kept_from_verified_units",
        ),
    ),
    Mutant(
        "resume-reuses-whole-staged-files",
        "src/fruits_pipeline/chain/reuse.py",
        "        whole_units = fully_kept(staged, kept_staged, units)\n",
        "        whole_units = units\n",
        (
            "tests/end_to_end/test_reliability.py::"
            "test_a_resume_reuses_only_the_rows_it_kept_from_verified_units",
        ),
    ),
    Mutant(
        "features-to-the-wrong-image",
        "src/fruits_pipeline/chain/extract.py",
        "            features[position] = output[row]\n",
        "            features[row] = output[row]\n",
        (
            "tests/chain/test_features.py::"
            "test_each_image_keeps_its_own_features_when_a_batch_holds_bad_ones",
        ),
    ),
    Mutant(
        "reuse-a-rewritten-file-of-the-same-size",
        "src/fruits_pipeline/chain/reuse.py",
        '        .join(current, IDENTITY, "left_semi")\n',
        '        .join(current, ["path", "length"], "left_semi")\n',
        ("tests/end_to_end/test_reliability.py::test_incremental_run_equals_a_full_run",),
    ),
    Mutant(
        "incremental-ignores-the-provenance-key",
        "src/fruits_pipeline/chain/incremental.py",
        "    if theirs.key != provenance.key:\n",
        "    if False:\n",
        (
            "tests/end_to_end/test_reliability.py::"
            "test_incremental_over_another_engine_featurizes_everything_and_says_why",
        ),
    ),
    Mutant(
        "transform-calibrates-again",
        "src/fruits_pipeline/chain/transform.py",
        "    return kept_network(model, model_report, engine)\n",
        "    return None\n",
        ("tests/engines/test_int8.py::test_transform_runs_the_kept_network_not_a_new_calibration",),
    ),
    Mutant(
        "choose-k-without-float-tolerance",
        "src/fruits_pipeline/chain/pca.py",
        "cumulative >= threshold - 1e-12",
        "cumulative >= threshold",
        ("tests/chain/test_pca.py::test_choose_k",),
    ),
    Mutant(
        "s3-keeps-the-previous-success-marker",
        "src/fruits_pipeline/results/location.py",
        "            self.remove(layout.SUCCESS)\n            self.remove(layout.REPORT_JSON)\n",
        "            self.remove(layout.REPORT_JSON)\n",
        (
            "tests/results/test_s3.py::"
            "test_a_kept_previous_run_on_s3_loses_its_finished_markers_first",
        ),
    ),
    Mutant(
        "int8-incremental-calibrates-again",
        "src/fruits_pipeline/chain/calibration.py",
        "    return kept_network(output, report, engine)\n",
        "    return None\n",
        (
            "tests/engines/test_int8.py::"
            "test_incremental_int8_keeps_the_network_and_reuses_the_unchanged_rows",
        ),
    ),
    Mutant(
        "int8-export-writes-the-float-network",
        "src/fruits_pipeline/classifier/export.py",
        "    if report.calibration is not None:\n        kept = kept_network(",
        "    if False:\n        kept = kept_network(",
        ("tests/engines/test_int8.py::test_an_int8_run_exports_the_network_it_kept_as_onnx_only",),
    ),
]


def checkout_files() -> list[str]:
    """The checkout's files as git sees them (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def scratch_copy(where: Path) -> Path:
    """Copy the checkout to ``where/repo``, with ``../shared`` beside it as the tests expect."""
    repo = where / "repo"
    for name in checkout_files():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (where / "shared").symlink_to(shared)
    return repo


def plant(repo: Path, mutant: Mutant) -> None:
    path = repo / mutant.file
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise LookupError(f"{mutant.file} holds its text {text.count(mutant.old)} times, not once")
    path.write_text(text.replace(mutant.old, mutant.new))


def caught(mutant: Mutant) -> tuple[bool, float, str]:
    """Plant ``mutant`` in a scratch copy and run its tests there; return whether they
    failed, the seconds it took and the tail of pytest's output."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as scratch:
        repo = scratch_copy(Path(scratch))
        plant(repo, mutant)
        # the scratch's package first: the checkout's is installed in editable mode
        env = {**os.environ, "PYTHONPATH": str(repo / "src")}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", *mutant.tests],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
        )
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    # exit 1: tests failed (caught); 0: all passed (missed); anything else: could not run
    if done.returncode not in (0, 1):
        raise RuntimeError(f"pytest exited {done.returncode}: {tail}")
    return done.returncode == 1, time.perf_counter() - started, tail


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    unknown = set(names) - {m.name for m in MUTANTS}
    if unknown:
        print(f"mutants: unknown {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    width = max(len(m.name) for m in chosen)
    found = missed = 0
    for mutant in chosen:
        try:
            hit, seconds, tail = caught(mutant)
            verdict = "caught" if hit else "MISSED"
        except (LookupError, RuntimeError) as error:
            hit, seconds, verdict, tail = False, 0.0, "BROKEN", str(error)
        found += hit
        missed += not hit
        print(f"{mutant.name:<{width}}  {verdict:<6}  {seconds:5.0f} s  {mutant.file}", flush=True)
        if not hit:
            print("    " + tail.replace("\n", "\n    "), flush=True)
    print(f"mutants: {found} caught, {missed} missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

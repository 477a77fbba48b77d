"""Reliability: worker crashes, a killed driver, odd files, incremental runs."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_runs import run_ok
from crash_engine import crash_once_engine
from image_files import bomb_png, jpeg_bytes, noise_image, png_bytes
from killed_runs import (
    INT8_OPTIONS,
    INT8_POINTS,
    KILL_POINTS,
    RESUME_IMAGES,
    RESUME_OPTIONS,
    VERIFIED_POINT,
    checked_rows,
    options_at,
    staged_units,
    start_run,
    wait_until,
)
from PIL import Image

from fruits_pipeline.chain import extract, job
from fruits_pipeline.cli import main
from fruits_pipeline.results import storage
from fruits_pipeline.sample_images import write_sample_tree

pytestmark = pytest.mark.spark


def stored_rows(output: Path) -> dict[str, dict]:
    """path -> row of features/ and rejected/ together (pyarrow reads the parquet files
    Spark wrote, skipping its ``_SUCCESS`` and ``.crc`` files)."""
    rows = {}
    for table in ("features", "rejected"):
        for row in pq.read_table(output / table).to_pylist():
            rows[row["path"]] = row
    return rows


def assert_same_features(ours: dict[str, dict], theirs: dict[str, dict]) -> None:
    assert sorted(ours) == sorted(theirs)
    for path, row in ours.items():
        assert row["label"] == theirs[path]["label"]
        assert row.get("error") == theirs[path].get("error")
        if row.get("features") is not None:
            assert np.allclose(row["features"], theirs[path]["features"], atol=1e-5), path


def assert_same_projection(ours: dict[str, dict], theirs: dict[str, dict]) -> None:
    paths = sorted(p for p in ours if ours[p].get("pca_features") is not None)
    a = np.array([ours[p]["pca_features"] for p in paths])
    b = np.array([theirs[p]["pca_features"] for p in paths])
    assert a.shape == b.shape
    signs = np.sign(np.sum(a * b, axis=0))  # components are defined up to sign
    assert np.allclose(a, b * signs, atol=1e-3)


def test_a_python_worker_crash_is_retried_and_loses_nothing(spark, capsys, tmp_path, monkeypatch):
    source = tmp_path / "images"
    write_sample_tree(str(source), per_class=3, seed=4)
    options = [
        "--input",
        str(source),
        "--weights",
        "random:0",
        "--batch-size",
        "4",
        "--variance-threshold",
        "1.0",
    ]
    clean, _ = run_ok(capsys, *options, "--output", str(tmp_path / "clean"))

    marker = tmp_path / "crashed-once"
    engine = crash_once_engine(monkeypatch, str(marker))
    crashed, _ = run_ok(capsys, *options, "--output", str(tmp_path / "crashed"), "--engine", engine)

    assert marker.exists(), "the crash engine never fired: no worker crashed"
    assert crashed["counts"] == clean["counts"]
    assert crashed["pca"]["k"] == clean["pca"]["k"]
    assert_same_features(
        stored_rows(tmp_path / "crashed"), stored_rows(tmp_path / "clean")
    )


def clean_run(source: Path, output: Path, options: list[str] = RESUME_OPTIONS) -> dict:
    """A run of ``source`` from scratch, in this test session; its report."""
    args = ["run", "--input", str(source), "--output", str(output), *options]
    assert main(args, default_master="local[2,2]") == 0
    return json.loads((output / "report.json").read_text())


@pytest.fixture(scope="module")
def clean(spark, resume_source, tmp_path_factory) -> SeenRun:
    """The clean float32 run of ``resume_source``."""
    output = tmp_path_factory.mktemp("clean") / "out"
    clean_run(resume_source, output)
    return seen(output)


@pytest.fixture(scope="module")
def clean_int8(spark, resume_source, tmp_path_factory) -> SeenRun:
    """The clean int8 run of ``resume_source``."""
    output = tmp_path_factory.mktemp("clean-int8") / "out"
    clean_run(resume_source, output, RESUME_OPTIONS + INT8_OPTIONS)
    return seen(output)


@dataclass(frozen=True)
class SeenRun:
    """What a finished run published, read once: its report, rows and PCA components."""

    report: dict
    rows: dict[str, dict]
    components: np.ndarray


def seen(output: Path) -> SeenRun:
    from pyspark.ml import PipelineModel

    return SeenRun(
        json.loads((output / "report.json").read_text()),
        stored_rows(output),
        PipelineModel.load(str(output / "pca_model")).stages[1].pc.toArray(),
    )


def assert_same_run(ours: SeenRun, theirs: SeenRun) -> None:
    """The same rows, each path's features, the same k, components and projection."""
    mine, other = ours.report, theirs.report
    assert mine["counts"] == other["counts"] and mine["pca"]["k"] == other["pca"]["k"]
    assert mine["provenance"] == other["provenance"]
    assert_same_features(ours.rows, theirs.rows)
    assert_same_projection(ours.rows, theirs.rows)
    signs = np.sign(np.sum(ours.components * theirs.components, axis=0))
    assert np.allclose(ours.components, theirs.components * signs, atol=1e-6)


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_run_killed_anywhere_resumes_to_the_clean_run(
    spark, capsys, resume_source, killed_runs, request, point
):
    output = killed_runs.take(point).output
    staging = output.parent / ".out.incomplete"
    # every unit left is whole (parquet that reads), with its check
    for unit in staged_units(staging):
        assert pq.read_table(unit).num_rows > 0
    done = checked_rows(staged_units(staging))  # 0 without a staging

    resumed, _ = run_ok(
        capsys, "--input", str(resume_source), *options_at(point),
        "--output", str(output), "--resume", "--overwrite",
    )
    reused, inferred = resumed["resume"]["reused"], resumed["cnn"]["images_inferred"]
    assert reused == done and inferred == RESUME_IMAGES - done
    assert not staging.exists() and not (output.parent / ".out.lock").exists()
    clean = request.getfixturevalue("clean_int8" if point in INT8_POINTS else "clean")
    assert_same_run(seen(output), clean)


def test_a_resume_reuses_only_the_rows_it_kept_from_verified_units(
    spark, capsys, tmp_path, killed_runs
):
    """A staged unit holding an image changed since, a truncated unit, one without its
    check and one whose bytes no longer match it: the resumed run equals a clean run of the
    images as they are now, and the next one still works."""
    killed = killed_runs.take(VERIFIED_POINT, own_source=True)  # on its own copy of the input
    source, output = killed.source, killed.output
    staging = output.parent / ".out.incomplete"
    units = [u for u in staged_units(staging) if (u.parent / f"_{u.name}.check").exists()]
    assert len(units) >= 4, units
    changed = Path(unquote(urlsplit(pq.read_table(units[0]).column("path")[0].as_py()).path))
    Image.open(changed).rotate(90).save(changed, format="JPEG", quality=70)
    units[1].write_bytes(units[1].read_bytes()[:-200])  # half-written
    (units[2].parent / f"_{units[2].name}.check").unlink()  # its run died before the check
    garbled = bytearray(units[3].read_bytes())
    garbled[len(garbled) // 2] ^= 0xFF
    units[3].write_bytes(bytes(garbled))  # changed after its check

    expected = checked_rows(units[4:]) + pq.read_table(units[0]).num_rows - 1  # less the change

    resumed, _ = run_ok(
        capsys, "--input", str(source), *RESUME_OPTIONS, "--output", str(output), "--resume"
    )
    assert resumed["resume"]["reused"] == expected
    clean_run(source, tmp_path / "clean")
    assert_same_run(seen(output), seen(tmp_path / "clean"))


def test_two_runs_on_one_output_never_break_each_other(spark, tmp_path, network_cache):
    source = tmp_path / "images"
    write_sample_tree(str(source), per_class=30, seed=9)
    output = tmp_path / "out"
    first = start_run(source, output, cache=network_cache)
    wait_until(first, lambda: staged_units(tmp_path / ".out.incomplete"), "it staged a unit")
    live = staged_units(tmp_path / ".out.incomplete")

    # the first stopped while the second runs, so that it is still at work when the second
    # ends, whatever the machine's speed (a stopped process keeps its flock)
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        second = start_run(source, output, "--overwrite", cache=network_cache)  # as in the issue
        _, second_err = second.communicate(timeout=300)
        assert all(path.exists() for path in live)  # the first's staging untouched
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    _, first_err = first.communicate(timeout=600)

    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 2, second_err[-3000:]
    said = [line for line in second_err.splitlines() if line.startswith("fruits-pipeline:")]
    assert len(said) == 1 and "is being written by run" in said[0], second_err
    assert f"pid {first.pid}," in said[0]
    assert "Traceback" not in first_err + second_err
    report = json.loads((output / "report.json").read_text())
    assert report["counts"]["featurized"] == report["counts"]["files_seen"] == 180
    assert report["cnn"]["images_inferred"] == 180
    assert spark.read.parquet(str(output / "features")).count() == 180
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]


def test_a_run_whose_staged_rows_vanish_fails_and_blames_no_input(
    spark, capsys, tmp_path, monkeypatch
):
    source = tmp_path / "images"
    write_sample_tree(str(source), per_class=1, seed=3)
    featurize_units = extract.featurize_units

    class LosingOne:
        """The extraction, then one of its units removed, as a stray cleanup would."""

        def __init__(self, *args, **kwargs) -> None:
            self.frame = featurize_units(*args, **kwargs)
            self.folder = Path(storage.local_path(args[4]))

        def collect(self):
            rows = self.frame.collect()
            next(self.folder.glob("unit-*.parquet")).unlink()
            return rows

    monkeypatch.setattr(extract, "featurize_units", LosingOne)
    output = tmp_path / "out"
    code = main(
        ["run", "--input", str(source), "--output", str(output), "--weights", "random:0"],
        default_master="local[2,2]",
    )
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("fruits-pipeline:")]
    assert code == 1 and len(said) == 1, err
    assert "job failed: 1 of the" in said[0] and "went missing while it ran" in said[0]
    assert "unreadable" not in err
    assert not output.exists()


@pytest.fixture
def odd_tree(tmp_path) -> Path:
    """Every kind of file a bucket holds: valid images of all sorts, broken ones, files at
    the root, hidden files and files that are not images."""
    root = tmp_path / "odd input"
    label = root / "Pêche de vigne"
    label.mkdir(parents=True)
    base = noise_image(20)
    files = {
        "gray.jpg": jpeg_bytes(base.convert("L")),
        "cmyk.jpg": jpeg_bytes(base.convert("CMYK")),
        "palette.png": png_bytes(base.convert("P")),
        "alpha.png": png_bytes(base.convert("RGBA")),
        "progressive.jpg": jpeg_bytes(base, progressive=True),
        "UPPER.JPG": jpeg_bytes(noise_image(21)),
        "Upper.Jpeg": jpeg_bytes(noise_image(22)),
        "LOUD.PNG": png_bytes(noise_image(23)),
        "huge.jpg": jpeg_bytes(noise_image(24, size=(6000, 4000)), quality=60),
        "truncated.jpg": jpeg_bytes(noise_image(25))[:700],
        "zero.jpg": b"",
        "text.png": b"plain text pretending to be a PNG\n",
        "bomb.png": bomb_png(),
        "vanishing.jpg": jpeg_bytes(noise_image(26)),
    }
    sixteen = io.BytesIO()
    Image.fromarray(np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (64, 1))).save(
        sixteen, format="PNG"
    )
    files["sixteen-bit.png"] = sixteen.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6
    files["phone.jpg"] = jpeg_bytes(noise_image(27, size=(160, 120)), exif=exif.tobytes())
    for name, content in files.items():
        (label / name).write_bytes(content)
    (root / "at-root.jpg").write_bytes(jpeg_bytes(noise_image(28)))
    (label / ".hidden.jpg").write_bytes(jpeg_bytes(noise_image(29)))
    (label / "_temporary.jpg").write_bytes(jpeg_bytes(noise_image(30)))
    (root / ".cache").mkdir()
    (root / ".cache" / "thumb.jpg").write_bytes(jpeg_bytes(noise_image(31)))
    (label / "notes.txt").write_text("not an image")
    (label / "anim.gif").write_bytes(b"GIF89a")
    return root


def test_every_kind_of_file(spark, capsys, tmp_path, odd_tree, monkeypatch):
    listed = job.list_images

    def list_then_lose_one(*args, **kwargs):
        listing = listed(*args, **kwargs)
        (odd_tree / "Pêche de vigne" / "vanishing.jpg").unlink()  # gone before it is read
        return listing

    monkeypatch.setattr(job, "list_images", list_then_lose_one)
    output = tmp_path / "out"
    report, printed = run_ok(
        capsys,
        "--input",
        str(odd_tree),
        "--output",
        str(output),
        "--weights",
        "random:0",
        "--variance-threshold",
        "1.0",
    )
    rows = {Path(p).name: r for p, r in stored_rows(output).items()}

    valid = {
        "gray.jpg",
        "cmyk.jpg",
        "palette.png",
        "alpha.png",
        "progressive.jpg",
        "UPPER.JPG",
        "Upper.Jpeg",
        "LOUD.PNG",
        "huge.jpg",
        "sixteen-bit.png",
        "phone.jpg",
        "at-root.jpg",
    }
    reasons = {
        "truncated.jpg": "corrupt",
        "zero.jpg": "empty",
        "text.png": "not_an_image",
        "bomb.png": "decompression_bomb",
        "vanishing.jpg": "unreadable",
    }
    assert set(rows) == valid | set(reasons)  # hidden files and non-images are ignored
    for name in valid:
        assert rows[name].get("error") is None and len(rows[name]["features"]) == 1280, name
    for name, reason in reasons.items():
        assert rows[name]["error"].startswith(reason + ":"), rows[name]["error"]
    assert rows["at-root.jpg"]["label"] == ""  # no class folder: the empty label
    assert rows["gray.jpg"]["label"] == "Pêche de vigne"
    assert report["counts"]["rejected_by_reason"] == {
        "empty": 1,
        "not_an_image": 1,
        "decompression_bomb": 1,
        "corrupt": 1,
        "unreadable": 1,
    }
    assert report["counts"]["per_label"][""] == {"featurized": 1, "rejected": 0}
    assert (
        "rejected         5 (1 empty, 1 not_an_image, 1 decompression_bomb, 1 corrupt, "
        "1 unreadable)" in printed
    )


def test_incremental_run_equals_a_full_run(spark, capsys, tmp_path):
    source = tmp_path / "images"
    write_sample_tree(str(source), per_class=2, seed=6)
    output = tmp_path / "incremental"
    options = ["--weights", "random:0", "--variance-threshold", "0.9"]
    first, _ = run_ok(capsys, "--input", str(source), "--output", str(output), *options)
    assert first["counts"]["featurized"] == 12

    # add two images, change one, delete one
    (source / "Kiwi" / "new_1.jpg").write_bytes(jpeg_bytes(noise_image(40)))
    (source / "New Fruit").mkdir()
    (source / "New Fruit" / "new_2.jpg").write_bytes(jpeg_bytes(noise_image(41)))
    changed = source / "Plum" / "0_100.jpg"
    changed.write_bytes(jpeg_bytes(noise_image(42)))
    os.utime(changed, (time.time() + 5, time.time() + 5))
    # Another image in a file of exactly the old byte length: only its modification time
    # tells it changed (JPEG decoders stop at the end-of-image marker; zeros pad it).
    same_size = source / "Kiwi" / "0_100.jpg"
    old_length = same_size.stat().st_size
    replacement = jpeg_bytes(noise_image(43), quality=40)
    assert len(replacement) < old_length
    same_size.write_bytes(replacement + b"\0" * (old_length - len(replacement)))
    os.utime(same_size, (time.time() + 5, time.time() + 5))
    assert same_size.stat().st_size == old_length
    (source / "Banana" / "1_100.jpg").unlink()

    second, _ = run_ok(
        capsys, "--input", str(source), "--output", str(output), *options, "--incremental"
    )
    assert second["incremental"] == {
        "previous_run": True,
        "reused": 9,
        "new": 2,
        "changed": 2,
        "removed": 1,
    }
    assert second["cnn"]["images_inferred"] == 4  # reused images were not re-featurized
    assert second["counts"]["featurized"] == 13

    full = tmp_path / "full"
    third, _ = run_ok(capsys, "--input", str(source), "--output", str(full), *options)
    assert third["pca"]["k"] == second["pca"]["k"]
    ours, theirs = stored_rows(output), stored_rows(full)
    assert_same_features(ours, theirs)
    assert_same_projection(ours, theirs)


def test_incremental_without_previous_run_does_a_full_run(spark, capsys, tmp_path):
    source = tmp_path / "images"
    write_sample_tree(str(source), per_class=1, seed=7)
    report, _ = run_ok(
        capsys,
        "--input",
        str(source),
        "--output",
        str(tmp_path / "out"),
        "--weights",
        "random:0",
        "--incremental",
    )
    assert report["incremental"]["previous_run"] is False
    assert report["incremental"]["new"] == 6
    shutil.rmtree(tmp_path / "out")


def test_incremental_over_another_engine_featurizes_everything_and_says_why(
    spark, capsys, tmp_path, monkeypatch
):
    source = tmp_path / "images"
    write_sample_tree(str(source), per_class=1, seed=8)
    output = tmp_path / "out"
    options = ["--input", str(source), "--output", str(output), "--weights", "random:0"]
    first, _ = run_ok(capsys, *options)
    assert first["provenance"]["engine"] == "onnxruntime"

    marker = tmp_path / "crashed-already"
    marker.touch()  # so this engine never crashes: ONNX Runtime under another name
    engine = crash_once_engine(monkeypatch, str(marker))
    second, printed = run_ok(capsys, *options, "--incremental", "--engine", engine)
    assert second["incremental"]["previous_run"] is False
    assert second["incremental"]["note"] == (
        "the run at OUTPUT was made with engine onnxruntime, not crash-once"
    )
    assert second["cnn"]["images_inferred"] == 6
    assert second["provenance"]["engine"] == engine
    assert second["provenance"]["key"] != first["provenance"]["key"]
    assert "(nothing reused: the run at OUTPUT was made with engine onnxruntime" in printed

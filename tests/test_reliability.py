"""Reliability: worker crashes, a killed driver, odd files, incremental runs."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_runs import run_ok
from crash_engine import crash_once_engine
from image_files import bomb_png, jpeg_bytes, noise_image, png_bytes
from PIL import Image

from fruits_pipeline.chain import job
from fruits_pipeline.sample_images import write_sample_tree

pytestmark = pytest.mark.spark


def stored_rows(spark, output: Path) -> dict[str, dict]:
    """path -> row of features/ and rejected/ together."""
    rows = {r["path"]: r.asDict() for r in spark.read.parquet(str(output / "features")).collect()}
    for r in spark.read.parquet(str(output / "rejected")).collect():
        rows[r["path"]] = r.asDict()
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
        stored_rows(spark, tmp_path / "crashed"), stored_rows(spark, tmp_path / "clean")
    )


def test_killed_driver_leaves_nothing_that_looks_complete(spark, capsys, tmp_path):
    source = tmp_path / "images"
    write_sample_tree(str(source), per_class=25, seed=5)
    output = tmp_path / "out"
    script = Path(sys.executable).parent / "fruits-pipeline"
    command = [
        str(script),
        "run",
        "--input",
        str(source),
        "--output",
        str(output),
        "--weights",
        "random:0",
        "--batch-size",
        "8",
        "--master",
        "local[2]",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if list(tmp_path.glob(".out.incomplete-*/extracted.incomplete")):
                break  # the extraction has started writing
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(2)
        os.kill(process.pid, signal.SIGKILL)  # the driver, as a lost node would
        process.wait(timeout=30)
    finally:
        time.sleep(3)  # the JVM and workers exit when the driver's pipe closes
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    assert not output.exists()
    leftovers = list(tmp_path.glob(".out.incomplete-*"))
    assert leftovers and not any((p / "report.json").exists() for p in leftovers)

    report, _ = run_ok(
        capsys,
        "--input",
        str(source),
        "--output",
        str(output),
        "--weights",
        "random:0",
        "--overwrite",
    )
    assert report["counts"]["featurized"] == 150
    assert (output / "_SUCCESS").exists()
    assert not list(tmp_path.glob(".out.incomplete-*"))  # cleaned up by the next run


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
    rows = {Path(p).name: r for p, r in stored_rows(spark, output).items()}

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
    ours, theirs = stored_rows(spark, output), stored_rows(spark, full)
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

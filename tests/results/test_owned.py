"""No command removes or overwrites what it did not write; no command writes into what it
reads (results/owned.py, results/overlap.py, and every command that writes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from image_files import jpeg_bytes, noise_image

from fruits_pipeline.cli import main
from fruits_pipeline.results import layout, owned, storage
from fruits_pipeline.results.location import OutputLocation
from fruits_pipeline.results.overlap import OverlapError, Place, refuse_overlap


def user_folder(root: Path) -> dict[Path, bytes]:
    """A user's folder as in the issue: data/images/<label>/*.jpg and a notes file; return
    every file with its bytes, to check that nothing was touched."""
    for index in range(4):
        folder = root / "images" / ("Kiwi" if index % 2 else "Lemon")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index}.jpg").write_bytes(jpeg_bytes(noise_image(index)))
    (root / "notes.txt").write_text("my notes")
    return snapshot(root)


def snapshot(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def one_line_exit_2(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("fruits-pipeline:")]
    assert code == 2 and len(lines) == 1, err
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "source, output, words",
    [
        ("{data}/images", "{data}", ["overlap", "inside"]),
        ("{data}/images", "{data}/images", ["same place"]),
        ("{data}/images/", "{data}/images/features/", ["overlap"]),
        ("{data}/images", "{data}/images/../images/", ["same place"]),
        ("file://{data}/images", "{data}", ["overlap"]),
        ("file:{data}/images", "file://{data}/./images", ["same place"]),
        ("{link}", "{data}/images/out", ["overlap"]),  # a symlink to the images
        ("{data}/images", "{link}/out", ["overlap"]),
        ("{data}/images", "{home}", ["not written by fruits-pipeline"]),
        ("{data}/images", "{data}/notes.txt", ["not written by fruits-pipeline"]),
        ("{data}/images", "{elsewhere}", ["not written by fruits-pipeline"]),
        ("{data}/images", "/", ["root"]),
    ],
)
def test_run_overwrite_never_touches_what_it_did_not_write(
    capsys, tmp_path, monkeypatch, source, output, words
):
    data = tmp_path / "data"
    before = user_folder(data)
    (tmp_path / "link").symlink_to(data / "images")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "thesis.tex").write_text("years of work")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("mine")
    names = {"data": data, "link": tmp_path / "link", "home": home, "elsewhere": elsewhere}
    monkeypatch.chdir(data)
    args = ["--input", source.format(**names), "--output", output.format(**names)]
    code = main(["run", *args, "--weights", "random:0", "--overwrite"], default_master="local[1]")
    one_line_exit_2(capsys, code, *words)
    assert snapshot(data) == before
    assert (elsewhere / "thesis.tex").read_text() == "years of work"
    assert (home / ".bashrc").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "elsewhere", "home", "link"]


def test_run_refuses_the_working_folder_and_the_weights_inside_output(
    capsys, tmp_path, monkeypatch
):
    data = tmp_path / "data"
    before = user_folder(data)
    monkeypatch.chdir(data)
    code = main(["run", "--input", "images", "--output", ".", "--overwrite"])
    one_line_exit_2(capsys, code, "--input 'images' and --output '.' overlap")
    weights = tmp_path / "out" / "mine.weights.h5"
    weights.parent.mkdir()
    weights.write_bytes(b"not really weights")
    code = main(
        ["run", "--input", "images", "--output", str(weights.parent), "--weights", str(weights)]
    )
    one_line_exit_2(capsys, code, "--weights", "overlap")
    assert snapshot(data) == before and weights.read_bytes() == b"not really weights"


@pytest.mark.parametrize(
    "a, b, overlapping",
    [
        ("s3://bucket/data", "s3a://bucket/data/", True),
        ("s3://bucket/data/images", "s3n://bucket/data", True),
        ("s3://bucket/data/./x/../images", "s3://bucket//data/images/", True),
        ("s3://bucket/data", "s3://bucket/data2", False),  # key prefixes, not folders
        ("s3://bucket/data", "s3://other/data", False),
        ("s3://bucket/data", "/bucket/data", False),
        ("/a/b", "/a/bc", False),
        ("/a/b/", "file:///a/b/c", True),
    ],
)
def test_places_overlap_as_the_filesystem_resolves_them(a, b, overlapping):
    assert (Place.of(a).contains(Place.of(b)) or Place.of(b).contains(Place.of(a))) is overlapping
    if overlapping:
        with pytest.raises(OverlapError):
            refuse_overlap({"--input": a}, {"--output": b})
    else:
        refuse_overlap({"--input": a}, {"--output": b})


def test_a_symlink_is_where_it_points(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    assert Place.of(str(tmp_path / "link" / "images")) == Place.of(str(tmp_path / "data/images"))
    with pytest.raises(OverlapError, match="inside"):
        refuse_overlap({"--input": str(tmp_path / "link/images")}, {"--output": str(tmp_path)})


def test_remove_refuses_a_path_the_tool_did_not_write(tmp_path):
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    mine = tmp_path / "mine"
    owned.mark(str(mine))
    (mine / "table").mkdir()
    (mine / "table" / "part-0").write_text("made by a run")

    # outside its owner, or an owner without the marker: refused, nothing removed
    with pytest.raises(owned.ForeignPathError, match="not inside"):
        owned.remove(str(foreign / "precious.txt"), owner=str(mine))
    with pytest.raises(owned.ForeignPathError, match="not inside"):
        owned.remove(str(mine / ".." / "theirs"), owner=str(mine))
    with pytest.raises(owned.ForeignPathError, match="not written by"):
        owned.remove(str(foreign / "precious.txt"), owner=str(foreign))
    (mine / "escape").symlink_to(foreign)  # a link inside an owned folder points outside
    with pytest.raises(owned.ForeignPathError, match="not inside"):
        owned.remove(str(mine / "escape"), owner=str(mine))
    assert (foreign / "precious.txt").read_text() == "keep"

    owned.remove(str(mine / "table"), owner=str(mine))
    assert not (mine / "table").exists() and (mine / layout.OWNER_MARKER).exists()
    owned.remove(str(mine / "absent"), owner=str(mine))  # nothing there: nothing happens
    empty = tmp_path / "empty"
    empty.mkdir()
    owned.remove(str(empty), owner=str(empty))  # an empty folder loses nothing
    assert not empty.exists()


def test_a_marker_of_another_tool_is_not_ours(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / layout.OWNER_MARKER).write_text('{"written_by": "someone else"}')
    (folder / "file").write_text("theirs")
    assert not owned.is_owned(str(folder))
    with pytest.raises(owned.ForeignPathError):
        owned.check_replaceable(str(folder))
    (folder / layout.OWNER_MARKER).write_text("not json")
    assert not owned.is_owned(str(folder))


def test_publish_checks_again_what_it_replaces(tmp_path):
    """A folder that became a user's between the check and the publish is not replaced."""
    output = tmp_path / "out"
    owned.mark(str(output))
    location = OutputLocation.prepare(str(output), overwrite=True)
    location.begin()
    storage.write_text(location.path("report.json"), "{}")
    os.remove(output / layout.OWNER_MARKER)
    (output / "mine.txt").write_text("the user's now")
    with pytest.raises(owned.ForeignPathError):
        location.publish()
    assert (output / "mine.txt").read_text() == "the user's now"


def test_an_existing_staging_that_is_not_ours_is_refused(tmp_path):
    staging = tmp_path / f".out{layout.STAGING_SUFFIX}"
    staging.mkdir()
    (staging / "draft.txt").write_text("a user's hidden folder of the same name")
    with pytest.raises(owned.ForeignPathError, match="staging"):
        OutputLocation.prepare(str(tmp_path / "out"), overwrite=False)
    assert (staging / "draft.txt").exists()


@pytest.mark.parametrize(
    "source, output, extra, words",
    [
        ("{images}", "{images}/predictions.csv", [], ["overlap"]),
        ("{images}", "{model}/fruits_classifier.onnx", ["--overwrite"], ["--model", "same place"]),
        ("{images}", "{notes}", ["--overwrite"], ["not a CSV written by predict"]),
    ],
)
def test_predict_writes_only_its_own_csv(capsys, tmp_path, source, output, extra, words):
    images = tmp_path / "images"
    before = user_folder(images)
    model = tmp_path / "model"
    model.mkdir()
    (model / "fruits_classifier.onnx").write_bytes(b"a model")
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    names = {"images": images, "model": model, "notes": notes}
    args = ["--model", str(model / "fruits_classifier.onnx"), "--input", source, "--output", output]
    code = main(["predict", *[a.format(**names) for a in args], *extra])
    one_line_exit_2(capsys, code, *words)
    assert snapshot(images) == before and notes.read_text() == "a,b\n1,2\n"
    assert (model / "fruits_classifier.onnx").read_bytes() == b"a model"

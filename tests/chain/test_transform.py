"""``transform``: new images projected with a finished run's weights and saved PCA."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from image_files import jpeg_bytes, noise_image
from results_run import PER_SPLIT
from shared_data import SHARED_FRUITS

from fruits_pipeline.chain.transform import WeightsMismatchError, check_same_weights
from fruits_pipeline.chain.weights import WeightsSpec, load_weights
from fruits_pipeline.cli import main
from fruits_pipeline.results import layout
from fruits_pipeline.results.report import from_json
from fruits_pipeline.sample_images import FRUIT_CLASSES, draw_fruit


@pytest.fixture(scope="module")
def run(small_run):
    return small_run


def transform(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["transform", *args, "--master", "local[2]"], default_master="local[2]")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("fruits-pipeline:")]
    assert len(lines) == 1, err
    return lines[0]


def new_images(run, root: Path) -> tuple[dict[str, str], Path]:
    """Fill ``root`` with 5 images of the run (symlinks), one image the run never saw and a
    truncated file.  Return {new path: the run's path} for the first five, and the unseen."""
    seen = {}
    for split, count in (("Test", 3), ("Training", 2)):
        label = sorted(p.name for p in (run.input / split).iterdir())[count]
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for source in sorted((run.input / split / label).iterdir())[:count]:
            os.symlink(source.resolve(), folder / source.name)
            seen[f"file:{folder / source.name}"] = f"file:{source}"
    unseen = root / "Kiwi" / "new_100.jpg"
    unseen.parent.mkdir(exist_ok=True)
    shared = SHARED_FRUITS / "Test" / "Kiwi"
    if run.real_data and shared.is_dir():  # beyond the images the run took
        os.symlink(sorted(shared.iterdir())[PER_SPLIT["Test"] + 4], unseen)
    else:
        kind = sorted(FRUIT_CLASSES)[0]
        draw_fruit(kind, np.random.default_rng(99)).save(unseen, quality=92)
    good = jpeg_bytes(noise_image(5))
    (root / "Kiwi" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    return seen, unseen


def test_transform_projects_like_the_batch_run(spark, capsys, tmp_path, run):
    from pyspark.ml import PipelineModel
    from pyspark.ml.linalg import Vectors

    seen, unseen = new_images(run, tmp_path / "new")
    output = tmp_path / "out2"
    code, out, err = transform(
        capsys,
        "--model",
        str(run.output),
        "--input",
        str(tmp_path / "new"),
        "--output",
        str(output),
    )
    assert code == 0, err[-3000:]
    assert sorted(p.name for p in output.iterdir()) == [
        layout.OWNER_MARKER,
        "_SUCCESS",
        "features",
        "features_pca.csv",
        "plots",
        "rejected",
        "report.html",
        "report.json",
    ]
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    k = run.report["pca"]["k"]
    assert report["transform"]["refit"] is False and report["pca"]["k"] == k
    assert report["weights"]["arrays_sha256"] == run.report["weights"]["arrays_sha256"]
    assert report["weights"]["source"] == run.report["weights"]["source"]  # the default
    counts = report["counts"]
    assert (counts["files_seen"], counts["featurized"], counts["rejected"]) == (7, 6, 1)
    assert counts["rejected_by_reason"]["corrupt"] == 1 and counts["csv_rows"] == 6

    batch = {r["path"]: r for r in spark.read.parquet(str(run.output / "features")).collect()}
    projected = {r["path"]: r for r in spark.read.parquet(str(output / "features")).collect()}
    assert len(projected) == 6
    for new_path, run_path in seen.items():
        again, before = projected[new_path], batch[run_path]
        assert again["label"] == before["label"]
        assert np.allclose(again["features"], before["features"], atol=1e-5)
        assert len(again["pca_features"]) == k
        assert np.allclose(again["pca_features"], before["pca_features"], atol=1e-4)

    # the unseen image is projected by the saved model as it is (a refit would differ):
    # Spark ML's own transform of the saved model is the reference
    model = PipelineModel.load(str(run.output / "pca_model"))
    fresh = projected[f"file:{unseen}"]
    scaler, pca = model.stages
    frame = spark.createDataFrame([(Vectors.dense(fresh["features"]),)], [scaler.getInputCol()])
    expected = model.transform(frame).first()[pca.getOutputCol()].toArray()
    assert np.allclose(fresh["pca_features"], expected, atol=1e-5)

    with open(output / "features_pca.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert len(table) == 7 and len(table[0]) == 2 + k
    assert "no refit" in out


def test_a_weights_mismatch_is_a_clear_error(capsys, tmp_path, run):
    source = tmp_path / "new" / "Kiwi"
    source.mkdir(parents=True)
    (source / "1.jpg").write_bytes(jpeg_bytes(noise_image(1)))
    output = tmp_path / "out2"
    code, _, err = transform(
        capsys,
        "--model",
        str(run.output),
        "--input",
        str(tmp_path / "new"),
        "--output",
        str(output),
        "--weights",
        "random:3",
    )
    line = one_error_line(err)
    assert code == 2 and "weights mismatch" in line and "random:3" in line
    assert run.report["weights"]["arrays_sha256"][:16] in line
    assert not output.exists()


def test_the_same_network_in_another_file_format_is_accepted(run, weights_files):
    keras3 = load_weights(WeightsSpec("file", location=str(weights_files["keras3"])))
    assert keras3.file_sha256 != run.report["weights"]["file_sha256"]
    check_same_weights(from_json(run.report), keras3)  # same arrays: no error
    other = dict(run.report, weights=dict(run.report["weights"], arrays_sha256="0" * 64))
    with pytest.raises(WeightsMismatchError, match="weights mismatch"):
        check_same_weights(from_json(other), keras3)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model", "{missing}", "--input", "{new}", "--output", "{out}"], ["not a finished run"]),
        (["--model", "{model}", "--input", "{new}"], ["--output"]),
        (["--model", "{model}", "--input", "{missing}", "--output", "{out}"], ["does not exist"]),
        (["--model", "{model}", "--input", "{new}", "--output", "{new}"], ["same place"]),
        (
            ["--model", "{model}", "--input", "{new}", "--output", "{model}/", "--overwrite"],
            ["--model", "same place"],
        ),
        (
            ["--model", "{model}", "--input", "{new}", "--output", "{model}/x", "--overwrite"],
            ["--model", "overlap"],
        ),
        (
            ["--model", "{model}", "--input", "{sub}", "--output", "{elsewhere}", "--overwrite"],
            ["not written by"],
        ),
        (
            ["--model", "{model}", "--input", "{new}", "--output", "{out}", "--weights", "x.onnx"],
            ["Keras HDF5"],
        ),
    ],
)
def test_bad_transform_input_is_one_line_exit_2(capsys, tmp_path, run, args, words):
    names = {
        "missing": tmp_path / "none",
        "new": tmp_path,
        "out": tmp_path / "o",
        "model": run.output,
        "elsewhere": tmp_path / "elsewhere",
        "sub": tmp_path / "sub",
    }
    (tmp_path / "sub").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "mine.txt").write_text("a user's")
    code, _, err = transform(capsys, *[arg.format(**names) for arg in args])
    line = one_error_line(err)
    assert code == 2 and all(word in line for word in words), line
    assert not (tmp_path / "o").exists()
    assert (tmp_path / "elsewhere" / "mine.txt").read_text() == "a user's"

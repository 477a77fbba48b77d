"""``predict``: an exported model on a folder of images, without Spark: one row per image,
a corrupt image's row carries its error, an ONNX model never imports TensorFlow."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from classifier_run import PROBABILITY_TOLERANCE
from image_files import jpeg_bytes, noise_image

from fruits_pipeline.chain.images import decode_image
from fruits_pipeline.classifier.runtime import open_model
from fruits_pipeline.cli import main
from fruits_pipeline.results import layout


@pytest.fixture(scope="module")
def export(exported):
    return exported


@pytest.fixture
def images(tmp_path, export):
    """A folder of the small run's test images (one level down), a corrupt JPEG, a text
    file with an image's name, and files predict must skip."""
    folder = tmp_path / "photos"
    (folder / "inner").mkdir(parents=True)
    for index, vector in enumerate(export.card["golden"]):
        shutil.copy(export.folder / vector["image"], folder / "inner" / f"{index}.jpg")
    good = jpeg_bytes(noise_image(1))
    (folder / "broken.jpg").write_bytes(good[: len(good) // 3])
    (folder / "notes.JPG").write_text("not an image")
    (folder / "readme.txt").write_text("skipped: not an image name")
    (folder / ".hidden.jpg").write_bytes(good)
    return folder


def predict(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_folder_of_images_with_a_corrupt_one(capsys, tmp_path, export, images):
    out_csv = tmp_path / "out" / "predictions.csv"
    code, out, err = predict(
        capsys, "--model", str(export.folder), "--input", str(images), "--output", str(out_csv)
    )
    assert code == 0, err
    rows = read_rows(out_csv)
    golden = export.card["golden"]
    assert [row["path"] for row in rows] == sorted(
        [str(images / "broken.jpg"), str(images / "notes.JPG")]
        + [str(images / "inner" / f"{i}.jpg") for i in range(len(golden))]
    )
    by_path = {row["path"]: row for row in rows}
    assert by_path[str(images / "broken.jpg")]["error"].startswith("corrupt:")
    assert by_path[str(images / "notes.JPG")]["error"].startswith("not_an_image:")
    assert by_path[str(images / "broken.jpg")]["label_1"] == ""
    for index, vector in enumerate(golden):
        row = by_path[str(images / "inner" / f"{index}.jpg")]
        expected = vector["expected_top5"][layout.ONNX_MODEL]
        assert row["error"] == ""
        for rank, entry in enumerate(expected, start=1):
            assert row[f"label_{rank}"] == entry["label"]
            found = float(row[f"probability_{rank}"])
            assert found == pytest.approx(entry["probability"], abs=1e-5)
    assert list(rows[0])[-1] == "error" and "label_5" in rows[0] and "label_6" not in rows[0]
    assert f"predicted {len(golden)} of {len(golden) + 2} images" in out
    assert "2 images could not be read" in out


def test_a_tflite_model_and_top_k(capsys, tmp_path, export, images):
    out_csv = tmp_path / "tflite.csv"
    model = export.folder / layout.TFLITE_FLOAT32_MODEL
    args = ["--model", str(model), "--input", str(images / "inner"), "--output", str(out_csv)]
    code, _, err = predict(capsys, *args, "--top", "2")
    assert code == 0, err
    rows = read_rows(out_csv)
    assert len(rows) == len(export.card["golden"]) and "label_3" not in rows[0]
    pixels = np.stack([decode_image(open(row["path"], "rb").read()) for row in rows])
    onnx = open_model((export.folder / layout.ONNX_MODEL).read_bytes(), "onnx")(pixels)
    labels = export.card["labels"]
    # each within its tolerance of the Spark classifier's, so within their sum of each other
    tolerance = PROBABILITY_TOLERANCE[layout.ONNX_MODEL] + PROBABILITY_TOLERANCE[model.name]
    for row, probabilities in zip(rows, onnx, strict=True):
        assert row["label_1"] == labels[int(probabilities.argmax())]
        assert float(row["probability_1"]) == pytest.approx(probabilities.max(), abs=tolerance)


def test_an_onnx_model_runs_without_tensorflow_or_spark(tmp_path, export, images):
    out_csv = tmp_path / "alone.csv"
    probe = (
        "import sys; from fruits_pipeline.cli import main; "
        f"code = main(['predict', '--model', {str(export.folder / layout.ONNX_MODEL)!r}, "
        f"'--input', {str(images)!r}, '--output', {str(out_csv)!r}, '--quiet']); "
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'pyspark') if m in sys.modules); "
        "print('LOADED', heavy); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOADED []" in done.stdout
    assert len(read_rows(out_csv)) == len(export.card["golden"]) + 2


@pytest.mark.parametrize(
    "model, source, output, words",
    [
        ("{missing}", "{images}", "{new}", ["does not exist"]),
        ("{folder}/model_card.json", "{images}", "{new}", ["not a .onnx or .tflite"]),
        ("{lonely}", "{images}", "{new}", ["no model_card.json"]),
        ("{folder}", "{missing}", "{new}", ["is not a folder or an image file"]),
        ("{folder}", "{empty}", "{new}", ["no images"]),
        ("{folder}", "{images}", "{existing}", ["already exists", "--overwrite"]),
    ],
)
def test_bad_predict_input_is_one_line_exit_2(
    capsys, tmp_path, export, images, model, source, output, words
):
    lonely = tmp_path / "lonely" / "model.onnx"
    lonely.parent.mkdir()
    shutil.copy(export.folder / layout.ONNX_MODEL, lonely)
    (tmp_path / "empty").mkdir()
    existing = tmp_path / "existing.csv"
    existing.write_text("mine")
    names = {
        "missing": tmp_path / "missing",
        "images": images,
        "new": tmp_path / "new.csv",
        "folder": export.folder,
        "lonely": lonely,
        "empty": tmp_path / "empty",
        "existing": existing,
    }
    args = ["--model", model, "--input", source, "--output", output]
    code, _, err = predict(capsys, *[arg.format(**names) for arg in args])
    lines = [line for line in err.splitlines() if line.startswith("fruits-pipeline:")]
    assert code == 2 and len(lines) == 1, err
    assert all(word in lines[0] for word in words), lines[0]
    assert not (tmp_path / "new.csv").exists() and existing.read_text() == "mine"


def test_a_card_that_is_not_one_is_refused(capsys, tmp_path, export, images):
    folder = tmp_path / "models"
    shutil.copytree(export.folder, folder)
    (folder / layout.MODEL_CARD).write_text(json.dumps({"labels": ["a"]}))
    code, _, err = predict(
        capsys, "--model", str(folder), "--input", str(images), "--output", str(tmp_path / "x.csv")
    )
    assert code == 2 and "is not a fruits-pipeline model card" in err, err

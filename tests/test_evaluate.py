"""The linear probe: metrics as scikit-learn computes them, splits from paths, and the
``evaluate`` command on a real run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from results_run import PER_SPLIT, small_run
from sklearn.metrics import accuracy_score, f1_score

from fruits_pipeline.classifier.probe import metrics, split_column
from fruits_pipeline.cli import main
from fruits_pipeline.results import layout


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory, weights_files):
    return small_run(tmp_path_factory, weights_files["legacy"])


def evaluate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["evaluate", *args, "--master", "local[2]"], default_master="local[2]")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(3)
    labels = ["apple", "banana", "kiwi", "lemon", "only predicted", "never predicted"]
    matrix = rng.integers(0, 9, size=(6, 6))
    matrix[4, :] = 0  # a label with no test image, but predicted
    matrix[:, 5] = 0  # a label never predicted
    matrix[5, 5] = 0
    truth = [i for i in range(6) for j in range(6) for _ in range(matrix[i, j])]
    guess = [j for i in range(6) for j in range(6) for _ in range(matrix[i, j])]
    measured = metrics(matrix, labels, worst=3)
    assert measured.accuracy == pytest.approx(accuracy_score(truth, guess))
    assert measured.macro_f1 == pytest.approx(f1_score(truth, guess, average="macro"))
    assert measured.test_images == len(truth)
    per_class = f1_score(truth, guess, average=None, labels=range(6))
    worst = measured.worst_classes
    assert [w.label for w in worst][0] == "never predicted"  # F1 0
    assert "only predicted" not in [w.label for w in worst]  # no test image
    assert [w.f1 for w in worst] == sorted(w.f1 for w in worst)
    for row in worst:
        assert row.f1 == pytest.approx(per_class[labels.index(row.label)], abs=1e-4)
        assert row.support == matrix[labels.index(row.label)].sum()


#: Image paths and the split ``split_column`` must find for them (Training / Test).
SPLITS = [
    ("file:/data/fruits/Training/Apple Braeburn/r_1_100.jpg", "train"),
    ("s3://bucket/fruits/Test/Kiwi/2_100.jpg", "test"),
    ("file:/Test/again/Training/Kiwi/1.jpg", "train"),  # the nearest split folder wins
    ("file:/Training/x/Test/Kiwi/1.jpg", "test"),
    ("file:/data/Training/Test/1.jpg", "train"),  # a label named Test is a label
    ("file:/data/Kiwi/1.jpg", None),
    ("file:/1.jpg", None),
]


def test_split_from_the_folders_above_the_label(spark):
    frame = spark.createDataFrame([(path,) for path, _ in SPLITS], "path string")
    found = frame.select("path", split_column("path", "Training", "Test").alias("s")).collect()
    assert {row["path"]: row["s"] for row in found} == dict(SPLITS)


def test_evaluate_writes_accuracy_into_the_report(capsys, run):
    code, out, err = evaluate(capsys, str(run.output))
    assert code == 0, err[-3000:]
    report = json.loads((run.output / "report.json").read_text(encoding="utf-8"))
    evaluation = report["evaluation"]
    classes = len(run.report["counts"]["per_label"])
    assert evaluation["train"]["images"] == classes * PER_SPLIT["Training"]
    assert evaluation["test"]["images"] == classes * PER_SPLIT["Test"]
    assert evaluation["train"]["labels"] == evaluation["test"]["labels"] == classes
    assert evaluation["test"]["unseen_labels"] == []
    # better than chance (1/classes) by a margin: the probe learnt something from the features
    assert 1.5 / classes < evaluation["accuracy"] <= 1.0
    assert 0.0 < evaluation["macro_f1"] <= 1.0
    assert len(evaluation["worst_classes"]) == min(10, classes)
    assert evaluation["meaningful"] is True  # a weights file: the report cannot tell it is seeded
    assert evaluation["weights_source"] == str(run.weights)
    png = run.output / "plots" / layout.CONFUSION_MATRIX_PNG
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert report["outputs"]["plots"][layout.CONFUSION_MATRIX_PNG] == str(png)
    page = (run.output / "report.html").read_text(encoding="utf-8")
    assert 'id="evaluation"' in page and f"{evaluation['accuracy']:.1%}" in page
    assert f"accuracy     {evaluation['accuracy']:.1%}" in out
    print(f"\nprobe on {classes} classes: {evaluation['accuracy']:.3f} ({evaluation['seconds']} s)")


def test_random_weights_make_the_accuracy_not_meaningful(capsys, tmp_path, run):
    # the run's output, with the weights section a `--weights random:0` run writes
    copy = tmp_path / "random-run"
    shutil.copytree(run.output, copy)
    report = json.loads((copy / "report.json").read_text(encoding="utf-8"))
    report.pop("evaluation", None)
    report["weights"].update(
        {"source": "random:0", "kind": "random", "meaningful": False, "file_sha256": None}
    )
    (copy / "report.json").write_text(json.dumps(report), encoding="utf-8")
    code, out, err = evaluate(capsys, str(copy), "--reg-param", "0.1", "--max-iter", "20")
    assert code == 0, err[-3000:]
    evaluation = json.loads((copy / "report.json").read_text(encoding="utf-8"))["evaluation"]
    assert evaluation["meaningful"] is False and evaluation["note"].startswith("NOT MEANINGFUL")
    assert evaluation["model"]["reg_param"] == 0.1 and evaluation["model"]["max_iter"] == 20
    assert "NOT MEANINGFUL" in out
    assert evaluation["note"] in (copy / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "args, words",
    [
        (["{missing}"], ["not a finished run", "report.json"]),
        (["{output}", "--train-split", "Train"], ["no images under a 'Train' folder"]),
        (["{output}", "--reg-param", "-1"], ["reg-param", "at least 0"]),
        (["{output}", "--max-iter", "0"], ["max-iter", "at least 1"]),
    ],
)
def test_bad_evaluate_input_is_one_line_exit_2(capsys, tmp_path, run, args, words):
    names = {"missing": tmp_path / "missing", "output": run.output}
    code, _, err = evaluate(capsys, *[arg.format(**names) for arg in args])
    lines = [line for line in err.splitlines() if line.startswith("fruits-pipeline:")]
    assert code == 2 and len(lines) == 1, err
    assert all(word in lines[0] for word in words), lines[0]

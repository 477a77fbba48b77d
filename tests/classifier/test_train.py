"""``train``: metrics as scikit-learn computes them, splits from paths, a deterministic
validation part, a label only in the test split, the command on a real run, and what a
later incremental run does with the classifier."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from cli_runs import run_ok
from image_files import jpeg_bytes, noise_image
from pyspark.sql import functions as F
from results_run import PER_SPLIT
from sklearn.metrics import accuracy_score, f1_score

from fruits_pipeline.classifier.metrics import metrics
from fruits_pipeline.classifier.saved import load_classifier, with_vector
from fruits_pipeline.classifier.splits import split_column, validation_column
from fruits_pipeline.classifier.training import TrainConfig, train_classifier
from fruits_pipeline.cli import main
from fruits_pipeline.defaults import DEFAULT_REG_PARAMS
from fruits_pipeline.results import layout


@pytest.fixture(scope="module")
def run(trained_run):
    return trained_run


def train(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["train", *args, "--master", "local[2]"], default_master="local[2]")
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


def test_the_validation_part_is_one_image_in_five_of_each_label_always_the_same(spark):
    counts = {"Kiwi": 23, "Lemon": 10, "Plum": 4}
    rows = [
        (f"file:/t/Training/{label}/{i}.jpg", label)
        for label, n in counts.items()
        for i in range(n)
    ]
    picked = []
    for seed in (1, 2):  # the same images whatever the order and partitioning of the rows
        frame = spark.createDataFrame(rows, "path string, label string").orderBy(F.rand(seed))
        marked = frame.withColumn("validation", validation_column("path", "label"))
        chosen = marked.where("validation").collect()
        picked.append(sorted(row["path"] for row in chosen))
    assert picked[0] == picked[1]
    per_label = {label: sum(f"/{label}/" in path for path in picked[0]) for label in counts}
    assert per_label == {"Kiwi": 4, "Lemon": 2, "Plum": 0}


def clustered_features(spark, labels: dict[str, dict[str, int]], seed: int = 0):
    """A features table whose pca_features cluster by label: ``labels`` maps a label to
    its number of images per split folder."""
    rng = np.random.default_rng(seed)
    centres = {label: rng.normal(size=6) * 4 for label in labels}
    rows = [
        (f"file:/f/{split}/{label}/{i}.jpg", label, (centres[label] + rng.normal(size=6)).tolist())
        for label, splits in labels.items()
        for split, n in splits.items()
        for i in range(n)
    ]
    return spark.createDataFrame(rows, "path string, label string, pca_features array<float>")


def test_a_label_only_in_the_test_split_is_reported_not_a_crash(spark):
    features = clustered_features(
        spark,
        {
            "Kiwi": {"Training": 10, "Test": 4},
            "Lemon": {"Training": 10, "Test": 4},
            "Plum": {"Training": 10, "Test": 4},
            "Zucchini": {"Test": 3},  # never seen in training
        },
    )
    trained = train_classifier(features, TrainConfig(output="memory", reg_params=(0.0, 0.1)))
    assert trained.labels == ["Kiwi", "Lemon", "Plum"]  # what the classifier predicts
    assert trained.unseen_labels == ["Zucchini"]
    assert trained.matrix_labels == ["Kiwi", "Lemon", "Plum", "Zucchini"]
    assert trained.matrix.sum() == 15 and trained.matrix[3].sum() == 3
    assert trained.matrix[:, 3].sum() == 0  # never predicted
    assert trained.regularisation.validation_images == 6  # 2 of each 10 training images
    assert [t.reg_param for t in trained.regularisation.tried] == [0.0, 0.1]
    scores = metrics(trained.matrix, trained.matrix_labels)
    assert scores.accuracy == pytest.approx(12 / 15)  # the clusters are apart: all but Zucchini


def test_train_saves_the_classifier_and_reports_it(spark, run):
    report = json.loads((run.output / "report.json").read_text(encoding="utf-8"))
    evaluation = report["evaluation"]
    classes = len(run.report["counts"]["per_label"])
    assert evaluation["train"]["images"] == classes * PER_SPLIT["Training"]
    assert evaluation["test"]["images"] == classes * PER_SPLIT["Test"]
    assert evaluation["train"]["labels"] == evaluation["test"]["labels"] == classes
    assert evaluation["test"]["unseen_labels"] == []
    # better than chance (1/classes) by a margin: the classifier learnt from the features
    assert 1.5 / classes < evaluation["accuracy"] <= 1.0
    assert 0.0 < evaluation["macro_f1"] <= 1.0
    assert len(evaluation["worst_classes"]) == min(10, classes)
    assert evaluation["meaningful"] is True  # a weights file: the report cannot tell it is seeded
    assert evaluation["weights_source"] == str(run.weights)
    assert evaluation["features_run_id"] == report["run_id"]
    model = evaluation["model"]
    choice = model["regularisation"]
    assert [t["reg_param"] for t in choice["tried"]] == list(DEFAULT_REG_PARAMS)
    assert choice["chosen"] == model["reg_param"] in DEFAULT_REG_PARAMS
    best = max(t["accuracy"] for t in choice["tried"])
    winner = next(t for t in choice["tried"] if t["reg_param"] == choice["chosen"])
    assert winner["accuracy"] == best
    assert winner["log_loss"] == min(
        t["log_loss"] for t in choice["tried"] if t["accuracy"] == best
    )
    assert choice["validation_images"] == classes * (PER_SPLIT["Training"] // 5)
    assert model["location"] == str(run.output / layout.CLASSIFIER)
    assert report["outputs"]["classifier"] == model["location"]
    png = run.output / "plots" / layout.CONFUSION_MATRIX_PNG
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert report["outputs"]["plots"][layout.CONFUSION_MATRIX_PNG] == str(png)
    page = (run.output / "report.html").read_text(encoding="utf-8")
    assert 'id="evaluation"' in page and f"{evaluation['accuracy']:.1%}" in page
    assert f"{choice['chosen']:g} (chosen)" in page

    # Spark ML's standard load, and the labels in the order it predicts
    classifier = load_classifier(str(run.output))
    assert list(classifier.stages[-1].getLabels()) == model["labels"] == sorted(model["labels"])
    features = spark.read.parquet(str(run.output / "features"))
    predicted = classifier.transform(with_vector(features)).select("label", "predicted_label")
    rows = predicted.collect()
    train_accuracy = np.mean([row["label"] == row["predicted_label"] for row in rows])
    assert train_accuracy > 1.5 / classes
    print(f"\nclassifier on {classes} classes: {evaluation['accuracy']:.3f}")


def test_the_summary_says_what_was_chosen(capsys, tmp_path, run):
    copy = tmp_path / "again"
    shutil.copytree(run.output, copy)
    code, out, err = train(capsys, str(copy), "--reg-params", "0.5,0.01", "--max-iter", "20")
    assert code == 0, err[-3000:]
    evaluation = json.loads((copy / "report.json").read_text(encoding="utf-8"))["evaluation"]
    assert [t["reg_param"] for t in evaluation["model"]["regularisation"]["tried"]] == [0.5, 0.01]
    assert f"accuracy     {evaluation['accuracy']:.1%}" in out
    assert f"regularised  {evaluation['model']['reg_param']:g}, chosen on" in out
    assert f"saved as     {copy / 'classifier'}" in out


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
    code, out, err = train(capsys, str(copy), "--reg-params", "0.1", "--max-iter", "20")
    assert code == 0, err[-3000:]
    evaluation = json.loads((copy / "report.json").read_text(encoding="utf-8"))["evaluation"]
    assert evaluation["meaningful"] is False and evaluation["note"].startswith("NOT MEANINGFUL")
    assert evaluation["model"]["reg_param"] == 0.1 and evaluation["model"]["max_iter"] == 20
    assert evaluation["model"]["regularisation"]["tried"] == []  # one value: nothing to choose
    assert "NOT MEANINGFUL" in out
    assert evaluation["note"] in (copy / "report.html").read_text(encoding="utf-8")


@pytest.fixture
def featureless(tmp_path, run):
    """A folder with a run's report.json but no features/."""
    folder = tmp_path / "no-features"
    folder.mkdir()
    shutil.copy(run.output / "report.json", folder / "report.json")
    return folder


@pytest.mark.parametrize(
    "args, words",
    [
        (["{missing}"], ["not a finished run", "report.json"]),
        (["{featureless}"], ["has no features"]),
        (["{output}", "--train-split", "Train"], ["no images under a 'Train' folder"]),
        (["{output}", "--test-split", "Tests"], ["no images under a 'Tests' folder"]),
        (["{output}", "--reg-params", "0.1,-1"], ["reg-params", "at least 0"]),
        (["{output}", "--reg-params", "0.1,x"], ["reg-params", "not a number"]),
        (["{output}", "--max-iter", "0"], ["max-iter", "at least 1"]),
    ],
)
def test_bad_train_input_is_one_line_exit_2(capsys, tmp_path, run, featureless, args, words):
    names = {"missing": tmp_path / "missing", "output": run.output, "featureless": featureless}
    before = (run.output / "report.json").read_bytes()
    code, _, err = train(capsys, *[arg.format(**names) for arg in args])
    lines = [line for line in err.splitlines() if line.startswith("fruits-pipeline:")]
    assert code == 2 and len(lines) == 1, err
    assert all(word in lines[0] for word in words), lines[0]
    assert (run.output / "report.json").read_bytes() == before


def test_an_incremental_run_removes_the_classifier_and_says_so(capsys, tmp_path, run):
    """A local incremental run is rebuilt in a staging folder: check what survives of the
    classifier trained on the previous features (nothing), and that the run says so."""
    output = tmp_path / "output"
    shutil.copytree(run.output, output)
    images = tmp_path / "images"
    shutil.copytree(run.input, images, symlinks=True)
    added = images / "Training" / "Kiwi" / "added.jpg"
    added.parent.mkdir(parents=True, exist_ok=True)
    added.write_bytes(jpeg_bytes(noise_image(5)))
    report, out = run_ok(
        capsys,
        "--input",
        str(images),
        "--output",
        str(output),
        "--weights",
        str(run.weights),
        "--incremental",
        "--quiet",
    )
    assert report["incremental"]["previous_run"] and report["incremental"]["classifier_removed"]
    assert "evaluation" not in report and "classifier" not in report["outputs"]
    for name in layout.TRAINED_ON_FEATURES:
        assert not (output / name).exists(), name
    assert "the classifier was trained on the previous features: removed" in out
    assert f"fruits-pipeline train {output}" in out
    # and export says the run needs training, in one line
    code = main(["export", str(output), "--to", str(tmp_path / "models")])
    err = capsys.readouterr().err
    assert code == 2 and "has no classifier: run `fruits-pipeline train" in err, err

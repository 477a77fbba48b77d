"""The int8 engine: calibrated on the run's own images, deterministically; its network kept
in the run's output and run again by ``transform`` and ``--incremental`` (never calibrated
again on other images); its rows never mixed with another network's."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from cli_runs import run_ok
from image_files import jpeg_bytes, noise_image

from fruits_pipeline.chain.calibration import row_cosines, sample_paths
from fruits_pipeline.chain.images import decode_image, preprocess
from fruits_pipeline.cli import main
from fruits_pipeline.engines.base import CalibrationSample
from fruits_pipeline.engines.mobilenet_onnx import with_pixels_and_head
from fruits_pipeline.engines.onnxruntime_engine import onnx_session_extractor
from fruits_pipeline.engines.onnxruntime_int8_engine import (
    CalibrationError,
    OnnxRuntimeInt8Engine,
    calibration_digest,
)
from fruits_pipeline.results import layout
from fruits_pipeline.sample_images import write_sample_tree

pytestmark = pytest.mark.spark

ENGINE = OnnxRuntimeInt8Engine.name


@dataclass
class Int8Run:
    input: Path
    output: Path
    report: dict


@pytest.fixture(scope="module")
def int8_run(spark, tmp_path_factory) -> Int8Run:
    root = tmp_path_factory.mktemp("int8")
    source, output = root / "images", root / "out"
    write_sample_tree(str(source), per_class=1, seed=8)
    code = main(
        ["run", "--input", str(source), "--output", str(output), "--weights", "random:0"]
        + ["--engine", ENGINE],
        default_master="local[2,2]",
    )
    assert code == 0
    return Int8Run(source, output, json.loads((output / layout.REPORT_JSON).read_text()))


def test_the_sample_is_the_first_paths_by_their_sha256(spark):
    paths = [f"file:/images/{label}/{index}.jpg" for label in "abc" for index in range(5)]
    frame = spark.createDataFrame([(path,) for path in reversed(paths)], ["path"])
    expected = sorted(paths, key=lambda path: hashlib.sha256(path.encode()).hexdigest())[:4]
    assert sample_paths(frame, 4) == expected
    assert sample_paths(frame.repartition(3), 4) == expected  # wherever Spark reads them


@pytest.mark.networks_built_here
def test_a_calibration_is_deterministic_and_named_by_its_images():
    from fruits_pipeline.chain.weights import load_weights, parse_weights_spec

    weights = load_weights(parse_weights_spec("random:0"))
    batch = preprocess(np.stack([decode_image(jpeg_bytes(noise_image(seed))) for seed in range(4)]))
    sample = CalibrationSample(batch, tuple(f"file:/x/{i}.jpg" for i in range(4)))
    engine = OnnxRuntimeInt8Engine()
    first, again = engine.prepare(weights, sample), engine.prepare(weights, sample)
    assert first.sha256 == again.sha256 and first.payload == again.payload
    assert first.precision == "int8" and first.calibration == calibration_digest(sample)
    assert first.stored == first.payload
    other = CalibrationSample(batch, tuple(f"file:/y/{i}.jpg" for i in range(4)))
    assert calibration_digest(other) != first.calibration
    restored = engine.restore(first.stored, first.calibration)
    assert (restored.sha256, restored.calibration) == (first.sha256, first.calibration)
    with pytest.raises(CalibrationError, match="needs images of the run"):
        engine.prepare(weights, None)

    # export: the kept network itself, with the pixels' scaling and the classifier around it
    rng = np.random.default_rng(0)
    head = (rng.normal(size=(1280, 3)).astype(np.float32), np.float32([0.1, -0.2, 0.3]))
    model = with_pixels_and_head(first.stored, head).SerializeToString()
    pixels = np.stack([decode_image(jpeg_bytes(noise_image(seed))) for seed in (7, 8)])
    probabilities = onnxruntime.InferenceSession(model).run(None, {"input": pixels})[0]
    logits = onnx_session_extractor(first.stored, 1)(preprocess(pixels)) @ head[0] + head[1]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(probabilities, expected, atol=1e-5)


def test_an_int8_run_reports_its_calibration_and_keeps_its_network(spark, int8_run):
    report = int8_run.report
    calibration, provenance = report["calibration"], report["provenance"]
    assert provenance["engine"] == ENGINE and provenance["precision"] == "int8"
    assert provenance["calibration"] == calibration["digest"]
    assert calibration["images"] == 6  # every image of this small run
    paths = sorted(
        f"file:{path}" for path in int8_run.input.rglob("*.jpg")
    )  # the digest names the images that calibrated
    assert calibration["paths_sha256"] == hashlib.sha256("\n".join(paths).encode()).hexdigest()
    assert calibration["settings"]["per_channel"] == "True"
    fidelity = calibration["fidelity"]
    assert fidelity["images"] == 6 and not fidelity["held_out"]
    assert 0.5 < fidelity["cosine_min"] <= fidelity["cosine_median"] <= 1.0
    seconds = list(report["seconds"])
    assert seconds.index("model") < seconds.index("calibrate") < seconds.index("extract")

    kept = (int8_run.output / layout.NETWORK).read_bytes()
    assert hashlib.sha256(kept).hexdigest() == provenance["network_sha256"]
    assert report["outputs"]["network"].endswith(layout.NETWORK)
    # the kept network is the one that computed the run's features
    rows = spark.read.parquet(str(int8_run.output / "features")).collect()
    batch = preprocess(np.stack([decode_image(Path(r["path"][5:]).read_bytes()) for r in rows]))
    ours = onnx_session_extractor(kept, 1)(batch)
    assert np.all(row_cosines(ours, np.array([r["features"] for r in rows])) > 0.9999)
    page = (int8_run.output / layout.REPORT_HTML).read_text()
    assert 'id="calibration"' in page and calibration["paths_sha256"] in page


def test_transform_runs_the_kept_network_not_a_new_calibration(capsys, int8_run, tmp_path):
    source = tmp_path / "new"
    write_sample_tree(str(source), per_class=1, seed=21)  # other images: another sample
    out2 = tmp_path / "out2"
    code = main(
        ["transform", "--model", str(int8_run.output), "--input", str(source)]
        + ["--output", str(out2), "--weights", "random:0"],
        default_master="local[2,2]",
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    report = json.loads((out2 / layout.REPORT_JSON).read_text())
    assert report["settings"]["engine"] == ENGINE  # the model's run's engine
    assert report["provenance"] == int8_run.report["provenance"]
    assert report["calibration"]["restored_from"] == str(int8_run.output)
    assert report["calibration"]["paths_sha256"] == int8_run.report["calibration"]["paths_sha256"]
    assert "calibrate" not in report["seconds"]

    code = main(
        ["transform", "--model", str(int8_run.output), "--input", str(source)]
        + ["--output", str(tmp_path / "fp32"), "--weights", "random:0", "--engine", "onnxruntime"],
        default_master="local[2,2]",
    )
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("fruits-pipeline:")]
    assert len(lines) == 1 and "use --engine onnxruntime-int8" in lines[0], err
    assert not (tmp_path / "fp32").exists()


def test_incremental_int8_keeps_the_network_and_reuses_the_unchanged_rows(
    capsys, int8_run, tmp_path
):
    source, output = tmp_path / "images", tmp_path / "out"
    write_sample_tree(str(source), per_class=1, seed=8)
    options = ["--input", str(source), "--output", str(output), "--weights", "random:0"]
    first, _ = run_ok(capsys, *options, "--engine", ENGINE)
    kept = (output / layout.NETWORK).read_bytes()
    # a new image: a calibration on this run's images would take it into its sample
    (source / "Kiwi" / "new_1.jpg").write_bytes(jpeg_bytes(noise_image(40)))
    report, _ = run_ok(capsys, *options, "--engine", ENGINE, "--incremental")
    assert report["incremental"]["reused"] == 6 and report["incremental"]["new"] == 1
    assert report["cnn"]["images_inferred"] == 1
    assert report["provenance"] == first["provenance"]
    assert report["calibration"]["restored_from"] == str(output)
    assert (output / layout.NETWORK).read_bytes() == kept


def test_incremental_with_the_float32_engine_featurizes_everything_and_says_why(
    capsys, int8_run, tmp_path
):
    output = tmp_path / "out"
    shutil.copytree(int8_run.output, output)
    report, printed = run_ok(
        capsys,
        *["--input", str(int8_run.input), "--output", str(output), "--weights", "random:0"],
        *["--engine", "onnxruntime", "--incremental"],
    )
    assert report["incremental"]["previous_run"] is False
    assert report["incremental"]["note"] == (
        "the run at OUTPUT was made with engine onnxruntime-int8, not onnxruntime; "
        "another network from the same weights; precision int8, not float32; "
        "another calibration"
    )
    assert report["cnn"]["images_inferred"] == 6
    assert report["provenance"]["precision"] == "float32"
    assert "calibration" not in report and not (output / layout.NETWORK).exists()


def test_an_int8_run_exports_the_network_it_kept_as_onnx_only(capsys, tmp_path, weights_files):
    import onnx
    from results_run import symlink_tree

    source, output, models = tmp_path / "images", tmp_path / "out", tmp_path / "models"
    symlink_tree(source)
    arguments = ["--weights", str(weights_files["legacy"]), "--engine", ENGINE, "--quiet"]
    code = main(
        ["run", "--input", str(source), "--output", str(output), *arguments],
        default_master="local[2,2]",
    )
    assert code == 0
    # one regularisation: what is exported is under test here, not how it was chosen
    train = ["train", str(output), "--max-iter", "20", "--reg-params", "0.01", "--quiet"]
    code = main(train, default_master="local[2,2]")
    assert code == 0
    capsys.readouterr()
    code = main(
        ["export", str(output), "--to", str(models), "--golden-images", "2"]
        + ["--latency-runs", "2"],
        default_master="local[2,2]",
    )
    printed = capsys.readouterr().out
    assert code == 0
    card = json.loads((models / layout.MODEL_CARD).read_text())
    assert [model["file"] for model in card["models"]] == [layout.ONNX_MODEL]
    assert card["network"]["precision"] == "int8"
    assert sorted(path.name for path in models.iterdir() if path.is_file()) == sorted(
        [layout.ONNX_MODEL, layout.MODEL_CARD, layout.OWNER_MARKER]
    )
    assert sum("TFLite models not written" in line for line in printed.splitlines()) == 1
    # the exported classifier holds the network the run kept, every tensor as it was
    kept = onnx.load_from_string((output / layout.NETWORK).read_bytes())
    classifier = onnx.load_from_string((models / layout.ONNX_MODEL).read_bytes())
    exported = {tensor.name: tensor.raw_data for tensor in classifier.graph.initializer}
    assert all(exported[tensor.name] == tensor.raw_data for tensor in kept.graph.initializer)

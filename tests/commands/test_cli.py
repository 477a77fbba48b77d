"""The command line: every bad input is one readable line, exit 2, and nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from image_files import jpeg_bytes, noise_image

from fruits_pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["run", *args], default_master="local[2]")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(code: int, err: str, output: Path, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("fruits-pipeline:")]
    assert code == 2
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]


def image_folder(root: Path, count: int) -> Path:
    for index in range(count):
        folder = root / "Kiwi"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index}.jpg").write_bytes(jpeg_bytes(noise_image(index)))
    return root


@pytest.mark.parametrize(
    "args, words",
    [
        (["--variance-threshold", "0"], ["variance-threshold", "(0, 1]"]),
        (["--variance-threshold", "1.5"], ["variance-threshold", "(0, 1]"]),
        (["--variance-threshold", "most"], ["not a number"]),
        (["--batch-size", "0"], ["batch-size", "at least 1"]),
        (["--weights", "random:x"], ["seed"]),
        (["--weights", "/nowhere/weights.h5"], ["does not exist"]),
        (["--weights", "weights.onnx"], ["Keras HDF5"]),
        (["--no-such-option"], ["unrecognized arguments"]),
    ],
)
def test_bad_options_before_spark(capsys, tmp_path, args, words):
    source = image_folder(tmp_path / "in", 2)
    output = tmp_path / "out"
    code, _, err = run_cli(capsys, "--input", str(source), "--output", str(output), *args)
    assert_usage_error(code, err, output, *words)


def test_missing_required_option(capsys):
    code = main(["run", "--input", "x"])
    assert code == 2
    assert "--output" in capsys.readouterr().err


@pytest.mark.spark
@pytest.mark.parametrize(
    "make_input, words",
    [
        (lambda root: root / "missing", ["does not exist"]),
        (lambda root: (root / "empty").mkdir() or root / "empty", ["no images"]),
        (lambda root: _text_only(root), ["no images"]),
        (lambda root: image_folder(root / "one", 1), ["only 1 image"]),
    ],
    ids=["missing", "empty", "no-images", "one-image"],
)
def test_bad_inputs(spark, capsys, tmp_path, make_input, words):
    output = tmp_path / "out"
    source = make_input(tmp_path)
    code, _, err = run_cli(
        capsys, "--input", str(source), "--output", str(output), "--weights", "random:0"
    )
    assert_usage_error(code, err, output, *words)


def _text_only(root: Path) -> Path:
    folder = root / "texts" / "Kiwi"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("no images here")
    return root / "texts"


@pytest.mark.spark
def test_existing_output_needs_overwrite(spark, capsys, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("precious")
    source = image_folder(tmp_path / "in", 2)
    code, _, err = run_cli(
        capsys, "--input", str(source), "--output", str(output), "--weights", "random:0"
    )
    assert code == 2 and "--overwrite" in err
    assert (output / "keep.txt").read_text() == "precious"


@pytest.mark.spark
def test_wrong_architecture_weights(spark, capsys, tmp_path, wrong_weights_file):
    output = tmp_path / "out"
    source = image_folder(tmp_path / "in", 2)
    code, _, err = run_cli(
        capsys,
        "--input",
        str(source),
        "--output",
        str(output),
        "--weights",
        str(wrong_weights_file),
    )
    assert_usage_error(code, err, output, "do not fit MobileNetV2")


@pytest.mark.spark
def test_too_few_decodable_images(spark, capsys, tmp_path):
    source = image_folder(tmp_path / "in", 1)
    (source / "Kiwi" / "broken.jpg").write_bytes(b"not a jpeg")
    output = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "--input", str(source), "--output", str(output), "--weights", "random:0"
    )
    assert_usage_error(code, err, output, "only 1 of 2 images could be decoded")


def test_console_script_usage_error_is_one_line(tmp_path):
    script = Path(sys.executable).parent / "fruits-pipeline"
    result = subprocess.run(
        [
            str(script),
            "run",
            "--input",
            str(tmp_path),
            "--output",
            str(tmp_path / "o"),
            "--variance-threshold",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("fruits-pipeline: error:")


def test_console_script_help_lists_the_options():
    script = Path(sys.executable).parent / "fruits-pipeline"
    result = subprocess.run(
        [str(script), "run", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for option in (
        "--input",
        "--output",
        "--weights",
        "--variance-threshold",
        "--batch-size",
        "--limit",
        "--overwrite",
        "--master",
    ):
        assert option in result.stdout


def test_progress_line():
    from fruits_pipeline.progress import describe_progress

    assert describe_progress([]) is None
    assert describe_progress([(3, 10, 2, 258), (4, 0, 0, 8)]) == "10/266 tasks done, 2 running"

"""Benchmark of the classification engine: accuracy, agreement, sizes and latency.

``python -m fruits_pipeline.bench.classifier`` (``make bench-classifier``) takes a finished
run with real weights (``--run``; by default it makes one on the shared Fruits-360 sample
with the shared ImageNet weights), then, each step timed:

1. ``fruits-pipeline train`` on it: the test accuracy, the regularisations tried and chosen;
2. ``fruits-pipeline export``: each on-device model's size and one-core latency;
3. every test image decoded as the job does and run through each exported model, against
   the Spark classifier's probabilities on the same images (from ``pca_features``): top-1
   agreement, the largest probability difference, and each model's own accuracy; the int8
   model's accuracy against the float one's.

It prints a table and writes the figures as JSON.  Nothing is asserted: the targets (test
accuracy >= 98.0%, float agreement >= 99.9% and within 1e-4, int8 within 0.5 points of
float) are printed next to the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from fruits_pipeline.bench.benchmark import DEFAULT_INPUT
from fruits_pipeline.cli import main as cli
from fruits_pipeline.results import layout

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = DEFAULT_INPUT.parent / "mobilenet_v2_imagenet/mobilenet_v2_imagenet.weights.h5"

#: The targets of the classification engine (printed, never asserted).
TARGET_ACCURACY = 0.980
TARGET_AGREEMENT = 0.999
TARGET_PROBABILITY = 1e-4
TARGET_INT8_POINTS = 0.5


def timed_command(args: list[str]) -> float:
    """Run one ``fruits-pipeline`` command; return its seconds, or raise when it fails."""
    started = time.perf_counter()
    code = cli(args)
    if code != 0:
        raise RuntimeError(f"fruits-pipeline {args[0]} exited with {code}")
    return round(time.perf_counter() - started, 1)


def spark_probabilities(run: Path, test_split: str, train_split: str):
    """Return the test images' paths, true labels and the Spark classifier's probabilities
    (from the stored ``pca_features``), ordered by path."""
    from pyspark.ml.functions import vector_to_array

    from fruits_pipeline.classifier.saved import load_classifier, with_vector
    from fruits_pipeline.classifier.splits import split_column
    from fruits_pipeline.session import build_spark

    spark = build_spark("local[*]", app_name="fruits-pipeline-bench-classifier")
    features = spark.read.parquet(str(run / "features"))
    test = features.where(split_column("path", train_split, test_split) == "test")
    rows = (
        load_classifier(str(run))
        .transform(with_vector(test))
        .select("path", "label", vector_to_array("probability").alias("p"))
        .orderBy("path")
        .collect()
    )
    return [r["path"] for r in rows], [r["label"] for r in rows], np.array([r["p"] for r in rows])


def model_probabilities(data: bytes, kind: str, pixels: np.ndarray, batch: int = 32):
    """Return a model's probabilities for every image, in batches, with every core."""
    from fruits_pipeline.classifier.runtime import open_model

    predict = open_model(data, kind, threads=os.cpu_count() or 1)
    return np.concatenate([predict(pixels[i : i + batch]) for i in range(0, len(pixels), batch)])


def compare(card: dict, folder: Path, run: Path) -> dict:
    """Return, for each exported model, its agreement with the Spark classifier and its
    accuracy on the run's test images."""
    from fruits_pipeline.chain.images import decode_image
    from fruits_pipeline.results import storage

    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    evaluation = report["evaluation"]
    paths, truth, expected = spark_probabilities(
        run, evaluation["test"]["split"], evaluation["train"]["split"]
    )
    started = time.perf_counter()
    pixels = np.stack([decode_image(storage.read_bytes(path)) for path in paths])
    log.info("%d test images decoded in %.1f s", len(paths), time.perf_counter() - started)
    labels = card["labels"]
    truth_index = np.array([labels.index(label) if label in labels else -1 for label in truth])
    spark_top = expected.argmax(axis=1)
    models = {}
    for model in card["models"]:
        started = time.perf_counter()
        found = model_probabilities((folder / model["file"]).read_bytes(), model["format"], pixels)
        top = found.argmax(axis=1)
        models[model["file"]] = {
            "precision": model["precision"],
            "bytes": model["bytes"],
            "latency_ms_per_image": model["latency_ms_per_image"],
            "images": len(paths),
            "top1_agreement_with_spark": round(float((top == spark_top).mean()), 6),
            "max_abs_probability_difference": float(np.abs(found - expected).max()),
            "accuracy": round(float((top == truth_index).mean()), 6),
            "seconds_all_images": round(time.perf_counter() - started, 1),
        }
        log.info("%s: %s", model["file"], models[model["file"]])
    return {
        "spark_classifier_accuracy": round(float((spark_top == truth_index).mean()), 6),
        "models": models,
    }


def format_table(result: dict) -> str:
    """Return the figures as the table the benchmark prints."""
    training = result["train"]
    lines = [
        "",
        f"classifier on {result['run']}",
        f"  test accuracy (Spark)   {training['accuracy']:.2%} (target >= {TARGET_ACCURACY:.1%}),"
        f" macro-F1 {training['macro_f1']:.4f}, {training['test_images']} test images",
        f"  regularisation          {training['reg_param']:g} chosen from "
        + ", ".join(f"{t['reg_param']:g} ({t['accuracy']:.2%})" for t in training["tried"]),
        f"  seconds                 run {result['seconds'].get('run', 0)}, train "
        f"{result['seconds']['train']}, export {result['seconds']['export']}",
        "",
        f"  {'model':<34} {'MB':>6} {'ms/image':>9} {'top-1 = Spark':>14} {'max |dp|':>9}"
        f" {'accuracy':>9}",
    ]
    for name, model in result["compare"]["models"].items():
        lines.append(
            f"  {name:<34} {model['bytes'] / 1e6:6.2f} {model['latency_ms_per_image']:9.1f}"
            f" {model['top1_agreement_with_spark']:14.2%}"
            f" {model['max_abs_probability_difference']:9.1e} {model['accuracy']:9.2%}"
        )
    lines += [
        "",
        f"  targets: float models top-1 = Spark on >= {TARGET_AGREEMENT:.1%}, |dp| <= "
        f"{TARGET_PROBABILITY:g}; int8 accuracy within {TARGET_INT8_POINTS} points of float: "
        f"{result['int8_points_below_float']:+.2f} points",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        type=Path,
        default=Path("bench-results/classifier-run"),
        help="a finished run with real weights (made there when absent; "
        "default bench-results/classifier-run)",
    )
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="images of a new run")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="weights of a new run")
    parser.add_argument(
        "--to",
        type=Path,
        default=Path("bench-results/classifier-models"),
        help="where export writes (replaced; default bench-results/classifier-models)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results/classifier.json"),
        help="where to write the figures (bench-results/classifier.json)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    seconds = {}
    if not (args.run / "report.json").exists():
        if not args.input.is_dir():
            print(f"benchmark: no folder {args.input}", file=sys.stderr)
            return 2
        run_args = ["run", "--input", str(args.input), "--output", str(args.run)]
        seconds["run"] = timed_command([*run_args, "--weights", args.weights, "--overwrite"])
    seconds["train"] = timed_command(["train", str(args.run)])
    export_args = ["export", str(args.run), "--to", str(args.to), "--overwrite"]
    seconds["export"] = timed_command(export_args)
    report = json.loads((args.run / "report.json").read_text(encoding="utf-8"))
    card = json.loads((args.to / "model_card.json").read_text(encoding="utf-8"))
    evaluation = report["evaluation"]
    compared = compare(card, args.to, args.run)
    models = compared["models"]
    result = {
        "run": str(args.run),
        "cores": os.cpu_count(),
        "cpu": card["latency"]["cpu"],
        "seconds": seconds,
        "train": {
            "accuracy": evaluation["accuracy"],
            "macro_f1": evaluation["macro_f1"],
            "test_images": evaluation["test"]["images"],
            "reg_param": evaluation["model"]["reg_param"],
            "tried": evaluation["model"]["regularisation"]["tried"],
        },
        "compare": compared,
        "int8_points_below_float": round(
            100
            * (
                models[layout.TFLITE_FLOAT32_MODEL]["accuracy"]
                - models[layout.TFLITE_INT8_MODEL]["accuracy"]
            ),
            2,
        ),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

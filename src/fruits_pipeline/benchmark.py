"""Benchmark: the job's extract stage against a single-process TensorFlow ceiling.

``python -m fruits_pipeline.benchmark [--input DIR] [--limit N]`` (``make bench``) runs, in
one process so that the ratios hold on a noisy machine:

1. the ceiling: no Spark, the job's own decode, preprocessing and compiled inference called
   directly on batches, with every core given to TensorFlow; images/s of decode, of
   inference and overall;
2. the whole job in local mode with its default settings: seconds per stage, the extract
   stage's images/s, model builds, CNN calls per image, peak memory;
3. the ratio of 2 to 1.

It prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fruits_pipeline.images import MODEL_INPUT_SIZE, decode_image, is_image_path, preprocess

log = logging.getLogger(__name__)

DEFAULT_INPUT = Path(__file__).resolve().parents[2].parent / "shared/data/fruits-360-light"


def image_files(root: Path, limit: int | None) -> list[Path]:
    """Return the image files under ``root`` (hidden folders skipped), sorted, at most
    ``limit``."""
    found = sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and is_image_path(path.name)
        and not any(part.startswith((".", "_")) for part in path.relative_to(root).parts)
    )
    return found[:limit] if limit else found


def measure_ceiling(
    files: list[Path], arrays: list[np.ndarray], key: str, batch_size: int, threads: int
) -> dict:
    """Run decode + preprocess + compiled inference in this process, no Spark.

    Returns seconds spent reading, decoding (with preprocessing) and in inference, and the
    images/s of each and overall.  The first batch warms the compiled function up and is
    not counted.
    """
    from fruits_pipeline.model import cached_extractor

    extract, _ = cached_extractor(key, lambda: arrays, threads)
    warm = np.zeros((batch_size, MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3), dtype=np.float32)
    extract(warm)
    read_s = decode_s = infer_s = 0.0
    buffer = np.empty((batch_size, MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3), dtype=np.uint8)
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        t0 = time.perf_counter()
        contents = [path.read_bytes() for path in chunk]
        t1 = time.perf_counter()
        for index, content in enumerate(contents):
            buffer[index] = decode_image(content)
        batch = preprocess(buffer[: len(chunk)])
        t2 = time.perf_counter()
        extract(batch)
        t3 = time.perf_counter()
        read_s, decode_s, infer_s = read_s + t1 - t0, decode_s + t2 - t1, infer_s + t3 - t2
    count = len(files)
    return {
        "images": count,
        "threads": threads,
        "batch_size": batch_size,
        "seconds": {
            "read": round(read_s, 2),
            "decode": round(decode_s, 2),
            "inference": round(infer_s, 2),
        },
        "images_per_s": {
            "decode": round(count / decode_s, 1),
            "inference": round(count / infer_s, 1),
            "overall": round(count / (read_s + decode_s + infer_s), 1),
        },
    }


def run_job_once(input_dir: Path, limit: int | None, weights_text: str, workdir: Path) -> dict:
    """Run the whole job in local mode with its defaults; return its report."""
    from fruits_pipeline.job import JobConfig, run_job
    from fruits_pipeline.model import parse_weights_spec
    from fruits_pipeline.session import build_spark

    started = time.perf_counter()
    spark = build_spark("local[*]", app_name="fruits-pipeline-bench")
    spark_seconds = time.perf_counter() - started
    config = JobConfig(
        input=str(input_dir),
        output=str(workdir / "job-output"),
        weights=parse_weights_spec(weights_text),
        limit=limit,
        overwrite=True,
    )
    return run_job(spark, config, spark_start_seconds=spark_seconds)


def format_table(result: dict) -> str:
    """Return the benchmark as a plain-text table."""
    ceiling, job = result["ceiling"], result["job"]
    rows = [
        ("images", f"{ceiling['images']}"),
        ("ceiling decode (+preprocess) images/s", f"{ceiling['images_per_s']['decode']}"),
        ("ceiling inference images/s", f"{ceiling['images_per_s']['inference']}"),
        ("ceiling overall images/s", f"{ceiling['images_per_s']['overall']}"),
        ("job extract stage images/s", f"{job['extract_images_per_s']}"),
        ("ratio job extract / ceiling overall", f"{result['ratio']:.2f}"),
        ("job seconds per stage", ", ".join(f"{k} {v:.1f}" for k, v in job["seconds"].items())),
        (
            "model builds (driver, workers)",
            f"{job['model_builds']['driver']}, {job['model_builds']['workers']}",
        ),
        ("CNN calls per image", f"{job['cnn']['calls_per_image']}"),
        (
            "peak memory MB (driver JVM, driver Python, Python worker)",
            ", ".join(
                str(job["memory_peak_mb"].get(k))
                for k in ("driver_jvm", "driver_python", "python_worker_max")
            ),
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input",
        type=Path,
        default=DEFAULT_INPUT,
        help="folder of images (default: the shared Fruits-360 sample)",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N images by path")
    parser.add_argument(
        "--weights",
        default="random:0",
        help="weights for both measurements (default random:0: speed only)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="ceiling batch size (64)")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results/bench.json"),
        help="where to write the figures (bench-results/bench.json)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if not args.input.is_dir():
        print(f"benchmark: no folder {args.input}", file=sys.stderr)
        return 2

    from fruits_pipeline.model import load_weights, parse_weights_spec

    files = image_files(args.input, args.limit)
    weights = load_weights(parse_weights_spec(args.weights))
    log.info("ceiling: %d images, one process, %d threads", len(files), os.cpu_count())
    ceiling = measure_ceiling(
        files, weights.arrays, weights.arrays_sha256, args.batch_size, os.cpu_count() or 1
    )
    with tempfile.TemporaryDirectory(prefix="fruits-bench-") as workdir:
        report = run_job_once(args.input, args.limit, args.weights, Path(workdir))
    extract_rate = round(report["counts"]["featurized"] / report["seconds"]["extract"], 1)
    result = {
        "input": str(args.input),
        "cores": os.cpu_count(),
        "ceiling": ceiling,
        "job": {
            "extract_images_per_s": extract_rate,
            "seconds": report["seconds"],
            "model_builds": report["model_builds"],
            "cnn": report["cnn"],
            "memory_peak_mb": report["memory_peak_mb"],
            "counts": {k: report["counts"][k] for k in ("files_seen", "featurized", "rejected")},
        },
        "ratio": extract_rate / ceiling["images_per_s"]["overall"],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

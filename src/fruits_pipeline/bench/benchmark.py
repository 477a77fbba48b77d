"""Benchmark: the job's extract stage against a single-process ceiling, and the notebook.

``python -m fruits_pipeline.bench.benchmark [--input DIR] [--limit N]`` (``make bench``) runs, in
one process so that the ratios hold on a noisy machine:

1. the ceiling: no Spark, the job's own decode, preprocessing and inference (``--engine``,
   ONNX Runtime by default) called directly on batches, with every core given to the
   engine; images/s of decode, of inference and overall;
2. the whole job in local mode with its default settings: seconds per stage, the extract
   stage's images/s, model builds, CNN calls per image, peak memory of each process;
3. the ratio of 2 to 1;
4. the same for the int8 engine (``--int8-engine``, ``onnxruntime-int8`` by default; ``--no-int8``
   skips it), in the same process: its job first (which calibrates on the run's images),
   then its ceiling with the network that job kept; and the int8 job's extract stage over
   the fp32 job's;
5. the same chain written the notebook way (``notebook_baseline``), in a process and JVM of
   its own: seconds per stage, model builds, and the job's speed-up over it, for the whole
   chain and for the PCA stage (``--no-notebook`` skips it).

It prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fruits_pipeline import engines
from fruits_pipeline.chain.images import MODEL_INPUT_SIZE, decode_image, is_image_path, preprocess
from fruits_pipeline.results import layout
from fruits_pipeline.results.report import RunReport
from fruits_pipeline.session import BLAS_THREADS_ENV

log = logging.getLogger(__name__)

DEFAULT_INPUT = Path(__file__).resolve().parents[3].parent / "shared/data/fruits-360-light"


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
    files: list[Path],
    weights,
    batch_size: int,
    threads: int,
    engine_name: str,
    payload: object | None = None,
) -> dict:
    """Run decode + preprocess + the engine's inference in this process, no Spark.

    ``payload`` is the engine's prepared network (by default ``prepare(weights)``; a
    quantized engine's is the one its job calibrated and kept).  Returns seconds spent
    reading, decoding (with preprocessing) and in inference, and the images/s of each and
    overall.  The first batch warms the extractor up and is not counted.
    """
    engine = engines.get(engine_name)
    if payload is None:
        payload = engine.prepare(weights).payload
    extract = engine.extractor(payload, threads)
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
        "engine": engine_name,
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


def run_job_once(
    input_dir: Path,
    limit: int | None,
    weights_text: str,
    engine: str,
    workdir: Path,
    output: str = "job-output",
) -> RunReport:
    """Run the whole job in local mode with its defaults, into ``workdir/output``; stop its
    SparkSession and return its report."""
    from fruits_pipeline.chain.job import JobConfig, run_job
    from fruits_pipeline.chain.weights import parse_weights_spec
    from fruits_pipeline.session import build_spark

    started = time.perf_counter()
    spark = build_spark("local[*]", app_name="fruits-pipeline-bench")
    spark_seconds = time.perf_counter() - started
    config = JobConfig(
        input=str(input_dir),
        output=str(workdir / output),
        weights=parse_weights_spec(weights_text),
        limit=limit,
        overwrite=True,
        engine=engine,
    )
    try:
        return run_job(spark, config, spark_start_seconds=spark_seconds)
    finally:
        spark.stop()


def run_notebook_once(
    input_dir: Path, limit: int | None, weights_text: str, lapack: str, workdir: Path
) -> dict:
    """Run the notebook-style chain in a process (and JVM) of its own, with Spark's default
    settings; return its figures, ``spark_start`` and ``total`` seconds included."""
    figures = workdir / "notebook.json"
    command = [
        sys.executable,
        "-m",
        "fruits_pipeline.bench.notebook_baseline",
        "--input",
        str(input_dir),
        "--output",
        str(workdir / "notebook"),
        "--json",
        str(figures),
        "--weights",
        weights_text,
        "--lapack",
        lapack,
        *(["--limit", str(limit)] if limit else []),
    ]
    # A stock Spark's environment: without the job's one-thread setting for OpenBLAS.
    env = {key: value for key, value in os.environ.items() if key != BLAS_THREADS_ENV}
    subprocess.run(command, check=True, env=env)
    return json.loads(figures.read_text())


def job_figures(report: RunReport) -> dict:
    """Return a job's figures: extract stage images/s, seconds, builds, memory."""
    return {
        "extract_images_per_s": round(report.counts.featurized / report.seconds["extract"], 1),
        "seconds": report.seconds,
        "model_builds": vars(report.model_builds),
        "cnn": vars(report.cnn),
        "memory_peak_mb": vars(report.memory_peak_mb),
        "linear_algebra": vars(report.pca.linear_algebra),
        "counts": {
            "files_seen": report.counts.files_seen,
            "featurized": report.counts.featurized,
            "rejected": report.counts.rejected,
        },
    }


def measure_int8(
    args: argparse.Namespace, files: list[Path], weights, fp32_job: dict, workdir: Path
) -> dict:
    """Run the int8 engine's job, then its ceiling with the network that job kept; return
    both, the job's ratio to its ceiling and its speed-up over the fp32 job."""
    from fruits_pipeline.chain.calibration import kept_network
    from fruits_pipeline.results.report import read_report

    output = "job-output-int8"
    report = run_job_once(args.input, args.limit, args.weights, args.int8_engine, workdir, output)
    kept = kept_network(
        str(workdir / output),
        read_report(str(workdir / output / layout.REPORT_JSON)),
        engines.get(args.int8_engine),
    )
    ceiling = measure_ceiling(
        files,
        weights,
        args.batch_size,
        os.cpu_count() or 1,
        args.int8_engine,
        kept.network.payload,
    )
    job = job_figures(report)
    return {
        "ceiling": ceiling,
        "job": job,
        "calibration": {
            "images": kept.facts.images,
            "paths_sha256": kept.facts.paths_sha256,
            "fidelity": vars(kept.facts.fidelity) if kept.facts.fidelity else None,
        },
        "ratio": job["extract_images_per_s"] / ceiling["images_per_s"]["overall"],
        "extract_speedup_over_fp32": round(
            job["extract_images_per_s"] / fp32_job["extract_images_per_s"], 2
        ),
        "ceiling_inference_speedup_over_fp32": None,
    }


def compare_with_notebook(job_seconds: dict, notebook_seconds: dict) -> dict:
    """Return the job's speed-up over the notebook (notebook seconds / job seconds) for the
    whole run, Spark's start included (each starts its own JVM), and for the PCA stage; and
    the job's PCA seconds as a fraction of the notebook's."""
    return {
        "whole_job_speedup": round(notebook_seconds["total"] / job_seconds["total"], 2),
        "pca_speedup": round(notebook_seconds["pca"] / job_seconds["pca"], 2),
        "pca_fraction_of_notebook": round(job_seconds["pca"] / notebook_seconds["pca"], 3),
    }


def format_table(result: dict) -> str:
    """Return the benchmark as a plain-text table."""
    ceiling, job = result["ceiling"], result["job"]
    rows = [
        ("images", f"{ceiling['images']}"),
        ("inference engine", ceiling["engine"]),
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
        ("peak memory MB driver JVM", f"{job['memory_peak_mb'].get('driver_jvm')}"),
        ("peak memory MB driver Python", f"{job['memory_peak_mb'].get('driver_python')}"),
        (
            "peak memory MB each Python worker",
            ", ".join(str(v) for v in job["memory_peak_mb"].get("python_workers", {}).values()),
        ),
        (
            "Spark ML BLAS / LAPACK (OpenBLAS threads)",
            "{blas} / {lapack} ({openblas_threads})".format(**job["linear_algebra"]),
        ),
    ]
    int8 = result.get("int8")
    if int8:
        ceiling8, job8 = int8["ceiling"], int8["job"]
        fidelity = int8["calibration"]["fidelity"] or {}
        rows += [
            ("int8 engine", ceiling8["engine"]),
            ("int8 ceiling inference images/s", f"{ceiling8['images_per_s']['inference']}"),
            ("int8 ceiling overall images/s", f"{ceiling8['images_per_s']['overall']}"),
            ("int8 job extract stage images/s", f"{job8['extract_images_per_s']}"),
            ("int8 ratio job extract / its ceiling overall", f"{int8['ratio']:.2f}"),
            ("int8 job extract / fp32 job extract", f"{int8['extract_speedup_over_fp32']:.2f}x"),
            (
                "int8 ceiling inference / fp32 ceiling inference",
                f"{int8['ceiling_inference_speedup_over_fp32']:.2f}x",
            ),
            (
                "int8 job seconds per stage",
                ", ".join(f"{k} {v:.1f}" for k, v in job8["seconds"].items()),
            ),
            (
                "int8 calibration images, cosine to fp32 (median, min)",
                f"{int8['calibration']['images']}, {fidelity.get('cosine_median')}, "
                f"{fidelity.get('cosine_min')}",
            ),
        ]
    notebook = result.get("notebook")
    if notebook:
        seconds = notebook["seconds"]
        rows += [
            (
                "notebook seconds per stage",
                ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()),
            ),
            ("notebook model builds (workers)", f"{notebook['model_builds_workers']}"),
            ("notebook Spark ML LAPACK", notebook["lapack"]),
            ("notebook CNN calls per image", f"{notebook['cnn_calls_per_image']}"),
            (
                "notebook extract stage images/s",
                f"{notebook['featurized'] / seconds['extract']:.1f}",
            ),
            (
                "job speed-up over the notebook, whole run",
                f"{result['versus_notebook']['whole_job_speedup']:.2f}x",
            ),
            (
                "job PCA stage / notebook PCA stage",
                f"{result['versus_notebook']['pca_fraction_of_notebook']:.2f}",
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
        "--engine",
        choices=sorted(engines.ENGINES),
        default=engines.DEFAULT_ENGINE,
        help=f"inference engine of the ceiling and the job (default {engines.DEFAULT_ENGINE})",
    )
    parser.add_argument(
        "--int8-engine",
        choices=sorted(name for name, e in engines.ENGINES.items() if e.calibration_images),
        default="onnxruntime-int8",
        help="the quantized engine measured beside --engine in the same run "
        "(default onnxruntime-int8)",
    )
    parser.add_argument(
        "--no-int8", action="store_true", help="skip the int8 engine's job and ceiling"
    )
    parser.add_argument(
        "--no-notebook",
        action="store_true",
        help="skip the notebook-style baseline (saves about half the time)",
    )
    parser.add_argument(
        "--notebook-lapack",
        choices=("java", "native"),
        default="java",
        help="the notebook's Spark ML LAPACK: java, as on a stock Spark (default), or native",
    )
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

    from fruits_pipeline.chain.weights import load_weights, parse_weights_spec

    files = image_files(args.input, args.limit)
    weights = load_weights(parse_weights_spec(args.weights))
    log.info("ceiling: %d images, one process, %d threads", len(files), os.cpu_count())
    ceiling = measure_ceiling(
        files,
        weights,
        args.batch_size,
        os.cpu_count() or 1,
        args.engine,
    )
    with tempfile.TemporaryDirectory(prefix="fruits-bench-") as workdir:
        report = run_job_once(args.input, args.limit, args.weights, args.engine, Path(workdir))
        job = job_figures(report)
        int8 = None
        if not args.no_int8:
            log.info("int8: the %s job, then its ceiling", args.int8_engine)
            int8 = measure_int8(args, files, weights, job, Path(workdir))
            int8["ceiling_inference_speedup_over_fp32"] = round(
                int8["ceiling"]["images_per_s"]["inference"] / ceiling["images_per_s"]["inference"],
                2,
            )
        notebook = None
        if not args.no_notebook:
            log.info("notebook-style baseline: same images, same weights")
            notebook = run_notebook_once(
                args.input, args.limit, args.weights, args.notebook_lapack, Path(workdir)
            )
    result = {
        "input": str(args.input),
        "cores": os.cpu_count(),
        "ceiling": ceiling,
        "job": job,
        "ratio": job["extract_images_per_s"] / ceiling["images_per_s"]["overall"],
    }
    if int8:
        result["int8"] = int8
    if notebook:
        result["notebook"] = notebook
        result["versus_notebook"] = compare_with_notebook(report.seconds, notebook["seconds"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

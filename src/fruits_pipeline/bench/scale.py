"""Scale benchmark: the same job at two sizes, to show what grows with the number of images.

``python -m fruits_pipeline.bench.scale [--input DIR] [--copies 10]`` (``make bench-scale``)
runs the job with its defaults twice, each run in a process (and JVM) of its own so that
each process's peak memory is that size's: once on ``--input`` (the shared 8,240-image
sample by default), once on a tree of ``--copies`` copies of it made of hard links
(``copy-00/Training/Apple Braeburn/...``: the labels stay the input's, no image is copied).
It prints, for both sizes, the extract stage's images/s, seconds per stage, the write
stage's share of the run and the peak memory of the driver's Python, the driver's JVM and
each Python worker, and the ratio of the bigger run's figures to the smaller's.  The tree
lives in a temporary folder on the input's file system (hard links cannot cross file
systems) and is removed at the end.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fruits_pipeline.bench.benchmark import DEFAULT_INPUT, image_files
from fruits_pipeline.results import layout
from fruits_pipeline.results.report import RunReport, read_report

log = logging.getLogger(__name__)


class TreeError(Exception):
    """The bigger tree cannot be made (another file system, a file in the way)."""


def link_tree(source: Path, target: Path, copies: int) -> int:
    """Make ``copies`` copies of ``source``'s image files under ``target``
    (``copy-00/<relative path>``, ...) as hard links; return how many files were linked."""
    files = image_files(source, None)
    for copy in range(copies):
        base = target / f"copy-{copy:02d}"
        for path in files:
            link = base / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, link)
            except OSError as error:
                if error.errno == errno.EXDEV:
                    raise TreeError(
                        f"{target} is not on the file system of {source}: hard links cannot "
                        "cross file systems (set TMPDIR to a folder on the input's)"
                    ) from None
                raise
    return copies * len(files)


@dataclass
class SizeFigures:
    """One run's figures."""

    images: int
    extract_images_per_s: float
    seconds: dict[str, float]
    #: the write stage's seconds over the whole run's
    write_share: float
    driver_python_mb: float | None
    driver_jvm_mb: float | None
    python_worker_max_mb: float | None

    @classmethod
    def of(cls, report: RunReport) -> SizeFigures:
        seconds = report.seconds
        memory = report.memory_peak_mb
        return cls(
            images=report.counts.files_seen,
            extract_images_per_s=round(report.counts.featurized / seconds["extract"], 1),
            seconds=seconds,
            write_share=round(seconds["write"] / seconds["total"], 4),
            driver_python_mb=memory.driver_python,
            driver_jvm_mb=memory.driver_jvm,
            python_worker_max_mb=memory.python_worker_max,
        )


def run_job(input_dir: Path, output: Path, weights: str) -> RunReport:
    """Run ``fruits-pipeline run`` with its defaults in a process of its own; return its
    report."""
    command = [
        sys.executable,
        "-m",
        "fruits_pipeline.cli",
        "run",
        "--input",
        str(input_dir),
        "--output",
        str(output),
        "--weights",
        weights,
        "--overwrite",
    ]
    log.info("running: %s", " ".join(command))
    subprocess.run(command, check=True)
    return read_report(str(output / layout.REPORT_JSON))


def ratio(big: float | None, small: float | None) -> float | None:
    """``big / small``, None when either is unknown."""
    return round(big / small, 3) if big and small else None


def compare(small: SizeFigures, big: SizeFigures) -> dict[str, float | None]:
    """The bigger run's figures over the smaller's."""
    return {
        "images": ratio(big.images, small.images),
        "extract_images_per_s": ratio(big.extract_images_per_s, small.extract_images_per_s),
        "driver_python_mb": ratio(big.driver_python_mb, small.driver_python_mb),
        "driver_jvm_mb": ratio(big.driver_jvm_mb, small.driver_jvm_mb),
        "python_worker_max_mb": ratio(big.python_worker_max_mb, small.python_worker_max_mb),
    }


def format_table(small: SizeFigures, big: SizeFigures, ratios: dict) -> str:
    """Return both runs side by side as a plain-text table."""

    def stages(figures: SizeFigures) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in figures.seconds.items())

    rows = [
        ("images", f"{small.images:,}", f"{big.images:,}", ratios["images"]),
        (
            "extract stage images/s",
            small.extract_images_per_s,
            big.extract_images_per_s,
            ratios["extract_images_per_s"],
        ),
        ("write stage / whole run", f"{small.write_share:.1%}", f"{big.write_share:.1%}", ""),
        (
            "peak MB driver Python",
            small.driver_python_mb,
            big.driver_python_mb,
            ratios["driver_python_mb"],
        ),
        ("peak MB driver JVM", small.driver_jvm_mb, big.driver_jvm_mb, ratios["driver_jvm_mb"]),
        (
            "peak MB largest Python worker",
            small.python_worker_max_mb,
            big.python_worker_max_mb,
            ratios["python_worker_max_mb"],
        ),
    ]
    header = ("", "smaller", "bigger", "bigger/smaller")
    cells = [header] + [tuple("" if v is None else str(v) for v in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines += [f"seconds, smaller: {stages(small)}", f"seconds, bigger:  {stages(big)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input",
        type=Path,
        default=DEFAULT_INPUT,
        help="folder of images, the smaller size (default: the shared Fruits-360 sample)",
    )
    parser.add_argument(
        "--copies", type=int, default=10, help="the bigger size, in copies of --input (10)"
    )
    parser.add_argument(
        "--weights", default="random:0", help="weights of both runs (default random:0)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results/scale.json"),
        help="where to write the figures (bench-results/scale.json)",
    )
    args = parser.parse_args(argv)
    if not args.input.is_dir():
        parser.exit(2, f"bench-scale: no folder {args.input}\n")
    if args.copies < 2:
        parser.exit(2, f"bench-scale: --copies must be at least 2, not {args.copies}\n")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    with tempfile.TemporaryDirectory(prefix="fruits-scale-") as workdir:
        work = Path(workdir)
        try:
            linked = link_tree(args.input, work / "tree", args.copies)
        except TreeError as error:
            parser.exit(2, f"bench-scale: {error}\n")
        log.info("%d hard links under %s", linked, work / "tree")
        small = SizeFigures.of(run_job(args.input, work / "out-small", args.weights))
        big = SizeFigures.of(run_job(work / "tree", work / "out-big", args.weights))
    ratios = compare(small, big)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"smaller": vars(small), "bigger": vars(big), "ratios": ratios}, indent=2) + "\n"
    )
    print(format_table(small, big, ratios))
    print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

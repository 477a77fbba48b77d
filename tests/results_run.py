"""One small real run shared by the tests of plots, report.html, evaluate and transform.

``make_small_run`` runs ``fruits-pipeline run`` on a few classes of the shared Fruits-360
sample (symlinks, nothing copied), split into ``Training`` and ``Test`` folders as the
dataset is; without the shared sample it draws sample fruit images instead.  The session
fixture ``small_run`` (conftest.py) makes it once; no test writes into it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from shared_data import SHARED_FRUITS

from fruits_pipeline.cli import main
from fruits_pipeline.sample_images import write_sample_tree

#: Classes taken from the shared sample, and images per class taken from each split.
CLASSES = ["Apple Braeburn", "Banana", "Kiwi", "Lemon", "Plum"]
PER_SPLIT = {"Training": 16, "Test": 6}


@dataclass
class SmallRun:
    """A finished run: its input tree, its OUTPUT and its report."""

    input: Path
    output: Path
    report: dict
    weights: Path
    real_data: bool


def symlink_tree(root: Path) -> bool:
    """Fill ``root/<split>/<class>/`` with symlinks into the shared sample, or with drawn
    images when it is absent; return True for the real sample."""
    real = all((SHARED_FRUITS / split).is_dir() for split in PER_SPLIT)
    for split, count in PER_SPLIT.items():
        if not real:
            write_sample_tree(str(root / split), per_class=count, seed=len(split))
            continue
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for source in sorted((SHARED_FRUITS / split / name).iterdir())[:count]:
                os.symlink(source, folder / source.name)
    return real


def make_small_run(base: Path, weights_file: Path) -> SmallRun:
    """Run the small run into the new folder ``base`` and return it (about 30 s)."""
    source = base / "images"
    real = symlink_tree(source)
    output = base / "output"
    code = main(
        [
            "run",
            "--input",
            str(source),
            "--output",
            str(output),
            "--weights",
            str(weights_file),
            "--batch-size",
            "32",
            "--quiet",
        ],
        default_master="local[2]",
    )
    assert code == 0, "the small run failed"
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    return SmallRun(source, output, report, weights_file, real)

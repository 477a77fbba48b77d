"""Every character a folder name may hold survives as the label, from the file to the
parquet, the CSV, report.json and report.html: one small real run."""

from __future__ import annotations

import csv
import html
import unicodedata
from pathlib import Path

import pytest
from cli_runs import run_ok
from image_files import jpeg_bytes, noise_image
from shared_data import SHARED_FRUITS

pytestmark = pytest.mark.spark

#: Folder names a Linux file system (and an S3 key) allows: anything but ``/`` and NUL.
LABELS = [
    "ctl \x01\x02\x1b\x1f\x7f\ttab",
    "line\nfeed\r\nreturn\x85nel\u2028ls\u2029ps",  # what Java's ``.`` stops at
    "100% #1 ?q [a-z]*",  # percent-encoding, fragment, query and glob characters
    "%41%2F%%",  # decoded as a URI escape, this would become "A/%"
    "quotes ' \" ` <b>&amp;<i>",  # HTML and CSV quoting
    "  spaces  ",
    "back\\slash {a,b} $x$ colon:x ~ ;=,",
    unicodedata.normalize("NFC", "Pêche plate"),
    unicodedata.normalize("NFD", "Pêche plate"),  # another folder: not merged with NFC
    "é" * 127 + "x",  # 255 bytes of UTF-8, the longest name ext4 allows
]


def real_jpegs(count: int) -> list[Path]:
    """Real Fruits-360 JPEGs when the shared sample is there (read in place)."""
    folder = SHARED_FRUITS / "Training" / "Kiwi"
    return sorted(folder.iterdir())[:count] if folder.is_dir() else []


def test_every_character_a_folder_name_holds_survives_as_the_label(tmp_path, capsys):
    assert len(LABELS[-1].encode()) == 255
    assert LABELS[7] != LABELS[8]
    # The input folder's own name is full of glob characters too: it is read literally.
    root = tmp_path / "in [1]{a,b} *?"
    sources = real_jpegs(len(LABELS))
    for index, label in enumerate(LABELS):
        folder = root / label
        folder.mkdir(parents=True)
        image = folder / f"{index}.jpg"
        if sources:
            image.symlink_to(sources[index])
        else:
            image.write_bytes(jpeg_bytes(noise_image(index)))
    # An empty file: its rejected row's label is made in Python, not by Spark's column.
    (root / LABELS[1] / "empty.jpg").write_bytes(b"")
    output = tmp_path / "out"

    report, _ = run_ok(
        capsys, "--input", str(root), "--output", str(output), "--weights", "random:0",
        "--quiet",
    )  # fmt: skip

    def folder_of(path: str) -> str:
        return path.rsplit("/", 2)[-2]

    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    features = spark.read.parquet(str(output / "features")).select("path", "label").collect()
    assert sorted(row["label"] for row in features) == sorted(LABELS)
    assert all(row["label"] == folder_of(row["path"]) for row in features)
    rejected = spark.read.parquet(str(output / "rejected")).select("path", "label").collect()
    assert [(r["path"].rsplit("/", 1)[1], r["label"]) for r in rejected] == [
        ("empty.jpg", LABELS[1])
    ]

    with open(output / "features_pca.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert sorted(row["label"] for row in table) == sorted(LABELS)
    assert all(row["label"] == folder_of(row["path"]) for row in table)

    per_label = report["counts"]["per_label"]
    assert sorted(per_label) == sorted(LABELS)
    assert per_label[LABELS[1]] == {"featurized": 1, "rejected": 1}

    with open(output / "report.html", newline="", encoding="utf-8") as handle:
        page = handle.read()  # newline="": a label's "\r\n" stays as written
    for label in LABELS:
        assert html.escape(label, quote=True) in page, repr(label)
    assert "<b>&amp;<i>" not in page  # the label is text, never markup

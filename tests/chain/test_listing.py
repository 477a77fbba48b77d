"""Listing: input partition sizing, path forms, and what a --limit run reads."""

from __future__ import annotations

import pytest
from image_files import jpeg_bytes, noise_image

from fruits_pipeline.chain.listing import (
    escape_glob,
    list_images,
    partition_conf,
)


def files_per_partition(conf: dict[str, str], mean: int) -> int:
    """How many files of ``mean`` bytes Spark packs into one partition with ``conf``."""
    return int(conf["spark.sql.files.maxPartitionBytes"]) // (
        mean + int(conf["spark.sql.files.openCostInBytes"])
    )


@pytest.mark.parametrize(
    "files, cores, per_partition",
    [
        (2060, 2, 229),  # 9 tasks
        (8240, 2, 250),  # 33 tasks
        (90000, 16, 256),  # EMR: 352 tasks, more than 3 per core
        (300, 16, 7),  # few images, many cores: about 3 tasks per core
    ],
)
def test_partition_conf_packs_about_256_images_per_task(files, cores, per_partition):
    mean = 5000
    conf = partition_conf(files, files * mean, cores)
    assert files_per_partition(conf, mean) == per_partition
    assert -(-files // per_partition) >= 2 * cores  # every core gets several tasks


def test_partition_conf_with_no_files():
    assert partition_conf(0, 0, 2) == {}


def test_escape_glob():
    assert escape_glob("file:/in/a[1]{x,y}*?.jpg") == r"file:/in/a\[1\]\{x,y\}\*\?.jpg"
    assert escape_glob("s3://b/Apple Braeburn/r_1_100.jpg") == "s3://b/Apple Braeburn/r_1_100.jpg"


def test_a_limit_reads_only_the_kept_files(spark, tmp_path):
    folder = tmp_path / "in" / "Kiwi"
    folder.mkdir(parents=True)
    # "a[1].jpg" read as a glob would match "a1.jpg"; "e.jpg" is empty (the scan skips it).
    names = ["a1.jpg", "a[1].jpg", "b{2}.jpg", "c d.jpg", "e.jpg", "f.jpg", "g.jpg"]
    for seed, name in enumerate(names):
        data = b"" if name == "e.jpg" else jpeg_bytes(noise_image(seed))
        (folder / name).write_bytes(data)

    listing = list_images(spark, str(tmp_path / "in"), limit=5)

    kept = sorted(names)[:5]
    assert sorted(r["path"].rsplit("/", 1)[1] for r in listing.files.collect()) == kept
    assert [r["path"].rsplit("/", 1)[1] for r in listing.empty.collect()] == ["e.jpg"]
    assert (listing.files_seen, listing.scanned) == (5, 4)
    rows = listing.images.select("path", "label", "length").collect()
    assert sorted(r["path"].rsplit("/", 1)[1] for r in rows) == [n for n in kept if n != "e.jpg"]
    assert {r["label"] for r in rows} == {"Kiwi"}
    assert listing.total_bytes == sum((folder / n).stat().st_size for n in kept)
    # The scan itself covers the kept files only (e.jpg, empty, it skips), not the whole
    # folder filtered.
    assert len(listing.images.inputFiles()) == 5


def test_the_file_index_has_the_paths_the_scan_writes(spark, tmp_path):
    # Spark's index gives URIs (%20, %5B, %25); the path column has the names as they are,
    # "+" included (url_decode alone would make it a space).
    folder = tmp_path / "in" / "B+c 100%"
    folder.mkdir(parents=True)
    names = ["a b.jpg", "a[1].jpg", "x%20y.jpg", "p+q.jpg", "Pêche.jpg", "e.jpg"]
    for seed, name in enumerate(names):
        (folder / name).write_bytes(b"" if name == "e.jpg" else jpeg_bytes(noise_image(seed)))

    listing = list_images(spark, str(tmp_path / "in"), limit=None)

    scanned = {r["path"] for r in listing.images.select("path").collect()}
    indexed = {r["path"] for r in listing.files.collect()}
    assert indexed == scanned | {f"file:{folder}/e.jpg"}
    assert {p.rsplit("/", 1)[1] for p in indexed} == set(names)
    assert [r["path"] for r in listing.empty.collect()] == [f"file:{folder}/e.jpg"]
    assert (listing.files_seen, listing.scanned) == (6, 5)

"""Pure listing helpers: input partition sizing and path forms."""

from __future__ import annotations

import pytest

from fruits_pipeline.listing import hadoop_path_string, partition_conf


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


def test_hadoop_path_string():
    assert hadoop_path_string("file:///data/Apple%20Braeburn/x.jpg") == (
        "file:/data/Apple Braeburn/x.jpg"
    )
    assert hadoop_path_string("s3://bucket/P%C3%AAche/x.jpg") == "s3://bucket/Pêche/x.jpg"

"""``features_pca.csv``: formatted and written by the executors, joined into one file that
Python's ``csv`` module reads back exactly (every path and label, every float)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from pyspark.sql import types as T

from fruits_pipeline.results import storage
from fruits_pipeline.results.writer import csv_field, write_features_csv

AWKWARD = [
    "plain",
    "with, comma",
    'with "quotes"',
    "line\nfeed",
    "carriage\rreturn",
    "crlf\r\nend",
    "",
    " leading and trailing ",
    "tab\there",
    "semi;colon 'single' #hash %25 ?q [x]",
    "unicode: Pomme de terre Pfirsich ü é 桃",
]


def python_csv_line(fields: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(fields)
    return buffer.getvalue()


def test_a_field_is_quoted_as_pythons_csv_module_quotes_it(spark):
    frame = spark.createDataFrame([(value,) for value in AWKWARD], "value string")
    found = [row[0] for row in frame.select(csv_field(frame["value"])).collect()]
    for value, field in zip(AWKWARD, found, strict=True):
        assert field + "\r\n" == python_csv_line([value]) or (value == "" and field == ""), value


@pytest.mark.parametrize("k", [1, 7])
def test_the_csv_is_sorted_and_reads_back_exactly(spark, tmp_path, k):
    rng = np.random.default_rng(k)
    values = rng.standard_normal((len(AWKWARD) * 3, k)).astype(np.float32)
    values[0, 0] = np.float32(1e-30)  # exponents
    values[1, 0] = np.float32(-3.4e38)
    rows = [
        (f"file:/data/{label}/{index:03d}.jpg", label, [float(v) for v in values[index]])
        for index, label in enumerate(AWKWARD * 3)
    ]
    schema = T.StructType(
        [
            T.StructField("path", T.StringType()),
            T.StructField("label", T.StringType()),
            T.StructField("pca_features", T.ArrayType(T.FloatType())),
        ]
    )
    # several partitions, in no particular order: the file must still be sorted by path
    frame = spark.createDataFrame(rows[::-1], schema).repartition(4)
    target = str(tmp_path / "features_pca.csv")
    parts = str(tmp_path / "parts")
    assert write_features_csv(frame, target, k, parts) == len(rows)
    assert not storage.exists(parts)
    with open(target, newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["path", "label", *[f"pc_{i}" for i in range(1, k + 1)]]
    expected = sorted(rows)
    assert [line[0] for line in table[1:]] == [row[0] for row in expected]
    assert [line[1] for line in table[1:]] == [row[1] for row in expected]
    for line, row in zip(table[1:], expected, strict=True):
        read = np.array([np.float32(value) for value in line[2:]])
        np.testing.assert_array_equal(read, np.array(row[2], dtype=np.float32))
    with open(target, "rb") as handle:
        assert handle.read().count(b"\r\n") >= len(rows) + 1

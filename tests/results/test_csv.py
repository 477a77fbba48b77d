"""``features_pca.csv``: formatted and written by the executors, joined into one file that
Python's ``csv`` module reads back exactly (every path and label, every float), its numbers
in the notation Spark's cast (Java's ``Float.toString``) gives them."""

from __future__ import annotations

import csv
import io

import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import types as T

from fruits_pipeline.results import storage
from fruits_pipeline.results.csv_format import csv_field, csv_lines, float_text
from fruits_pipeline.results.writer import write_features_csv

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


def test_a_field_is_quoted_as_pythons_csv_module_quotes_it():
    found = csv_field(pa.array(AWKWARD)).to_pylist()
    for value, field in zip(AWKWARD, found, strict=True):
        assert field + "\r\n" == python_csv_line([value]) or (value == "" and field == ""), value
    assert csv_field(pa.array([None], pa.string())).to_pylist() == [""]


def awkward_floats() -> np.ndarray:
    """Floats of every magnitude a PCA gives and more, Java's notation boundaries included."""
    rng = np.random.default_rng(7)
    spread = rng.standard_normal(20_000) * 10.0 ** rng.integers(-9, 12, 20_000)
    edges = [0.0, -0.0, 1.0, -1.0, 1e-3, 1e7, 9999999.0, 123456.7, 0.1, 2 / 3, 100.0, 1e-30]
    below = [np.nextafter(np.float32(1e-3), np.float32(0)), np.nextafter(np.float32(1e7), 0)]
    return np.concatenate([spread, edges, below, [np.nan, np.inf, -np.inf]]).astype(np.float32)


def test_numbers_are_written_as_sparks_cast_writes_them(spark):
    """Spark's own cast is the reference.  Java 17's ``Float.toString`` is not always the
    shortest decimal (Java 19 fixed it): at 1e7 and above it sometimes adds a digit; ours
    never does.  Both read back as the same float, and below 1e7, where features are, the
    text is the same."""
    values = awkward_floats()
    frame = spark.createDataFrame([(float(value),) for value in values], "x float")
    theirs = [row[0] for row in frame.selectExpr("cast(x as string)").collect()]
    ours = float_text(values).to_pylist()
    for value, mine, spark_text in zip(values, ours, theirs, strict=True):
        if np.isnan(value):
            assert mine == spark_text == "NaN"
            continue
        assert np.float32(mine.replace("Infinity", "inf")) == value, (mine, value)
        if abs(value) < 1e7 and abs(value) >= np.finfo(np.float32).tiny or value == 0:
            assert mine == spark_text, value
        else:
            assert len(mine) <= len(spark_text), (mine, spark_text)


def test_a_batch_with_the_wrong_number_of_values_is_refused():
    values = pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32()))
    with pytest.raises(ValueError, match="different lengths"):
        csv_lines(pa.array(["a", "b"]), pa.array(["x", "y"]), values, 2)
    with pytest.raises(ValueError, match="must hold 3 values"):
        csv_lines(pa.array(["a"]), pa.array(["x"]), values[:1], 3)


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
    assert storage.exists(parts)  # the writer removes them, through owned.remove
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

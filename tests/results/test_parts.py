"""Tables and text the executors write themselves, one file per task (results/parts.py),
and the arrow arrays they hand to numpy (results/arrays.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruits_pipeline.chain.extract import valid_rows
from fruits_pipeline.results.arrays import array_matrix, matrix_array
from fruits_pipeline.results.parts import (
    DerivedColumn,
    SourceFiles,
    write_parquet_parts,
    write_text_parts,
)
from fruits_pipeline.session import session_conf


def test_a_list_array_and_a_matrix_make_each_other():
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    column = matrix_array(matrix)
    assert column.to_pylist() == matrix.tolist()
    np.testing.assert_array_equal(array_matrix(column), matrix)
    np.testing.assert_array_equal(array_matrix(column.slice(1, 2)), matrix[1:3])  # offsets
    assert array_matrix(column.slice(0, 0)).shape == (0, 0)
    with pytest.raises(ValueError, match="different lengths or nulls"):
        array_matrix(pa.array([[1.0], [2.0, 3.0]], pa.list_(pa.float32())))
    with pytest.raises(ValueError, match="different lengths or nulls"):
        array_matrix(pa.array([None, [2.0]], pa.list_(pa.float32())))


def unit_files(folder, features: np.ndarray, per_file: int) -> list[str]:
    """Write ``features`` as parquet files of ``per_file`` rows, every 7th row an error
    row; return their URIs as Spark gives them (percent-encoded ``file:`` URIs)."""
    folder.mkdir(parents=True)
    uris = []
    for start in range(0, len(features), per_file):
        rows = range(start, min(start + per_file, len(features)))
        table = pa.table(
            {
                "path": [f"img-{i:03d}" for i in rows],
                "n": pa.array(list(rows), pa.int64()),
                "features": [features[i].tolist() for i in rows],
                "error": [("bad" if i % 7 == 0 else None) for i in rows],
            }
        )
        path = folder / f"unit {start:04d}%.parquet"  # a space and a % in the name
        pq.write_table(table, path)
        uris.append(path.as_uri())
    return uris


def uri_frame(spark, uris: list[str]):
    return spark.createDataFrame([(uri,) for uri in uris], "uri string")


KEPT = pa.schema([("path", pa.string()), ("n", pa.int64()), ("features", pa.list_(pa.float32()))])


@pytest.mark.spark
def test_each_row_gets_the_derived_values_of_its_own_features(spark, tmp_path):
    rng = np.random.default_rng(3)
    features = rng.standard_normal((500, 6)).astype(np.float32)
    uris = unit_files(tmp_path / "units", features, per_file=37)
    weights = rng.standard_normal((6, 2))
    derived = DerivedColumn("pca_features", "features", lambda m: m.astype(np.float64) @ weights)
    target = tmp_path / "features"
    parts = write_parquet_parts(
        spark,
        SourceFiles(uri_frame(spark, uris), len(uris), valid_rows, KEPT),
        str(target),
        derived,
    )

    kept = [i for i in range(len(features)) if i % 7]
    assert len(parts) == 2 and sum(part.rows for part in parts) == len(kept)  # one per core
    assert sorted(p.name for p in target.iterdir()) == sorted(part.name for part in parts)
    back = spark.read.parquet(str(target))
    assert back.columns == ["path", "n", "features", "pca_features"]
    by_path = {row["path"]: row for row in back.collect()}
    assert sorted(by_path) == [f"img-{i:03d}" for i in kept]
    for i in kept:
        row = by_path[f"img-{i:03d}"]
        assert row["n"] == i and row["features"] == pytest.approx(features[i].tolist())
        expected = (features[i] @ weights).astype(np.float32)
        np.testing.assert_array_equal(np.array(row["pca_features"], dtype=np.float32), expected)


@pytest.mark.spark
def test_a_table_without_rows_is_written_with_its_schema(spark, tmp_path):
    derived = DerivedColumn("pca_features", "features", lambda m: m[:, :1])
    for name, uris in (
        ("none", []),
        ("all-errors", unit_files(tmp_path / "u", np.ones((1, 3)), 1)),
    ):
        parts = write_parquet_parts(
            spark,
            SourceFiles(uri_frame(spark, uris), len(uris), valid_rows, KEPT),
            str(tmp_path / name),
            derived,
        )
        assert [part.rows for part in parts] == [0]
        back = spark.read.parquet(str(tmp_path / name))
        assert back.count() == 0 and back.columns == ["path", "n", "features", "pca_features"]
        schema = pq.read_schema(next((tmp_path / name).iterdir()))
        assert schema.field("pca_features").type == pa.list_(pa.float32())


@pytest.mark.spark
def test_text_parts_come_back_in_the_order_of_a_sorted_frame(spark, tmp_path):
    frame = spark.range(0, 5000).selectExpr("cast(id as string) as word").repartition(4)
    # small rows: left alone, Spark would coalesce the sorted partitions into one
    with session_conf(spark, {"spark.sql.adaptive.coalescePartitions.enabled": "false"}):
        parts = write_text_parts(
            frame.orderBy("word"),
            str(tmp_path / "parts"),
            lambda batch: "".join(word + "\n" for word in batch["word"].to_pylist()).encode(),
        )
    assert sum(part.rows for part in parts) == 5000 and len(parts) > 1
    words = []
    for part in parts:
        words += (tmp_path / "parts" / part.name).read_text().splitlines()
    assert words == sorted(str(i) for i in range(5000))
    assert not [p for p in (tmp_path / "parts").iterdir() if p.name.startswith(".")]

"""The whole job on a real local SparkSession: outputs complete and consistent."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from cli_runs import run_ok
from shared_data import shared_fruits

from fruits_pipeline.results import owned

pytestmark = pytest.mark.spark


def check_outputs(spark, output: Path, report: dict) -> dict:
    """Check every output against the others and the report; return a few of them."""
    from pyspark.ml import PipelineModel

    from fruits_pipeline.chain.pca import Projection

    k = report["pca"]["k"]
    features = spark.read.parquet(str(output / "features"))
    rejected = spark.read.parquet(str(output / "rejected"))
    identity = ["path", "label", "length", "modificationTime"]
    assert features.columns == [*identity, "features", "pca_features"]
    assert rejected.columns == [*identity, "error"]
    rows = features.collect()
    counts = report["counts"]
    assert len(rows) == counts["featurized"]
    assert rejected.count() == counts["rejected"]
    assert counts["featurized"] + counts["rejected"] == counts["files_seen"]
    for row in rows:
        assert row["label"] == Path(row["path"]).parent.name
        assert len(row["features"]) == 1280 and len(row["pca_features"]) == k
    per_label = {}
    for row in rows:
        per_label[row["label"]] = per_label.get(row["label"], 0) + 1
    assert per_label == {
        label: c["featurized"]
        for label, c in report["counts"]["per_label"].items()
        if c["featurized"]
    }

    with open(output / "features_pca.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["path", "label", *[f"pc_{i}" for i in range(1, k + 1)]]
    assert len(table) - 1 == counts["featurized"] == counts["csv_rows"]
    assert [line[0] for line in table[1:]] == sorted(row["path"] for row in rows)  # by path
    by_path = {row["path"]: row for row in rows}
    for line in table[1:6]:
        assert line[1] == by_path[line[0]]["label"]
        assert np.allclose(
            [float(v) for v in line[2:]], by_path[line[0]]["pca_features"], rtol=1e-6, atol=1e-6
        )

    model = PipelineModel.load(str(output / "pca_model"))
    # every row's projection is its own image's (the executors compute it in batches)
    again = Projection.of(model)(np.array([row["features"] for row in rows]))
    assert np.allclose(again, np.array([row["pca_features"] for row in rows]), atol=1e-5)

    cumulative = report["pca"]["cumulative_explained_variance"]
    assert report["pca"]["variance_kept"] == pytest.approx(cumulative[k - 1])
    threshold = report["pca"]["variance_threshold"]
    if threshold < 1.0:
        assert cumulative[k - 1] >= threshold and (k == 1 or cumulative[k - 2] < threshold)
    else:
        assert k == len(cumulative) and cumulative[-1] == pytest.approx(1.0)
    assert report["cnn"]["calls_per_image"] == 1.0
    # At most once per Python worker (local[2]); 0 where this session's workers already
    # built it for an earlier test with the same weights.
    assert report["model_builds"]["workers"] <= 2
    workers = report["memory_peak_mb"]["python_workers"]  # {HOST:PID: MB}, one per process
    assert 1 <= len(workers) <= 2
    assert all(":" in name and 100 < mb < 4000 for name, mb in workers.items())
    assert report["memory_peak_mb"]["python_worker_max"] == max(workers.values())
    assert not [p for p in output.parent.iterdir() if ".incomplete-" in p.name]
    assert (output / "_SUCCESS").exists()
    assert dictionary_encoded_columns(output / "features") == set()
    return {"rows": rows, "table": table}


def dictionary_encoded_columns(folder: Path) -> set[str]:
    """Return the columns of the parquet files in ``folder`` that have a dictionary page
    (the job writes without: outputs.PARQUET_OPTIONS)."""
    import pyarrow.parquet as pq

    found = set()
    parts = sorted(folder.glob("*.parquet"))
    assert parts
    for part in parts:
        meta = pq.ParquetFile(part).metadata
        for group in range(meta.num_row_groups):
            for index in range(meta.num_columns):
                column = meta.row_group(group).column(index)
                if column.has_dictionary_page:
                    found.add(column.path_in_schema)
    return found


def test_mixed_folder_reports_every_bad_file(spark, capsys, tmp_path, mixed_folder):
    output = tmp_path / "out"
    report, printed = run_ok(
        capsys,
        "--input",
        str(mixed_folder),
        "--output",
        str(output),
        "--weights",
        "random:0",
        "--variance-threshold",
        "1.0",
    )
    assert report["counts"]["files_seen"] == 10
    assert report["counts"]["featurized"] == 6
    assert report["counts"]["rejected_by_reason"] == {
        "empty": 1,
        "not_an_image": 1,
        "decompression_bomb": 1,
        "corrupt": 1,
        "unreadable": 0,
    }
    assert report["pca"]["k"] == 6
    rejected = {
        Path(r["path"]).name: r for r in spark.read.parquet(str(output / "rejected")).collect()
    }
    assert set(rejected) == {"truncated.jpg", "empty.jpg", "notes.JPG", "bomb.png"}
    assert rejected["empty.jpg"]["label"] == "Apple Braeburn"
    check_outputs(spark, output, report)
    assert "NOT meaningful" in printed and "rejected         4" in printed
    assert report["weights"] == {
        "source": "random:0",
        "kind": "random",
        "meaningful": False,
        "file_sha256": None,
        "arrays_sha256": report["weights"]["arrays_sha256"],
    }


def test_overwrite_replaces_a_previous_run(spark, capsys, tmp_path, mixed_folder):
    output = tmp_path / "out"
    owned.mark(str(output))  # what every run of the tool leaves in its OUTPUT
    (output / "stale.txt").write_text("from an older run")
    report, _ = run_ok(
        capsys,
        "--input",
        str(mixed_folder),
        "--output",
        str(output),
        "--weights",
        "random:0",
        "--overwrite",
        "--limit",
        "4",
    )
    assert not (output / "stale.txt").exists()
    assert report["counts"]["files_seen"] == 4
    assert report["settings"]["limit"] == 4


@pytest.mark.slow
def test_end_to_end_on_fruits360_test_split(spark, capsys, tmp_path, weights_files):
    source = shared_fruits("Test")
    output = tmp_path / "fruits-test"
    report, printed = run_ok(
        capsys,
        "--input",
        str(source),
        "--output",
        str(output),
        "--weights",
        str(weights_files["legacy"]),
    )
    counts = report["counts"]
    assert counts["files_seen"] == 2060 and counts["featurized"] == 2060
    assert counts["rejected"] == 0
    assert len(counts["per_label"]) == 103
    assert all(c == {"featurized": 20, "rejected": 0} for c in counts["per_label"].values())
    assert "Apple Braeburn" in counts["per_label"] and "Pineapple Mini" in counts["per_label"]
    assert 1 < report["pca"]["k"] < 1280
    assert len(report["pca"]["cumulative_explained_variance"]) == 1280
    assert report["weights"]["meaningful"] and len(report["weights"]["file_sha256"]) == 64
    assert set(report["versions"]) >= {"python", "spark", "tensorflow", "keras", "onnxruntime"}
    assert report["settings"]["engine"] == "onnxruntime"  # the default
    assert report["versions"]["spark"].startswith("3.5.")
    assert set(report["seconds"]) >= {"list", "model", "extract", "pca", "write", "total"}
    check_outputs(spark, output, report)
    assert "featurized       2060" in printed
    print(f"\nend to end on 2,060 images: {report['seconds']}")

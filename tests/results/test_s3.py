"""Everything the job reads or writes through S3 outside Spark (weights, CSV, report),
against a real moto server."""

from __future__ import annotations

import csv
import io

import boto3
import pytest

from fruits_pipeline.chain.incremental import remove_trained_outputs, trained_outputs
from fruits_pipeline.chain.weights import WeightsError, load_weights, parse_weights_spec
from fruits_pipeline.results import layout, owned, storage
from fruits_pipeline.results.location import OutputExistsError, OutputLocation
from fruits_pipeline.results.writer import write_features_csv


def read_object(bucket: str, key: str) -> str:
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return body.decode("utf-8")


def test_report_and_exists_and_remove_on_s3(bucket):
    uri = f"s3://{bucket}/runs/1/output"
    assert not storage.exists(uri)
    OutputLocation.prepare(uri, overwrite=False)  # nothing there yet: fine
    storage.write_json(storage.join(uri, "report.json"), {"k": 12, "label": "Pêche plate"})
    assert storage.exists(uri)
    assert storage.read_json(storage.join(uri, "report.json"))["label"] == "Pêche plate"
    assert '"k": 12' in read_object(bucket, "runs/1/output/report.json")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        OutputLocation.prepare(uri, overwrite=False)
    # a prefix without the tool's marker is not replaced, even with --overwrite
    with pytest.raises(owned.ForeignPathError, match="not written by"):
        OutputLocation.prepare(uri, overwrite=True)
    with pytest.raises(owned.ForeignPathError):
        owned.remove(uri, owner=uri)
    assert storage.exists(storage.join(uri, "report.json"))
    owned.mark(uri)
    location = OutputLocation.prepare(uri + "/", overwrite=True)
    assert location.in_place and location.final == uri
    location.begin()  # removes the previous run, and marks the prefix as the new run's
    assert storage.list_names(uri) == [layout.OWNER_MARKER]


def test_a_kept_previous_run_on_s3_loses_its_finished_markers_first(bucket):
    """An incremental run keeps the previous run's tables (it reads them), but the prefix
    must stop looking finished before anything is rewritten."""
    uri = f"s3://{bucket}/runs/2/output"
    for name in (layout.REPORT_JSON, layout.SUCCESS, "features/part-0.parquet"):
        storage.write_text(storage.join(uri, name), "from the previous run")
    owned.mark(uri)
    location = OutputLocation.prepare(uri, overwrite=True)
    location.begin(keep_previous=True)
    assert not storage.exists(storage.join(uri, layout.REPORT_JSON))
    assert not storage.exists(storage.join(uri, layout.SUCCESS))
    assert storage.exists(storage.join(uri, "features/part-0.parquet"))


@pytest.mark.spark
def test_features_csv_streams_to_s3(spark, bucket, tmp_path):
    rows = [
        (f"s3://{bucket}/in/Kiwi/{i}.jpg", "Kiwi, green", [float(i), -i / 3.0]) for i in range(2500)
    ]
    frame = spark.createDataFrame(rows, "path string, label string, pca_features array<float>")
    uri = f"s3a://{bucket}/out/features_pca.csv"  # EMRFS/S3A style URIs work too
    # the parts stay local here: this session's Python workers started before the bucket's
    # credentials were set (on EMR they are under OUTPUT); the driver joins them on S3
    parts = str(tmp_path / "parts")
    assert write_features_csv(frame.repartition(3), uri, 2, parts) == 2500
    table = list(csv.reader(io.StringIO(read_object(bucket, "out/features_pca.csv"))))
    assert table[0] == ["path", "label", "pc_1", "pc_2"]
    assert len(table) == 2501
    assert [line[0] for line in table[1:]] == sorted(r[0] for r in rows)
    first = dict(zip(table[0], table[1], strict=False))
    assert first["label"] == "Kiwi, green"  # quoted, not split
    assert float(first["pc_2"]) == pytest.approx(-0.0)


def test_weights_file_from_s3(bucket, weights_files):
    local = load_weights(parse_weights_spec(str(weights_files["keras3"])))
    boto3.client("s3").upload_file(str(weights_files["keras3"]), bucket, "models/w.weights.h5")
    remote = load_weights(parse_weights_spec(f"s3://{bucket}/models/w.weights.h5"))
    assert remote.file_sha256 == local.file_sha256
    assert remote.arrays_sha256 == local.arrays_sha256
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(parse_weights_spec(f"s3://{bucket}/models/missing.h5"))


def test_an_incremental_run_on_s3_drops_the_previous_classifier(bucket):
    """On S3 an incremental run rewrites the previous run in place, keeping its tables to
    reuse them: what `train` made from the old features must not survive (job.py finds it
    before the run begins and removes it once it has)."""
    uri = f"s3://{bucket}/runs/3/output"
    kept = ["features/part-0.parquet", f"{layout.PLOTS}/{layout.LABELS_PNG}"]
    trained = [
        f"{layout.CLASSIFIER}/metadata/part-00000",
        f"{layout.CLASSIFIER}/stages/0_LogisticRegression/data/part-0.parquet",
        f"{layout.PLOTS}/{layout.CONFUSION_MATRIX_PNG}",
    ]
    for name in [layout.REPORT_JSON, layout.SUCCESS, *kept, *trained]:
        storage.write_text(storage.join(uri, name), "from the previous run")
    owned.mark(uri)
    found = trained_outputs(uri)
    assert found == list(layout.TRAINED_ON_FEATURES)
    location = OutputLocation.prepare(uri, overwrite=True)
    location.begin(keep_previous=True)
    remove_trained_outputs(location, found)
    assert [name for name in trained if storage.exists(storage.join(uri, name))] == []
    assert all(storage.exists(storage.join(uri, name)) for name in kept)
    assert trained_outputs(uri) == []

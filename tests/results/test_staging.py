"""OUTPUT's lock and the resumable staging, on local folders and on the moto S3 server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fruits_pipeline.chain.extract import STORED_COLUMNS, stored_arrow_schema
from fruits_pipeline.results import layout, lock, storage
from fruits_pipeline.results.location import OutputLocation
from fruits_pipeline.results.lock import Holder, LockLostError, OutputBusyError, lock_for
from fruits_pipeline.results.report import ProvenanceFacts
from fruits_pipeline.results.staging import finished_units, open_staging, write_unit


def provenance(engine: str = "onnxruntime") -> ProvenanceFacts:
    return ProvenanceFacts(
        key=f"key-of-{engine}",
        engine=engine,
        network_sha256="ab" * 32,
        precision="float32",
        weights_arrays_sha256="cd" * 32,
        versions={"fruits_pipeline": "0.1.0"},
    )


def rows(*names: str) -> pd.DataFrame:
    stamp = pd.Timestamp("2024-05-01 12:00:00.123456")
    return pd.DataFrame(
        [(f"file:/in/Kiwi/{n}", "Kiwi", 10, stamp, [0.5] * 4, None) for n in names],
        columns=STORED_COLUMNS,
    )


def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# -- the lock ------------------------------------------------------------------------------


def test_a_second_run_is_refused_naming_the_first(tmp_path):
    location = OutputLocation.prepare(str(tmp_path / "out"), overwrite=False)
    with location.claimed("a" * 32):
        holder = json.loads((tmp_path / ".out.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["run_id"] == "a" * 32
        with pytest.raises(OutputBusyError, match=f"run aaaaaaaaaaaa .*pid {os.getpid()}"):
            location.check_free()
        with pytest.raises(OutputBusyError, match="is being written by run aaaaaaaaaaaa"):
            with OutputLocation.prepare(str(tmp_path / "out"), overwrite=False).claimed("b"):
                pass
    assert not (tmp_path / ".out.lock").exists()  # released, and nothing left beside OUTPUT
    location.check_free()
    with location.claimed("c"):
        pass


def test_a_killed_holder_frees_the_local_lock_at_once(tmp_path):
    code = (
        "import sys, time\n"
        "from fruits_pipeline.results.lock import Holder, lock_for\n"
        "lock_for('out', sys.argv[1]).acquire(Holder.this_process('killed-run'))\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    path = tmp_path / ".out.lock"
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    with pytest.raises(OutputBusyError, match="killed-run"):
        lock_for("out", str(path)).acquire(Holder.this_process("second"))
    os.kill(holder.pid, signal.SIGKILL)  # as a lost driver: no cleanup ran
    holder.wait()
    assert path.exists()
    taken = lock_for("out", str(path))
    taken.acquire(Holder.this_process("third"))
    taken.release()


@pytest.fixture
def fast_lease(monkeypatch):
    monkeypatch.setattr(lock, "RENEW_SECONDS", 0.2)


def put_lease(bucket: str, holder: Holder) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key="runs/.out.lock", Body=holder.to_bytes())


def test_s3_lease_is_created_once_and_names_its_holder(bucket, fast_lease):
    uri = f"s3://{bucket}/runs/out"
    first = OutputLocation.prepare(uri, overwrite=False)
    assert first.lock_uri == f"s3://{bucket}/runs/.out.lock"
    with first.claimed("1" * 32):
        tags = boto3.client("s3").get_object_tagging(Bucket=bucket, Key="runs/.out.lock")
        assert {"Key": "fruits-pipeline", "Value": "staging"} in tags["TagSet"]
        time.sleep(0.6)  # renewed a few times with If-Match on its own ETag
        first.check_lock()
        storage.write_text(f"{uri}/features/part-0.parquet", "in place, as S3 runs write")
        # busy, rather than "exists": the live run's OUTPUT is there, half written
        with pytest.raises(OutputBusyError, match=r"run 111111111111 .*renewed \d+ s ago"):
            OutputLocation.prepare(uri, overwrite=False)
        with pytest.raises(OutputBusyError, match="run 111111111111"):
            with OutputLocation.prepare(uri, overwrite=False).claimed("2" * 32):
                pass
    assert not storage.exists(f"s3://{bucket}/runs/.out.lock")


def test_s3_lease_of_a_dead_run_is_taken_over(bucket):
    uri = f"s3://{bucket}/runs/out"
    dead = Holder("d" * 32, Holder.this_process("x").host, dead_pid(), "2024-05-01T12:00:00+00:00")
    put_lease(bucket, dead)  # left by a driver killed on this host
    with OutputLocation.prepare(uri, overwrite=False).claimed("3" * 32):
        body = boto3.client("s3").get_object(Bucket=bucket, Key="runs/.out.lock")["Body"]
        assert Holder.from_bytes(body.read()).run_id == "3" * 32


def test_s3_lease_elsewhere_expires_and_its_loser_does_not_publish(bucket, monkeypatch):
    uri = f"s3://{bucket}/runs/out"
    elsewhere = Holder("e" * 32, "another-host", 4242, "2024-05-01T12:00:00+00:00")
    put_lease(bucket, elsewhere)
    with pytest.raises(OutputBusyError, match="host another-host"):
        with OutputLocation.prepare(uri, overwrite=False).claimed("4" * 32):
            pass
    monkeypatch.setattr(lock, "RENEW_SECONDS", 0.2)
    monkeypatch.setattr(lock, "LEASE_SECONDS", 0)  # every lease looks expired
    loser = OutputLocation.prepare(uri, overwrite=False)
    with loser.claimed("5" * 32):  # takes the expired lease over
        thief = lock_for(uri, loser.lock_uri)
        monkeypatch.setattr(Holder, "dead_on_this_host", lambda self: False)
        thief.acquire(Holder("6" * 32, "third-host", 1, "2024-05-01T12:00:00+00:00"))
        deadline = time.monotonic() + 10
        while loser.lock.lost_to is None and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(LockLostError, match="run 666666666666"):
            loser.check_lock()
    # The loser's release left the thief's lease alone.
    body = boto3.client("s3").get_object(Bucket=bucket, Key="runs/.out.lock")["Body"].read()
    assert Holder.from_bytes(body).run_id == "6" * 32
    thief.release()


def test_conditional_writes_on_the_moto_server(bucket):
    """What the lease relies on, as this moto server answers it."""
    client = boto3.client("s3")
    first = client.put_object(Bucket=bucket, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(client.exceptions.ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=bucket, Key="k", Body=b"2", IfNoneMatch="*")
    second = client.put_object(Bucket=bucket, Key="k", Body=b"3", IfMatch=first["ETag"])
    with pytest.raises(client.exceptions.ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=bucket, Key="k", Body=b"4", IfMatch=first["ETag"])
    assert client.get_object(Bucket=bucket, Key="k")["ETag"] == second["ETag"]


# -- the staging ---------------------------------------------------------------------------


def test_a_unit_is_whole_or_absent_and_named_by_its_rows(tmp_path):
    folder = tmp_path / "units"
    name, paths = write_unit(str(folder), rows("a.jpg", "b.jpg"), stored_arrow_schema())
    again, _ = write_unit(str(folder), rows("a.jpg", "b.jpg"), stored_arrow_schema())
    assert again == name  # a retried task writes the same unit, not a second one
    assert paths == ["file:/in/Kiwi/a.jpg", "file:/in/Kiwi/b.jpg"]
    table = pq.read_table(folder / name)
    assert table.column("modificationTime").to_pylist()[0].microsecond == 123456
    # what a worker killed mid-write leaves: a hidden temporary file, never a unit
    (folder / f".{name}.tmp-1234abcd").write_bytes(b"PAR1 half")
    assert finished_units(str(folder)) == [name]


def test_an_unfinished_s3_upload_is_not_a_unit(bucket):
    folder = f"s3://{bucket}/runs/.out.incomplete/extracted.incomplete/run-1"
    name, _ = write_unit(folder, rows("a.jpg"), stored_arrow_schema())
    key = f"runs/.out.incomplete/extracted.incomplete/run-1/{name}"
    tags = boto3.client("s3").get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    assert tags == [{"Key": "fruits-pipeline", "Value": "staging"}]
    # a large unit written by a worker that died before completing its multipart upload
    client = boto3.client("s3")
    upload = client.create_multipart_upload(Bucket=bucket, Key=key.replace(name, "unit-x.parquet"))
    client.upload_part(
        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"], PartNumber=1, Body=b"x"
    )
    assert finished_units(folder) == [name]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_resume_adopts_only_a_staging_of_the_same_provenance(tmp_path, request, where):
    root = (
        str(tmp_path / ".out.incomplete")
        if where == "local"
        else f"s3://{request.getfixturevalue('bucket')}/runs/.out.incomplete"
    )
    first = open_staging(root, "f" * 32, provenance(), resume=True)
    assert first.adopted == [] and "no staging" in first.note
    write_unit(first.units_folder(), rows("a.jpg"), stored_arrow_schema())

    other = open_staging(root, "9" * 32, provenance("tensorflow"), resume=True)
    assert other.adopted == []
    assert "engine onnxruntime, not tensorflow" in other.note
    assert not storage.exists(first.units_folder())  # another key: removed
    write_unit(other.units_folder(), rows("a.jpg"), stored_arrow_schema())

    resumed = open_staging(root, "8" * 32, provenance("tensorflow"), resume=True)
    assert resumed.adopted == ["9" * 32] and resumed.note is None
    assert len(resumed.finished_units("9" * 32)) == 1
    manifest = json.loads(storage.read_bytes(storage.join(root, layout.STAGING_MANIFEST)))
    assert manifest["runs"] == ["9" * 32, "8" * 32]

    fresh = open_staging(root, "7" * 32, provenance("tensorflow"), resume=False)
    assert fresh.adopted == [] and fresh.note == "not reused without --resume"
    assert not storage.exists(resumed.units_folder("9" * 32))


@pytest.mark.spark
def test_workers_write_their_units_to_s3(spark, bucket, moto_endpoint):
    """The Python workers write units through s3fs themselves, each one whole."""
    from fruits_pipeline.chain.extract import store_units

    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        spark.sparkContext.environment[name] = os.environ[name]
    try:
        frame = spark.range(600).selectExpr(
            "concat('s3://in/Kiwi/', id, '.jpg') AS path",
            "'Kiwi' AS label",
            "id AS length",
            "timestamp_micros(id) AS modificationTime",
            "array_repeat(cast(id AS float), 4) AS features",
            "CAST(NULL AS string) AS error",
        )
        folder = f"s3://{bucket}/runs/.out.incomplete/extracted.incomplete/run-2"
        written = store_units(frame.repartition(2), folder).collect()
    finally:
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            spark.sparkContext.environment.pop(name, None)
    assert sorted(u["unit"] for u in written) == finished_units(folder)
    assert sum(u["rows"] for u in written) == 600
    assert sorted(u["rows"] for u in written) == [44, 44, 256, 256]  # 300 per task
    import s3fs

    back = pq.read_table(f"{folder[5:]}/{written[0]['unit']}", filesystem=s3fs.S3FileSystem())
    assert back.num_rows == written[0]["rows"]
    assert Path(back.column("path")[0].as_py()).parent.name == "Kiwi"


@pytest.mark.parametrize(
    "change",
    [
        {"network_sha256": "ef" * 32},  # another quantized network of the same weights
        {"calibration": "digest-of-other-images"},
        {"precision": "int8"},
    ],
)
def test_another_network_is_another_provenance_key(change):
    """--resume adopts a staging only under the run's own key (``open_staging``): units of
    another int8 network must never pass for this one's."""
    from dataclasses import replace

    from fruits_pipeline.chain.provenance import provenance_key

    facts = replace(provenance("onnxruntime-int8"), calibration="digest-of-the-run's-images")
    assert provenance_key(replace(facts, **change)) != provenance_key(facts)


def test_a_unit_is_verified_by_its_check(tmp_path):
    from fruits_pipeline.results.staging import check_name, verified

    folder = str(tmp_path / "units")
    good, _ = write_unit(folder, rows("a.jpg", "b.jpg"), stored_arrow_schema())
    bad, _ = write_unit(folder, rows("c.jpg"), stored_arrow_schema())
    assert verified(folder) == sorted([good, bad])
    unit = tmp_path / "units" / bad
    unit.write_bytes(unit.read_bytes()[:-10])  # half-written
    assert verified(folder) == [good]
    (tmp_path / "units" / check_name(good)).unlink()  # its run died before the check
    assert verified(folder) == []

"""``s3://`` where Spark has no filesystem for it (a laptop, not EMR): one line, exit 2,
before any image is featurized and with nothing written; and no traceback when the S3
endpoint cannot be reached."""

from __future__ import annotations

import boto3
import pytest
from image_files import jpeg_bytes, noise_image
from s3_server import free_port

from fruits_pipeline.chain.filesystems import NoFileSystemError, require_filesystems
from fruits_pipeline.cli import main
from fruits_pipeline.session import session_conf

pytestmark = pytest.mark.spark


def run_line(capsys, *args: str) -> tuple[int, str]:
    """Run ``fruits-pipeline run ARGS`` on the test session; return the exit code and the
    one line it printed on stderr (the test fails on more, or on a traceback)."""
    code = main(["run", *args, "--weights", "random:0"], default_master="local[2,2]")
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return code, lines[0]


def objects(bucket: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def put_images(bucket: str, prefix: str, count: int) -> None:
    client = boto3.client("s3")
    for index in range(count):
        body = jpeg_bytes(noise_image(index))
        client.put_object(Bucket=bucket, Key=f"{prefix}/Kiwi/{index}.jpg", Body=body)


def test_an_s3_input_off_emr_is_refused_naming_what_to_add(spark, bucket, tmp_path, capsys):
    put_images(bucket, "in", 3)  # the input exists: the refusal is about Spark, not S3
    output = tmp_path / "out"

    code, line = run_line(capsys, "--input", f"s3://{bucket}/in", "--output", str(output))

    assert code == 2
    assert line.startswith(f"fruits-pipeline: error: --input 's3://{bucket}/in': "), line
    assert 'No FileSystem for scheme "s3"' in line
    hadoop = spark.sparkContext._jvm.org.apache.hadoop.util.VersionInfo.getVersion()
    for words in (f"org.apache.hadoop:hadoop-aws:{hadoop}", "aws-java-sdk-bundle", "EMR"):
        assert words in line
    assert "spark.hadoop.fs.s3.impl=org.apache.hadoop.fs.s3a.S3AFileSystem" in line
    assert list(tmp_path.iterdir()) == []  # no OUTPUT, no lock, no staging
    assert objects(bucket) == [f"in/Kiwi/{index}.jpg" for index in range(3)]


def test_an_s3_output_off_emr_is_refused_before_anything_is_written(
    spark, bucket, tmp_path, capsys
):
    source = tmp_path / "in" / "Kiwi"
    source.mkdir(parents=True)
    for index in range(3):
        (source / f"{index}.jpg").write_bytes(jpeg_bytes(noise_image(index)))

    code, line = run_line(
        capsys, "--input", str(tmp_path / "in"), "--output", f"s3a://{bucket}/runs/out"
    )

    assert code == 2
    assert line.startswith(f"fruits-pipeline: error: --output 's3a://{bucket}/runs/out': ")
    assert "S3AFileSystem not found" in line  # s3a:// is known to Hadoop, its jar is not
    assert "hadoop-aws" in line
    assert objects(bucket) == []  # no lock, no staging, no rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_transform_with_an_s3_input_off_emr_is_refused(
    spark, bucket, tmp_path, small_run, capsys
):
    run = small_run
    put_images(bucket, "new", 2)
    output = tmp_path / "out2"

    code = main(
        ["transform", "--model", str(run.output), "--input", f"s3://{bucket}/new"]
        + ["--output", str(output), "--master", "local[2,2]"],
        default_master="local[2,2]",
    )

    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and f"--input 's3://{bucket}/new'" in lines[0], lines
    assert "hadoop-aws" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_the_check_asks_the_jvm_not_the_master(spark):
    """EMR's answer for s3:// is a class in fs.s3.impl (EMRFS): any class that is there
    passes, whatever the master; a class that is not there is refused."""
    uris = {"--input": "s3://bucket/in", "--output": "/tmp/out"}
    with pytest.raises(NoFileSystemError, match="--input 's3://bucket/in'"):
        require_filesystems(spark, uris)
    with session_conf(spark, {"fs.s3.impl": "org.apache.hadoop.fs.RawLocalFileSystem"}):
        require_filesystems(spark, uris)  # a filesystem for s3://: the run goes on
    with session_conf(spark, {"fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem"}):
        with pytest.raises(NoFileSystemError, match="S3AFileSystem not found"):
            require_filesystems(spark, uris)


def test_an_unreachable_endpoint_is_one_line(spark, moto_endpoint, tmp_path, capsys, monkeypatch):
    nobody = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", nobody)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    source = tmp_path / "in" / "Kiwi"
    source.mkdir(parents=True)
    (source / "0.jpg").write_bytes(jpeg_bytes(noise_image(0)))

    code, line = run_line(
        capsys, "--input", str(tmp_path / "in"), "--output", "s3://fruits-nobody/out"
    )

    assert code == 2
    assert line.startswith("fruits-pipeline: error: cannot reach S3: "), line
    assert f"AWS_ENDPOINT_URL={nobody}" in line

"""The submitter against a real S3/EMR-speaking HTTP server (moto's standalone server on
127.0.0.1): uploads and their encryption, the cluster and step EMR records, the guards,
--dry-run, --wait and the presigned links.

moto never runs a step, so nothing here waits for one to finish: the tests read back what
the server recorded, and make the state changes themselves (terminating a cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError

from fruits_pipeline.emr import aws, cli, guards, s3paths

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
SUBMITTER = ROOT / "scripts" / "submit_step.py"


def argv_for(bucket: str, *extra: str, run_id: str = "r1") -> list[str]:
    return ["--bucket", bucket, "--input", f"s3://{bucket}/data/Test/", "--run-id", run_id, *extra]


def cluster_named(emr, name: str) -> dict:
    """Return the one cluster called ``name`` (moto keeps every test's clusters)."""
    states = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING", "TERMINATED"]
    found = [c for c in emr.list_clusters(ClusterStates=states)["Clusters"] if c["Name"] == name]
    assert len(found) == 1, found
    return emr.describe_cluster(ClusterId=found[0]["Id"])["Cluster"]


def keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_create_uploads_encrypted_code_and_starts_the_cluster(s3, emr, private_bucket, capsys):
    run_id = "create-1"
    argv = argv_for(private_bucket, "--create", run_id=run_id) + ["--", "--limit", "40"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out

    code = f"fruits-pipeline/runs/{run_id}/code/"
    assert keys(s3, private_bucket) == [
        code + name
        for name in ("bootstrap-emr.sh", "fruits_pipeline.zip", "requirements.txt", "spark_job.py")
    ]
    for key in keys(s3, private_bucket):
        head = s3.head_object(Bucket=private_bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256", key
        assert head["Metadata"]["run-id"] == run_id
    requirements = s3.get_object(Bucket=private_bucket, Key=code + "requirements.txt")
    assert b"numpy==1.26.4" in requirements["Body"].read()
    entry = s3.get_object(Bucket=private_bucket, Key=code + "spark_job.py")["Body"].read()
    assert entry == (ROOT / "scripts" / "spark_job.py").read_bytes()

    cluster = cluster_named(emr, f"fruits-pipeline {run_id}")
    assert cluster["ReleaseLabel"].startswith("emr-7.")
    assert cluster["AutoTerminate"] is True  # KeepJobFlowAliveWhenNoSteps=false
    assert cluster["LogUri"] == f"s3://{private_bucket}/fruits-pipeline/runs/{run_id}/logs/"
    assert {"Key": "run-id", "Value": run_id} in cluster["Tags"]
    classes = [c["Classification"] for c in cluster["Configurations"]]
    assert classes == ["spark-env", "spark-defaults"]
    actions = emr.list_bootstrap_actions(ClusterId=cluster["Id"])["BootstrapActions"]
    assert [(a["ScriptPath"], a["Args"]) for a in actions] == [
        (f"s3://{private_bucket}/{code}bootstrap-emr.sh", [f"s3://{private_bucket}/{code}"])
    ]
    groups = emr.list_instance_groups(ClusterId=cluster["Id"])["InstanceGroups"]
    assert sorted((g["InstanceGroupType"], g["RequestedInstanceCount"]) for g in groups) == [
        ("CORE", 2),
        ("MASTER", 1),
    ]

    (step,) = emr.list_steps(ClusterId=cluster["Id"])["Steps"]
    assert step["ActionOnFailure"] == "TERMINATE_CLUSTER"
    assert step["Config"]["Jar"] == "command-runner.jar"
    assert step["Config"]["Args"] == [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--conf",
        "spark.yarn.maxAppAttempts=1",
        "--py-files",
        f"s3://{private_bucket}/{code}fruits_pipeline.zip",
        f"s3://{private_bucket}/{code}spark_job.py",
        "run",
        "--input",
        f"s3://{private_bucket}/data/Test/",
        "--output",
        f"s3://{private_bucket}/fruits-pipeline/runs/{run_id}/output/",
        "--limit",
        "40",
    ]
    assert f"cluster  {cluster['Id']} (new, transient" in out
    assert f"step     {step['Id']}" in out
    assert f"logs/{cluster['Id']}/steps/{step['Id']}/stderr.gz" in out


def test_step_on_a_running_cluster_with_kms(s3, emr, private_bucket, capsys):
    running = emr.run_job_flow(
        Name="someone else's cluster",
        ReleaseLabel="emr-7.12.0",
        LogUri=f"s3://{private_bucket}/shared-logs/",
        Instances={
            "MasterInstanceType": "m5.xlarge",
            "InstanceCount": 1,
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]
    argv = argv_for(private_bucket, "--cluster-id", running, "--kms-key-id", "alias/fruits")
    assert cli.main(argv) == 0
    (step,) = emr.list_steps(ClusterId=running)["Steps"]
    assert step["ActionOnFailure"] == "CONTINUE"
    assert step["Config"]["Args"][:3] == ["spark-submit", "--deploy-mode", "cluster"]
    for key in keys(s3, private_bucket):
        head = s3.head_object(Bucket=private_bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
    out = capsys.readouterr().out
    # the logs are where that cluster keeps them
    assert f"shared-logs/{running}/steps/{step['Id']}/stderr.gz" in out
    emr.terminate_job_flows(JobFlowIds=[running])
    assert cli.main(argv_for(private_bucket, "--cluster-id", running, run_id="r2")) == 2
    assert f"cluster {running} is TERMINATED" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["public access block", "encryption"])
def test_bucket_that_is_not_private_is_refused(s3, emr, new_bucket, capsys, missing):
    bucket = new_bucket(private=False)
    if missing == "encryption":
        blocked = dict.fromkeys(guards.PUBLIC_ACCESS_FLAGS, True)
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=blocked)
    clusters_before = len(emr.list_clusters()["Clusters"])
    assert cli.main(argv_for(bucket, "--create")) == 2
    err = capsys.readouterr().err
    assert f"bucket {bucket} is not private enough" in err
    assert "no default encryption" in err
    assert ("no Block Public Access" in err) == (missing == "public access block")
    assert keys(s3, bucket) == []  # nothing uploaded
    assert len(emr.list_clusters()["Clusters"]) == clusters_before  # nothing started


def test_force_goes_on_with_warnings_and_never_opens_the_bucket(s3, new_bucket, capsys):
    bucket = new_bucket(private=False)
    assert cli.main(argv_for(bucket, "--create", "--force")) == 0
    err = capsys.readouterr().err
    assert "no Block Public Access configuration (--force given)" in err
    assert len(keys(s3, bucket)) == 4
    # The submitter never writes a bucket policy or an ACL: all stays owner-only.
    with pytest.raises(ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket=bucket)
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    for key in keys(s3, bucket):
        grants = s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
        assert [g["Grantee"].get("Type") for g in grants] == ["CanonicalUser"]
    sources = [
        ROOT / "scripts" / "submit_step.py",
        *(ROOT / "src/fruits_pipeline/emr").glob("*.py"),
    ]
    assert len(sources) > 5
    for path in sources:
        source = path.read_text()
        for call in (
            "put_bucket_policy",
            "put_bucket_acl",
            "put_object_acl",
            "ACL=",
            "public-read",
        ):
            assert call not in source, path


def test_bucket_outside_the_eu_is_refused(s3, emr, new_bucket, capsys):
    bucket = new_bucket(region="us-west-2")
    assert cli.main(argv_for(bucket, "--create")) == 2
    assert f"bucket {bucket} is in us-west-2, outside the EU" in capsys.readouterr().err
    assert keys(s3, bucket) == []
    assert cli.main(argv_for(bucket, "--create", "--allow-non-eu", run_id="r2")) == 0
    assert "outside the EU (--allow-non-eu given)" in capsys.readouterr().err


def test_input_bucket_outside_the_eu_is_refused(s3, private_bucket, new_bucket, capsys):
    elsewhere = new_bucket("-us", region="us-east-1")
    argv = ["--bucket", private_bucket, "--input", f"s3://{elsewhere}/Test/", "--create"]
    assert cli.main(argv) == 2
    assert f"bucket {elsewhere} is in us-east-1" in capsys.readouterr().err
    assert keys(s3, private_bucket) == []


class RecordingHandler(BaseHTTPRequestHandler):
    """Records every request it gets and answers 500: an endpoint nothing should call."""

    seen: list[str] = []

    def _record(self):
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(500)
        self.end_headers()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _record

    def log_message(self, *args):
        pass


@pytest.fixture
def recording_endpoint(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    RecordingHandler.seen = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_port}")
    yield RecordingHandler.seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("where", ["--create", "--cluster-id"])
def test_dry_run_prints_every_request_and_calls_nothing(aws_env, recording_endpoint, capsys, where):
    argv = argv_for("fruits-eu", *([where, "j-1ABC"] if where == "--cluster-id" else [where]))
    assert cli.main([*argv, "--dry-run", "--wait", "--share", "--", "--limit", "5"]) == 0
    assert recording_endpoint == []  # not one request, not even a read
    requests = json.loads(capsys.readouterr().out)
    operations = [(r["service"], r["operation"]) for r in requests]
    submit = ("emr", "RunJobFlow") if where == "--create" else ("emr", "AddJobFlowSteps")
    checks = [
        ("s3", "GetBucketLocation"),
        ("s3", "GetPublicAccessBlock"),
        ("s3", "GetBucketEncryption"),
    ]
    checks += [("emr", "DescribeCluster")] if where == "--cluster-id" else []
    assert operations == [*checks, *[("s3", "PutObject")] * 4, submit]
    puts = [r["params"] for r in requests if r["operation"] == "PutObject"]
    assert all(p["ServerSideEncryption"] == "AES256" for p in puts)
    assert all(p["Body"].startswith("<") for p in puts)
    steps = requests[-1]["params"]["Steps"]
    assert steps[0]["HadoopJarStep"]["Args"][-2:] == ["--limit", "5"]


def test_dry_run_on_the_real_server_changes_nothing(s3, emr, private_bucket):
    before = len(emr.list_clusters()["Clusters"])
    assert cli.main(argv_for(private_bucket, "--create", "--dry-run")) == 0
    assert keys(s3, private_bucket) == []
    assert len(emr.list_clusters()["Clusters"]) == before


def test_share_prints_presigned_links_that_work_and_expire(s3, private_bucket, capsys):
    run_id = "share-1"
    argv = argv_for(private_bucket, "--create", "--share", "--share-hours", "6", run_id=run_id)
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "they work once the step has succeeded" in out
    stand_ins = {
        "features_pca.csv": (b"path,label,pc_1\n", "text/csv"),
        "report.html": (b"<!doctype html><title>run</title>", "text/html"),
        "report.json": (b'{"k": 3}', "application/json"),
    }
    names = tuple(stand_ins)
    links = dict(line.split() for line in out.splitlines() if line.strip().startswith(names))
    assert set(links) == set(stand_ins)
    # The job writes these later; put stand-ins where it will (stored as binary, as a
    # careless writer would), then follow the links as a reviewer would.
    output = f"fruits-pipeline/runs/{run_id}/output/"
    for name, (body, _) in stand_ins.items():
        s3.put_object(Bucket=private_bucket, Key=output + name, Body=body)
    for name, link in links.items():
        query = parse_qs(urlsplit(link).query)
        assert query["X-Amz-Expires"] == [str(6 * 3600)]
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert urlsplit(link).path.endswith(f"/{output}{name}")
        with urllib.request.urlopen(link, timeout=10) as answer:
            assert answer.status == 200
            assert answer.read() == stand_ins[name][0]
            assert answer.headers["Content-Type"].startswith(stand_ins[name][1])


def test_links_for_aws_are_https_and_regional(monkeypatch):
    """Signing is local (no request): without the test endpoint, links point at AWS itself."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    signer = aws.Aws("eu-west-1", None)
    layout = s3paths.RunLayout("fruits-eu", "fruits-pipeline/runs/r1")
    links = dict(cli.share_links(signer, layout, hours=168))
    link = urlsplit(links["report.json"])
    assert link.scheme == "https"
    assert link.netloc == "fruits-eu.s3.eu-west-1.amazonaws.com"
    assert link.path == "/fruits-pipeline/runs/r1/output/report.json"
    assert parse_qs(link.query)["X-Amz-Expires"] == ["604800"]  # 7 days, SigV4's maximum


def test_wait_reports_the_cluster_ending_before_the_step(emr, private_bucket, aws_env):
    """The real CLI in a subprocess, --wait polling moto; the test ends the cluster."""
    run_id = "wait-1"
    argv = argv_for(private_bucket, "--create", "--wait", "--poll-seconds", "1", run_id=run_id)
    process = subprocess.Popen(
        [str(PYTHON), str(SUBMITTER), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **aws_env},
    )
    try:
        deadline = time.monotonic() + 30
        cluster_id = None
        while cluster_id is None and time.monotonic() < deadline:
            clusters = emr.list_clusters()["Clusters"]
            cluster_id = next(
                (c["Id"] for c in clusters if c["Name"] == f"fruits-pipeline {run_id}"), None
            )
            time.sleep(0.2)
        assert cluster_id, "the submitter did not start a cluster"
        time.sleep(1.5)  # let it see the step running at least once
        emr.terminate_job_flows(JobFlowIds=[cluster_id])
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 1, err
    states = [line for line in out.splitlines() if line.strip().startswith("[")]
    assert "step RUNNING" in " ".join(states[0].split())
    assert "cluster TERMINATED" in " ".join(states[-1].split())
    assert "did not succeed (the cluster ended first" in out
    assert f"logs/{cluster_id}/steps/" in out and "stderr.gz" in out
    assert "Spark History Server" in out
    assert "private links" not in out

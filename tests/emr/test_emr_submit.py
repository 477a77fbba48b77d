"""The submitter against a real S3/EMR-speaking HTTP server (moto's standalone server on
127.0.0.1): uploads and their encryption, the wheelhouse uploaded once and reused, the
cluster and step EMR records, the guards, --dry-run, --wait, the presigned links, and that
every call the submitter makes is allowed by its policy in docs/emr.md.

moto never runs a step, so nothing here waits for one to finish: the tests read back what
the server recorded, and make the state changes themselves (terminating a cluster).  A run
that starts a cluster uses the small kit (tests/emr/small_kit.py), whose wheelhouse pip
builds offline."""

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
from iam import ACCOUNT, calls_of, guide_policies, refused  # tests/emr/iam.py
from small_kit import small_lock  # tests/emr/small_kit.py

from fruits_pipeline.emr import aws, bundle, cli, guards, s3paths, wheelhouse

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
SUBMITTER = ROOT / "scripts" / "submit_step.py"


SUBMITTER_KEY = "submitter"  # the access key the submitter signs with, in the recording


def argv_for(
    bucket: str, *extra: str, run_id: str = "r1", job: tuple[str, ...] = ("--weights", "random:0")
) -> list[str]:
    where = ["--bucket", bucket, "--input", f"s3://{bucket}/data/Test/", "--run-id", run_id]
    return [*where, *extra, "--", *job]


@pytest.fixture
def submit(small_kit):
    """cli.main with the small kit."""
    return lambda argv: cli.main(argv, kit=small_kit)


def wheelhouse_keys(kit: bundle.KitFiles, prefix: str = "fruits-pipeline") -> list[str]:
    lock = small_lock(kit)
    house = wheelhouse.wheelhouse_prefix(prefix, lock.digest)
    names = [wheel.filename for wheel in lock.wheels] + [wheelhouse.LOCK_NAME]
    return sorted(f"{house}/{name}" for name in names)


def submitter_policy(bucket: str, region: str = "eu-west-1", key_id: str = "*") -> dict:
    values = {"BUCKET": bucket, "PREFIX": "fruits-pipeline", "ACCOUNT_ID": ACCOUNT}
    return guide_policies({**values, "REGION": region, "KEY_ID": key_id})["submitter"]


def cluster_named(emr, name: str) -> dict:
    """Return the one cluster called ``name`` (moto keeps every test's clusters)."""
    states = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING", "TERMINATED"]
    found = [c for c in emr.list_clusters(ClusterStates=states)["Clusters"] if c["Name"] == name]
    assert len(found) == 1, found
    return emr.describe_cluster(ClusterId=found[0]["Id"])["Cluster"]


def keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_create_uploads_code_and_wheelhouse_and_starts_the_cluster(
    s3, emr, private_bucket, small_kit, capsys, recording, monkeypatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SUBMITTER_KEY)
    run_id = "create-1"
    job = ("--weights", "random:0", "--limit", "40")
    assert cli.main(argv_for(private_bucket, "--create", run_id=run_id, job=job), small_kit) == 0
    out = capsys.readouterr().out

    code = f"fruits-pipeline/runs/{run_id}/code/"
    assert keys(s3, private_bucket) == [
        code + name
        for name in ("bootstrap-emr.sh", "fruits_pipeline.zip", "requirements.txt", "spark_job.py")
    ] + wheelhouse_keys(small_kit)
    for key in keys(s3, private_bucket):
        head = s3.head_object(Bucket=private_bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key  # the bucket's default
    for key in keys(s3, private_bucket)[:4]:
        assert s3.head_object(Bucket=private_bucket, Key=key)["Metadata"]["run-id"] == run_id
    requirements = s3.get_object(Bucket=private_bucket, Key=code + "requirements.txt")
    assert b"fp-alpha==1.0" in requirements["Body"].read()
    entry = s3.get_object(Bucket=private_bucket, Key=code + "spark_job.py")["Body"].read()
    assert entry == (ROOT / "scripts" / "spark_job.py").read_bytes()

    cluster = cluster_named(emr, f"fruits-pipeline {run_id}")
    assert cluster["ReleaseLabel"].startswith("emr-7.")
    assert cluster["AutoTerminate"] is True  # KeepJobFlowAliveWhenNoSteps=false
    assert cluster["LogUri"] == f"s3://{private_bucket}/fruits-pipeline/runs/{run_id}/logs/"
    assert {"Key": "run-id", "Value": run_id} in cluster["Tags"]
    # AmazonEMRServicePolicy_v2 acts only on resources that carry this tag
    assert {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"} in cluster["Tags"]
    classes = {c["Classification"]: c for c in cluster["Configurations"]}
    assert list(classes) == ["yarn-site", "spark-env", "spark-defaults"]
    # YARN node labels: application masters, so the cluster-mode driver, on core nodes only
    assert classes["yarn-site"]["Properties"] == {
        "yarn.node-labels.enabled": "true",
        "yarn.node-labels.am.default-node-label-expression": "CORE",
    }
    house = f"s3://{private_bucket}/{wheelhouse_keys(small_kit)[0].rsplit('/', 1)[0]}/"
    actions = emr.list_bootstrap_actions(ClusterId=cluster["Id"])["BootstrapActions"]
    assert [(a["ScriptPath"], a["Args"]) for a in actions] == [
        (f"s3://{private_bucket}/{code}bootstrap-emr.sh", [f"s3://{private_bucket}/{code}", house])
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
        "--weights",
        "random:0",
        "--limit",
        "40",
    ]
    assert f"cluster  {cluster['Id']} (new, transient" in out
    assert f"step     {step['Id']}" in out
    assert f"logs/{cluster['Id']}/steps/{step['Id']}/stderr.gz" in out
    assert f"wheels   {house} (3 wheels, uploaded 4 files)" in out
    assert "the bucket's default encryption" in out

    # What went over the wire: no encryption header (the bucket's default applies), and
    # every call allowed by the submitter's policy in docs/emr.md.
    entries = recording.entries(access_key=SUBMITTER_KEY)
    puts = [e for e in entries if e["method"] == "PUT" and "/" in e["url"].split("/", 4)[-1]]
    assert len(puts) == 8
    assert not [e for e in puts if any("server-side-encryption" in h.lower() for h in e["headers"])]
    calls = calls_of(entries, "eu-west-1")
    assert {c.action for c in calls} >= {
        "s3:GetBucketLocation",
        "s3:GetBucketPublicAccessBlock",
        "s3:GetEncryptionConfiguration",
        "s3:ListBucket",
        "s3:PutObject",
        "elasticmapreduce:RunJobFlow",
        "elasticmapreduce:AddTags",
        "elasticmapreduce:PutAutoTerminationPolicy",
        "iam:PassRole",
        "elasticmapreduce:ListSteps",
    }
    assert refused(submitter_policy(private_bucket), calls) == []


def test_the_wheelhouse_is_uploaded_once_per_lock_and_reused(
    s3, private_bucket, small_kit, submit, capsys, caplog, recording
):
    house_keys = wheelhouse_keys(small_kit)
    argv = argv_for(private_bucket, "--create", "--dry-run", run_id="w0")
    assert submit(argv) == 0
    assert "would be uploaded: 3 of 3 wheels and the lock" in capsys.readouterr().err
    assert keys(s3, private_bucket) == []

    assert submit(argv_for(private_bucket, "--create", run_id="w1")) == 0
    assert "uploaded 4 files" in capsys.readouterr().out
    assert [k for k in keys(s3, private_bucket) if "/wheelhouse/" in k] == house_keys
    first = {k: s3.head_object(Bucket=private_bucket, Key=k)["ETag"] for k in house_keys}

    assert submit(argv_for(private_bucket, "--create", "--dry-run", run_id="w2")) == 0
    err = capsys.readouterr().err
    assert "is complete (3 wheels): reused" in err
    recording.call("reset-recording")
    assert submit(argv_for(private_bucket, "--create", run_id="w3")) == 0
    assert "(3 wheels, reused)" in capsys.readouterr().out
    writes = [e for e in recording.entries() if e["method"] in ("PUT", "POST")]
    wheel_puts = [e for e in writes if "/fruits-pipeline/wheelhouse/" in e["url"]]
    assert wheel_puts == []  # no second upload
    assert {k: s3.head_object(Bucket=private_bucket, Key=k)["ETag"] for k in house_keys} == first
    assert len([k for k in keys(s3, private_bucket) if k.endswith("/code/spark_job.py")]) == 2

    # A wheel lost from S3 is uploaded again, alone, and the lock after it.
    lost = house_keys[0]
    s3.delete_object(Bucket=private_bucket, Key=lost)
    recording.call("reset-recording")
    assert submit(argv_for(private_bucket, "--create", run_id="w4")) == 0
    puts = [e for e in recording.entries() if e["method"] == "PUT" and "/wheelhouse/" in e["url"]]
    names = [e["url"].rsplit("/", 1)[1] for e in puts]
    assert names == [lost.rsplit("/", 1)[1], wheelhouse.LOCK_NAME]


def running_cluster(emr, log_uri: str) -> str:
    """Start a cluster that stays up without steps, as one started earlier would; return
    its id."""
    return emr.run_job_flow(
        Name="a running cluster",
        ReleaseLabel="emr-7.12.0",
        LogUri=log_uri,
        Instances={
            "MasterInstanceType": "m5.xlarge",
            "InstanceCount": 1,
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]


def test_step_on_a_running_cluster_with_kms(s3, emr, private_bucket, capsys):
    running = running_cluster(emr, f"s3://{private_bucket}/shared-logs/")
    argv = argv_for(private_bucket, "--cluster-id", running, "--kms-key-id", "alias/fruits")
    assert cli.main(argv) == 0
    assert not [k for k in keys(s3, private_bucket) if "/wheelhouse/" in k]  # set up already
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
def test_bucket_that_is_not_private_is_refused(s3, emr, new_bucket, capsys, missing, submit):
    bucket = new_bucket(private=False)
    if missing == "encryption":
        blocked = dict.fromkeys(guards.PUBLIC_ACCESS_FLAGS, True)
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=blocked)
    clusters_before = len(emr.list_clusters()["Clusters"])
    assert submit(argv_for(bucket, "--create")) == 2
    err = capsys.readouterr().err
    assert f"bucket {bucket} is not private enough" in err
    assert "no default encryption" in err
    assert ("no Block Public Access" in err) == (missing == "public access block")
    assert keys(s3, bucket) == []  # nothing uploaded
    assert len(emr.list_clusters()["Clusters"]) == clusters_before  # nothing started


def test_force_goes_on_with_warnings_and_never_opens_the_bucket(s3, new_bucket, capsys, submit):
    bucket = new_bucket(private=False)
    assert submit(argv_for(bucket, "--create", "--force")) == 0
    err = capsys.readouterr().err
    assert "no Block Public Access configuration (--force given)" in err
    assert len(keys(s3, bucket)) == 4 + 4  # the code, the wheelhouse
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


def test_bucket_outside_the_eu_is_refused(s3, emr, new_bucket, capsys, submit):
    bucket = new_bucket(region="us-west-2")
    assert submit(argv_for(bucket, "--create")) == 2
    assert f"bucket {bucket} is in us-west-2, outside the EU" in capsys.readouterr().err
    assert keys(s3, bucket) == []
    assert submit(argv_for(bucket, "--create", "--allow-non-eu", run_id="r2")) == 0
    assert "outside the EU (--allow-non-eu given)" in capsys.readouterr().err


def test_input_bucket_outside_the_eu_is_refused(s3, private_bucket, new_bucket, capsys):
    elsewhere = new_bucket("-us", region="us-east-1")
    argv = ["--bucket", private_bucket, "--input", f"s3://{elsewhere}/Test/", "--create"]
    assert cli.main([*argv, "--", "--weights", "random:0"]) == 2
    assert f"bucket {elsewhere} is in us-east-1" in capsys.readouterr().err
    assert keys(s3, private_bucket) == []


class RecordingHandler(BaseHTTPRequestHandler):
    """Records every request it gets; answers a bucket listing with an empty one, anything
    else with 500: an endpoint nothing should write to."""

    seen: list[str] = []

    def _record(self):
        self.seen.append(f"{self.command} {self.path}")
        if self.command == "GET" and "list-type=2" in self.path:
            body = b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            body += b"<KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
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
def test_dry_run_prints_every_request_and_writes_nothing(
    aws_env, recording_endpoint, capsys, where
):
    argv = argv_for("fruits-eu", *([where, "j-1ABC"] if where == "--cluster-id" else [where]))
    argv = [*argv[:-3], "--dry-run", "--wait", "--share", "--", "--weights", "random:0"]
    assert cli.main([*argv, "--limit", "5"]) == 0
    lock = wheelhouse.read_lock(bundle.KitFiles.find().lock("x86_64"), "x86_64")
    house = f"fruits-pipeline%2Fwheelhouse%2F{lock.digest}%2F"
    if where == "--create":  # one read: is the wheelhouse there already?
        (listing,) = recording_endpoint
        assert listing.startswith("GET /fruits-eu?list-type=2") and house in listing
    else:  # a running cluster installs nothing: not one request, not even a read
        assert recording_endpoint == []
    out, err = capsys.readouterr()
    requests = json.loads(out)
    operations = [(r["service"], r["operation"]) for r in requests]
    submit = ("emr", "RunJobFlow") if where == "--create" else ("emr", "AddJobFlowSteps")
    checks = [
        ("s3", "GetBucketLocation"),
        ("s3", "GetPublicAccessBlock"),
        ("s3", "GetBucketEncryption"),
    ]
    checks += [("emr", "DescribeCluster")] if where == "--cluster-id" else []
    wheels = [("s3", "ListObjectsV2"), *[("s3", "PutObject")] * (len(lock.wheels) + 1)]
    wheels = wheels if where == "--create" else []
    assert operations == [*checks, *wheels, *[("s3", "PutObject")] * 4, submit]
    puts = [r["params"] for r in requests if r["operation"] == "PutObject"]
    assert not [p for p in puts if "ServerSideEncryption" in p]
    assert all(p["Body"].startswith("<") for p in puts)
    steps = requests[-1]["params"]["Steps"]
    assert steps[0]["HadoopJarStep"]["Args"][-2:] == ["--limit", "5"]
    if where == "--create":
        assert f"would be uploaded: {len(lock.wheels)} of {len(lock.wheels)} wheels" in err
        assert puts[-5]["Key"].endswith("/" + wheelhouse.LOCK_NAME)  # the lock last


def test_dry_run_on_the_real_server_changes_nothing(s3, emr, private_bucket, submit):
    before = len(emr.list_clusters()["Clusters"])
    assert submit(argv_for(private_bucket, "--create", "--dry-run")) == 0
    assert keys(s3, private_bucket) == []
    assert len(emr.list_clusters()["Clusters"]) == before


@pytest.mark.parametrize("where", ["eu-west-1", "dots, eu-central-1"])
def test_share_prints_presigned_links_that_work_and_expire(s3, new_bucket, capsys, submit, where):
    run_id = "share-1"
    bucket = new_bucket("-a") if where == "eu-west-1" else new_bucket(".b.eu", "eu-central-1")
    argv = argv_for(bucket, "--create", "--share", "--share-hours", "6", run_id=run_id)
    assert submit(argv) == 0
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
        s3.put_object(Bucket=bucket, Key=output + name, Body=body)
    region = where.split(", ")[-1]
    for name, link in links.items():
        query = parse_qs(urlsplit(link).query)
        assert query["X-Amz-Expires"] == [str(6 * 3600)]
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert f"/{region}/s3/aws4_request" in query["X-Amz-Credential"][0]  # the bucket's
        assert urlsplit(link).path == f"/{bucket}/{output}{name}"
        with urllib.request.urlopen(link, timeout=10) as answer:
            assert answer.status == 200
            assert answer.read() == stand_ins[name][0]
            assert answer.headers["Content-Type"].startswith(stand_ins[name][1])


@pytest.mark.parametrize(
    ("bucket", "region", "host", "path"),
    [
        ("fruits-eu", "eu-west-1", "fruits-eu.s3.eu-west-1.amazonaws.com", "/"),
        # a name with dots: path-style, as the *.s3 certificate does not cover a.b.s3...
        ("fruits.eu.reports", "eu-west-1", "s3.eu-west-1.amazonaws.com", "/fruits.eu.reports/"),
        # a bucket in another region than --region: its own region's endpoint and signature
        ("fruits-eu", "eu-central-1", "fruits-eu.s3.eu-central-1.amazonaws.com", "/"),
    ],
)
def test_links_for_aws_are_https_and_in_the_buckets_region(
    monkeypatch, bucket, region, host, path
):
    """Signing is local (no request): without the test endpoint, links point at AWS itself."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    signer = aws.Aws("eu-west-1", None)
    layout = s3paths.RunLayout(bucket, "fruits-pipeline/runs/r1")
    links = dict(cli.share_links(signer, layout, hours=168, region=region))
    link = urlsplit(links["report.json"])
    assert link.scheme == "https"
    assert link.netloc == host
    assert link.path == f"{path}fruits-pipeline/runs/r1/output/report.json"
    query = parse_qs(link.query)
    assert query["X-Amz-Expires"] == ["604800"]  # 7 days, SigV4's maximum
    assert query["X-Amz-Credential"][0].endswith(f"/{region}/s3/aws4_request")


def test_wait_reports_the_cluster_ending_before_the_step(
    emr, private_bucket, aws_env, recording, capsys
):
    """The real CLI in a subprocess, --wait polling moto; the test ends the cluster.  What
    the submitter asked of S3 and EMR, its policy in docs/emr.md allows (with a KMS key)."""
    running = running_cluster(emr, f"s3://{private_bucket}/fruits-pipeline/logs/")
    key = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    argv = argv_for(private_bucket, "--cluster-id", running, "--wait", "--poll-seconds", "1")
    argv[-3:-3] = ["--kms-key-id", key, "--share"]
    process = subprocess.Popen(
        [str(PYTHON), str(SUBMITTER), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **aws_env, "AWS_ACCESS_KEY_ID": SUBMITTER_KEY},
    )
    try:
        deadline = time.monotonic() + 30
        while not emr.list_steps(ClusterId=running)["Steps"] and time.monotonic() < deadline:
            time.sleep(0.2)
        if not emr.list_steps(ClusterId=running)["Steps"]:
            process.kill()
            raise AssertionError("the submitter added no step: " + process.communicate()[1])
        time.sleep(1.5)  # let it see the step running at least once
        emr.terminate_job_flows(JobFlowIds=[running])
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 1, err
    states = [line for line in out.splitlines() if line.strip().startswith("[")]
    assert "step RUNNING" in " ".join(states[0].split())
    assert "cluster TERMINATED" in " ".join(states[-1].split())
    assert "did not succeed (the cluster ended first" in out
    assert f"logs/{running}/steps/" in out and "stderr.gz" in out
    assert "Spark History Server" in out
    assert "private links" not in out

    calls = calls_of(recording.entries(access_key=SUBMITTER_KEY), "eu-west-1")
    assert {c.action for c in calls} >= {
        "elasticmapreduce:DescribeCluster",
        "elasticmapreduce:AddJobFlowSteps",
        "elasticmapreduce:DescribeStep",
        "s3:PutObject",
        "kms:GenerateDataKey",
    }
    policy = submitter_policy(private_bucket, key_id=key.rsplit("/", 1)[1])
    assert refused(policy, calls) == []

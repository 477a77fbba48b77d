"""Fixtures of the EMR kit's tests: a moto server on 127.0.0.1 that speaks S3 and EMR (a
real HTTP server, started once per session) with its request recorder, AWS settings pointing
boto3 at it, private buckets, and a small wheelhouse made offline with a kit that locks it
(tests/emr/small_kit.py).  The submitter itself is the package fruits_pipeline.emr, imported
as usual."""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request
from pathlib import Path

import boto3
import pytest
from small_kit import make_kit, make_wheels  # tests/emr/small_kit.py

from fruits_pipeline.emr.bundle import KitFiles

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
REGION = "eu-west-1"

ALL_BLOCKED = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


@pytest.fixture(scope="session")
def emr_server(tmp_path_factory):
    """URL of moto's standalone server on a free 127.0.0.1 port, killed at the end.  Its
    recorder (off until a test starts it) writes to a file of its own."""
    from s3_server import start_moto_server  # tests/s3_server.py

    recording = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_RECORDER_FILEPATH", str(recording))
        process, url = start_moto_server()
    yield url
    process.terminate()
    process.wait(timeout=10)


class Recording:
    """The requests the moto server received while a test recorded (moto's recorder)."""

    def __init__(self, url: str):
        self.url = url

    def call(self, action: str) -> bytes:
        request = urllib.request.Request(f"{self.url}/moto-api/recorder/{action}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read()

    def entries(self, access_key: str | None = None) -> list[dict]:
        """Every recorded request, in order; only those signed with ``access_key`` if given."""
        lines = self.call("download-recording").decode("utf-8").splitlines()
        entries = [json.loads(line) for line in lines if line.strip()]
        if access_key is None:
            return entries
        mark = f"Credential={access_key}/"
        return [e for e in entries if mark in e["headers"].get("Authorization", "")]


@pytest.fixture
def recording(emr_server):
    """Record the moto server's requests during the test."""
    recorder = Recording(emr_server)
    recorder.call("reset-recording")
    recorder.call("start-recording")
    yield recorder
    recorder.call("stop-recording")


@pytest.fixture(scope="session")
def small_wheels(tmp_path_factory) -> dict[str, Path]:
    """The small wheelhouse's wheels, by project name, in a folder of their own."""
    return make_wheels(tmp_path_factory.mktemp("small-wheels"))


@pytest.fixture(scope="session")
def small_kit(tmp_path_factory, small_wheels) -> KitFiles:
    """A kit whose pins and locks are the small wheelhouse's."""
    return make_kit(tmp_path_factory.mktemp("kits") / "small", small_wheels)


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory) -> Path:
    """$XDG_CACHE_HOME for the tests: the submitter keeps built wheelhouses there."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture
def aws_env(emr_server, monkeypatch, small_wheels, wheel_cache) -> dict[str, str]:
    """Dummy credentials and AWS_ENDPOINT_URL for this test only; pip without an index or
    configuration, finding only the small wheels; returns the variables."""
    values = {
        "AWS_ENDPOINT_URL": emr_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(next(iter(small_wheels.values())).parent),
        "PIP_CONFIG_FILE": os.devnull,
        "XDG_CACHE_HOME": str(wheel_cache),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    # the project's own AWS CLI (a dev dependency) first on PATH, for the bootstrap script
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    return values


@pytest.fixture
def s3(aws_env):
    return boto3.client("s3", region_name=REGION)


@pytest.fixture
def emr(aws_env):
    return boto3.client("emr", region_name=REGION)


@pytest.fixture
def new_bucket(s3, request):
    """Factory: ``new_bucket(suffix="", region=REGION, private=True)`` creates a bucket unique
    to the test; ``private`` adds Block Public Access and default encryption (SSE-KMS).
    Returns the bucket's name."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:50].strip("-")

    def create(suffix: str = "", region: str = REGION, private: bool = True) -> str:
        name = f"fp-{base}{suffix}"
        client = s3 if region == REGION else boto3.client("s3", region_name=region)
        if region == "us-east-1":
            client.create_bucket(Bucket=name)
        else:
            config = {"LocationConstraint": region}
            client.create_bucket(Bucket=name, CreateBucketConfiguration=config)
        if private:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=ALL_BLOCKED)
            s3.put_bucket_encryption(
                Bucket=name,
                ServerSideEncryptionConfiguration={
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
                },
            )
        return name

    return create


@pytest.fixture
def private_bucket(new_bucket) -> str:
    """A bucket in eu-west-1 with Block Public Access and default encryption."""
    return new_bucket()

"""Fixtures of the EMR kit's tests: a moto server on 127.0.0.1 that speaks S3 and EMR (a
real HTTP server, started once per session), AWS settings pointing boto3 at it, and private
buckets.  The submitter itself is the package fruits_pipeline.emr, imported as usual."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import boto3
import pytest

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
def emr_server():
    """URL of moto's standalone server on a free 127.0.0.1 port, killed at the end."""
    from s3_server import start_moto_server  # tests/s3_server.py

    process, url = start_moto_server()
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def aws_env(emr_server, monkeypatch) -> dict[str, str]:
    """Dummy credentials and AWS_ENDPOINT_URL for this test only; returns the variables."""
    values = {
        "AWS_ENDPOINT_URL": emr_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
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

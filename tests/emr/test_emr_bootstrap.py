"""bootstrap/bootstrap-emr.sh: shellcheck, and real runs against the moto server.

The real runs point the script at the project's .venv instead of EMR's /usr/bin/python3.11
(FRUITS_BOOTSTRAP_PYTHON) and forbid pip any index (PIP_NO_INDEX=1): every pin is already
installed there, so a correct script installs nothing, downloads nothing, and changes
nothing; a pin that is not installed makes it fail, loudly."""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fruits_pipeline.emr import bundle

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "bootstrap" / "bootstrap-emr.sh"
PYTHON = ROOT / ".venv" / "bin" / "python"


def test_shellcheck_passes():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck; .ci/run does)")
    done = subprocess.run([shellcheck, str(BOOTSTRAP)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_script_is_strict_and_executable():
    text = BOOTSTRAP.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(BOOTSTRAP, os.X_OK)
    assert "pip install" in text and "--requirement" in text


def aws_cli_problem() -> str | None:
    """Return why the local AWS CLI cannot stand in for EMR's here, or None if it can.

    It must honour AWS_ENDPOINT_URL (CLI v1 on botocore >= 1.31, CLI v2 >= 2.13), or it
    would talk to AWS itself instead of the moto server."""
    if shutil.which("aws") is None:
        return "the AWS CLI is not installed (the script downloads with it, as on EMR)"
    done = subprocess.run(["aws", "--version"], capture_output=True, text=True)
    text = done.stdout + done.stderr
    cli = re.search(r"aws-cli/(\d+)\.(\d+)", text)
    core = re.search(r"botocore/(\d+)\.(\d+)", text)
    if cli and cli.group(1) == "2" and int(cli.group(2)) >= 13:
        return None
    if cli and cli.group(1) == "1" and core and (int(core.group(1)), int(core.group(2))) >= (1, 31):
        return None
    return f"this AWS CLI ignores AWS_ENDPOINT_URL: {text.strip()!r}"


@pytest.fixture
def bootstrap(aws_env, s3, private_bucket, tmp_path):
    """Run the bootstrap as EMR would, with the code prefix as its argument; returns a
    function (requirements text or None for the submitter's, args) -> CompletedProcess."""
    problem = aws_cli_problem()
    if problem:
        pytest.skip(problem)
    if os.geteuid() != 0:
        pytest.skip("the bootstrap installs as root (sudo on EMR); run the tests as root")
    if not (ctypes.util.find_library("blas") and ctypes.util.find_library("lapack")):
        # Without them the script would install OpenBLAS with dnf, as on EMR.
        pytest.skip("no native BLAS/LAPACK (apt-get install libopenblas0-pthread liblapack3)")
    code = f"s3://{private_bucket}/fruits-pipeline/runs/r1/code/"

    def run(requirements: str | None = None, args: list[str] | None = None):
        text = requirements or bundle.requirements_text(ROOT / "pyproject.toml")
        s3.put_object(
            Bucket=private_bucket,
            Key="fruits-pipeline/runs/r1/code/requirements.txt",
            Body=text.encode(),
            ServerSideEncryption="AES256",
        )
        env = {
            **os.environ,
            **aws_env,
            "FRUITS_BOOTSTRAP_PYTHON": str(PYTHON),
            "PIP_NO_INDEX": "1",
            "TMPDIR": str(tmp_path),
            # Belt and braces: anything not bound for 127.0.0.1 hits a closed local port.
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        return subprocess.run(
            ["bash", str(BOOTSTRAP), *([code] if args is None else args)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    return run


def test_bootstrap_installs_the_pins_and_is_idempotent(bootstrap):
    for attempt in (1, 2):
        done = bootstrap()
        assert done.returncode == 0, f"attempt {attempt}:\n{done.stdout}\n{done.stderr}"
        out = done.stdout
        assert "numpy==1.26.4 (pinned ==1.26.4)" in out
        assert "tensorflow-cpu==2.19.1" in out  # the x86-64 marker was evaluated
        assert "pyspark" not in out.split("requirements from", 1)[1]  # EMR provides it
        assert "MISMATCH" not in out
        assert "native BLAS/LAPACK present" in out and "dnf" not in out
        assert out.rstrip().endswith("the pinned dependencies are installed for " + str(PYTHON))


def test_bootstrap_fails_loudly(bootstrap):
    usage = bootstrap(args=[])
    assert usage.returncode != 0
    assert "FAILED: usage:" in usage.stderr
    wrong_pin = bootstrap(requirements="numpy==1.26.3\n")  # not installed, no index: no way
    assert wrong_pin.returncode != 0
    assert "FAILED: exit 1 from: " in wrong_pin.stderr
    assert "-m pip install --quiet --requirement" in wrong_pin.stderr

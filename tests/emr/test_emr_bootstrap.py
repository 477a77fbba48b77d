"""bootstrap/bootstrap-emr.sh: shellcheck, and real runs against the moto server.

Each run installs the small wheelhouse (tests/emr/small_kit.py), published to the moto server
by the submitter's own code, into a fresh virtual environment (FRUITS_BOOTSTRAP_PYTHON in
place of EMR's /usr/bin/python3.11) with pip's index disabled, and every address but
127.0.0.1 behind a closed proxy port.  Amazon Linux's dnf, rpm and ldconfig are stand-ins on
PATH that play a scenario: the native BLAS present, OpenBLAS installed by dnf and found in
ldconfig's (large) cache or only by rpm, or dnf unable to install it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from iam import calls_of, guide_policies, refused  # tests/emr/iam.py
from small_kit import PACKAGES, small_lock  # tests/emr/small_kit.py

from fruits_pipeline.emr import aws, bundle, wheelhouse

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "bootstrap" / "bootstrap-emr.sh"
NODE_KEY = "node"  # the access key the bootstrap signs with, told apart in the recording
CODE = "fruits-pipeline/runs/r1/code/"


def test_shellcheck_passes():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck; .ci/run does)")
    done = subprocess.run([shellcheck, str(BOOTSTRAP)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_script_is_strict_executable_and_installs_only_from_the_wheelhouse():
    text = BOOTSTRAP.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(BOOTSTRAP, os.X_OK)
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    installs = [line for line in code if "pip install" in line]
    assert installs and all("--no-index" in line for line in installs)
    assert "openblas-serial" in text


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


@pytest.fixture(scope="session")
def pristine_venv(tmp_path_factory) -> Path:
    """A new virtual environment with pip and nothing else, made once; tests copy it."""
    folder = tmp_path_factory.mktemp("venv") / "pristine"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    return folder


@pytest.fixture
def fresh_python(pristine_venv, tmp_path) -> Path:
    """The interpreter of a fresh virtual environment of this test's own."""
    folder = tmp_path / "venv"
    shutil.copytree(pristine_venv, folder, symlinks=True)
    return folder / "bin" / "python"


FILLER = "".join(
    f"\tlibfiller{n}.so.1 (libc6,x86-64) => /usr/lib64/libfiller{n}.so.1\n" for n in range(5000)
)


class FakeSystem:
    """dnf, rpm and ldconfig stand-ins in a folder of their own; the library folder plays
    /usr/lib64.  ``scenario``: 'present' (libblas.so.3 and liblapack.so.3 in the cache),
    'cache' (dnf installs openblas-serial and the refreshed cache lists it first, before
    thousands of lines), 'rpm' (installed, but only rpm knows where), 'dnf-fails'."""

    def __init__(self, folder: Path, scenario: str):
        self.bin, self.lib, self.state = folder / "bin", folder / "lib64", folder / "state"
        for path in (self.bin, self.lib, self.state):
            path.mkdir(parents=True)
        cache = "5002 libs found in cache `/etc/ld.so.cache'\n"
        if scenario == "present":
            for name in ("libblas.so.3", "liblapack.so.3"):
                cache += f"\t{name} (libc6,x86-64) => /usr/lib64/{name}\n"
        (self.state / "ldcache").write_text(cache + FILLER)
        library = self.lib / "libopenblas.so.0"
        self.write(
            "ldconfig",
            f'[[ "${{1:-}}" == -p ]] || exit 0\ncat "{self.state}/ldcache"\n',
        )
        install = f"printf 'ELF' > '{library}'\n"
        if scenario == "cache":
            install += (
                f"{{ printf '5003 libs\\n\\tlibopenblas.so.0 (libc6,x86-64) => {library}\\n'; "
                f"tail -n +2 '{self.state}/ldcache'; }} > '{self.state}/new'\n"
                f"mv '{self.state}/new' '{self.state}/ldcache'\n"
            )
        fails = "echo 'Error: Unable to find a match: openblas-serial' >&2; exit 1\n"
        self.write(
            "dnf",
            f'echo "$*" >> "{self.state}/dnf.log"\n'
            + (fails if scenario == "dnf-fails" else "")
            + f'if [[ " $* " == *" openblas-serial "* ]]; then\n{install}fi\n',
        )
        listing = "/usr/share/doc/openblas-serial" + (
            f"\n{library}" if scenario == "rpm" else ""
        )
        self.write(
            "rpm",
            f'if [[ "$1" == -ql && "$2" == openblas-serial && -e "{library}" ]]; then\n'
            f"  printf '%s\\n' {' '.join(listing.split())}\n  exit 0\nfi\n"
            'echo "package $2 is not installed"; exit 1\n',
        )

    def write(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)

    @property
    def dnf_calls(self) -> list[str]:
        log = self.state / "dnf.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def published(aws_env, s3, private_bucket, small_kit) -> wheelhouse.Wheelhouse:
    """The small wheelhouse published to the moto server by the submitter's own code, and
    the small kit's requirements.txt where the run's code goes."""
    lock = small_lock(small_kit)
    prefix = wheelhouse.wheelhouse_prefix("fruits-pipeline", lock.digest)
    house = wheelhouse.Wheelhouse(private_bucket, prefix, lock, small_kit.lock("x86_64"))
    store = aws.Aws("eu-west-1", None)
    wheelhouse.publish(store, house, wheelhouse.cache_folder(lock.digest), {})
    requirements = bundle.requirements_text(small_kit.pyproject)
    s3.put_object(Bucket=private_bucket, Key=CODE + "requirements.txt", Body=requirements.encode())
    return house


@pytest.fixture
def bootstrap(aws_env, published, fresh_python, tmp_path):
    """Run the bootstrap as EMR would, with the code prefix and the wheelhouse as arguments;
    returns a function (scenario, args) -> (CompletedProcess, FakeSystem)."""
    problem = aws_cli_problem()
    if problem:
        pytest.skip(problem)
    if os.geteuid() != 0:
        pytest.skip("the bootstrap installs as root (sudo on EMR); run the tests as root")
    code = f"s3://{published.bucket}/{CODE}"
    runs = iter(range(100))

    def run(scenario: str = "present", args: list[str] | None = None):
        system = FakeSystem(tmp_path / f"system-{next(runs)}", scenario)
        work = tmp_path / "tmp"
        work.mkdir(exist_ok=True)
        env = {
            **os.environ,
            **aws_env,
            "AWS_ACCESS_KEY_ID": NODE_KEY,
            "PATH": f"{system.bin}{os.pathsep}{os.environ['PATH']}",
            "FRUITS_BOOTSTRAP_PYTHON": str(fresh_python),
            "TMPDIR": str(work),
            # Belt and braces: anything not bound for 127.0.0.1 hits a closed local port.
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        done = subprocess.run(
            ["bash", str(BOOTSTRAP), *([code, published.uri] if args is None else args)],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
        return done, system

    return run


def installed(python: Path) -> dict[str, str]:
    """Return {project: version} of what ``python``'s environment holds, pip aside."""
    probe = (
        "import importlib.metadata as m\n"
        "for d in m.distributions(): print(d.metadata['Name'], d.version)"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    pairs = dict(line.split() for line in done.stdout.splitlines())
    return {name: version for name, version in pairs.items() if name not in ("pip", "setuptools")}


def test_bootstrap_installs_the_wheelhouse_into_a_fresh_venv_and_is_idempotent(
    bootstrap, published, fresh_python, recording, tmp_path
):
    expected = {name: version for name, (version, _) in PACKAGES.items()}
    for attempt in (1, 2):
        done, system = bootstrap()
        assert done.returncode == 0, f"attempt {attempt}:\n{done.stdout}\n{done.stderr}"
        out = done.stdout
        assert "fp-alpha==1.0 (pinned ==1.0)" in out
        assert "fp-gamma==0.3 (pinned ==0.3)" in out  # its marker evaluated on the node
        assert "pyspark" not in out.split("requirements from", 1)[1]  # EMR provides it
        assert "MISMATCH" not in out and "WARNING" not in done.stderr
        assert "native BLAS/LAPACK present" in out and system.dnf_calls == []
        assert "wheelhouse s3://" in out and ": 3 wheels," in out
        assert out.rstrip().endswith(f"the locked wheelhouse is installed for {fresh_python}")
        # the lock's transitive package too, and nothing else
        assert installed(fresh_python) == expected
    assert list((tmp_path / "tmp").iterdir()) == []  # the downloaded wheels are removed

    # What the node asked S3 for, the node's policy in docs/emr.md allows.
    values = {"BUCKET": published.bucket, "PREFIX": "fruits-pipeline"}
    node = guide_policies(values)["instance-profile"]
    calls = calls_of(recording.entries(access_key=NODE_KEY), "eu-west-1")
    assert {call.action for call in calls} == {"s3:GetObject", "s3:ListBucket"}
    assert refused(node, calls) == []


def test_a_missing_or_altered_wheel_fails_in_one_line(bootstrap, published, s3, fresh_python):
    s3.delete_object(Bucket=published.bucket, Key=published.key("fp_beta-2.0-py3-none-any.whl"))
    gamma = published.key("fp_gamma-0.3-py3-none-any.whl")
    s3.put_object(Bucket=published.bucket, Key=gamma, Body=b"not the locked bytes")
    done, _ = bootstrap()
    assert done.returncode != 0
    failed = [line for line in done.stderr.splitlines() if "FAILED" in line]
    assert len(failed) == 1, done.stderr
    assert failed[0].endswith(
        f"FAILED: the wheelhouse {published.uri} lacks the locked wheel of fp-beta==2.0, "
        "fp-gamma==0.3 (a file with another sha256); submitting again uploads what is missing"
    )
    assert installed(fresh_python) == {}  # pip never started


def test_a_wheelhouse_without_its_lock_is_refused(bootstrap, published, s3):
    s3.delete_object(Bucket=published.bucket, Key=published.key(wheelhouse.LOCK_NAME))
    done, _ = bootstrap()
    assert done.returncode != 0
    assert f"has no {wheelhouse.LOCK_NAME}: the submitter uploads it last" in done.stderr


def test_usage_is_one_line():
    done = subprocess.run(["bash", str(BOOTSTRAP), "s3://b/code/"], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "FAILED: usage:" in done.stderr


@pytest.mark.parametrize("scenario", ["cache", "rpm"])
def test_openblas_serial_is_installed_and_linked(bootstrap, scenario):
    done, system = bootstrap(scenario)
    assert done.returncode == 0, done.stdout + done.stderr
    assert system.dnf_calls == ["install -y -q openblas-serial"]
    library = system.lib / "libopenblas.so.0"
    for name in ("libblas.so.3", "liblapack.so.3"):
        link = system.lib / name
        assert link.is_symlink() and Path(os.readlink(link)) == library, name
        assert f"{name} -> {library}" in done.stdout
    assert "WARNING" not in done.stderr


def test_no_native_blas_is_a_warning_not_a_failure(bootstrap, fresh_python):
    done, system = bootstrap("dnf-fails")
    assert done.returncode == 0, done.stdout + done.stderr
    assert system.dnf_calls == ["install -y -q openblas-serial"]
    assert "WARNING: dnf could not install openblas-serial" in done.stderr
    assert not (system.lib / "libblas.so.3").exists()
    assert installed(fresh_python)["fp-alpha"] == "1.0"  # the install went on

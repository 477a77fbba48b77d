#!/usr/bin/env bash
# EMR bootstrap action for fruits-pipeline: runs on every node (primary, core, task) before
# the applications start, as the hadoop user, and installs the job's Python dependencies for
# Python 3.11, the interpreter Spark uses (spark-env PYSPARK_PYTHON=/usr/bin/python3.11).
#
#   bootstrap-emr.sh s3://BUCKET/PREFIX/runs/RUN_ID/code/
#
# The argument is the run's code prefix; scripts/submit_step.py uploads requirements.txt
# there, generated from pyproject.toml's [project] dependencies (the one source of truth,
# exact pins, pyspark left out because EMR's Spark provides it).
#
# Idempotent: installing pinned versions twice changes nothing.  Any failing command stops
# the script with a message naming the line, and EMR then fails the cluster with
# "bootstrap action 1 failed"; the output is under LOG_URI/CLUSTER_ID/node/INSTANCE_ID/
# bootstrap-actions/1/ (stdout.gz, stderr.gz).
set -euo pipefail
set -o errtrace  # the ERR trap below also fires inside functions

# The interpreter to install into; FRUITS_BOOTSTRAP_PYTHON overrides it (the tests point it
# at the project's .venv).
PYTHON="${FRUITS_BOOTSTRAP_PYTHON:-/usr/bin/python3.11}"

log() {
    printf '%s fruits-pipeline bootstrap: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

fail() {
    log "FAILED: $*" >&2
    exit 1
}

trap 'fail "command failed (exit $?) at line ${LINENO}: ${BASH_COMMAND}"' ERR

# Runs "$@" as root and names the command when it fails.  Bootstrap actions run as the
# hadoop user, with password-less sudo.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@" || fail "exit $? from: $*"
    else
        sudo --preserve-env=PIP_DISABLE_PIP_VERSION_CHECK,PIP_NO_CACHE_DIR,PIP_ROOT_USER_ACTION \
            "$@" || fail "exit $? from: sudo $*"
    fi
}

if [[ $# -ne 1 || "$1" != s3://* ]]; then
    fail "usage: $0 s3://BUCKET/PREFIX/runs/RUN_ID/code/ (got: $*)"
fi
CODE_URI="${1%/}"

# Python 3.11 ships with EMR 7.1 and later (Amazon Linux 2023); install it, and its pip,
# from the distribution when a node lacks them.  dnf install is idempotent.
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    log "installing python3.11 with dnf"
    as_root dnf install -y -q python3.11
fi
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    log "installing python3.11-pip with dnf"
    as_root dnf install -y -q python3.11-pip
fi
log "using $("$PYTHON" --version 2>&1) at $PYTHON, $("$PYTHON" -m pip --version)"

# Native BLAS/LAPACK for Spark ML: its PCA decomposes a 1280x1280 matrix on the driver,
# about 1.4 s with OpenBLAS against 7 s in the pure-Java fallback.  Spark's
# dev.ludovic.netlib dlopens libblas.so.3 and liblapack.so.3.  Amazon Linux's openblas
# package ships libopenblas.so.0 (BLAS and LAPACK in one library) under neither name, and
# ldconfig's cache only knows a library by its soname, so each missing name becomes a link
# in /usr/lib64, a directory dlopen searches by file name.  Names that already resolve are
# left alone.  The job's report says which LAPACK Spark used (pca.linear_algebra).
has_library() {
    ldconfig -p | grep -q "[[:space:]]$1 " || [[ -e "/usr/lib64/$1" ]]
}
if has_library libblas.so.3 && has_library liblapack.so.3; then
    log "native BLAS/LAPACK present: libblas.so.3 and liblapack.so.3 resolve"
else
    log "installing OpenBLAS with dnf for Spark ML's BLAS/LAPACK"
    as_root dnf install -y -q openblas
    OPENBLAS="$(ldconfig -p | awk '/[[:space:]]libopenblas\.so\.0 /{print $NF; exit}')"
    [[ -n "$OPENBLAS" ]] || fail "dnf installed openblas but ldconfig does not know libopenblas.so.0"
    for name in libblas.so.3 liblapack.so.3; do
        if ! has_library "$name"; then
            as_root ln -s "$OPENBLAS" "/usr/lib64/$name"
            log "$name -> $OPENBLAS"
        fi
    done
fi

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/fruits-pipeline-bootstrap.XXXXXX")"
aws s3 cp --only-show-errors "$CODE_URI/requirements.txt" "$WORK_DIR/requirements.txt"
log "requirements from $CODE_URI/requirements.txt:"
grep -v '^#' "$WORK_DIR/requirements.txt" | sed 's/^/    /'

# System-wide (as root), because YARN runs the Python workers as other users.  No cache: the
# TensorFlow wheel is large and the root volume is small.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
as_root "$PYTHON" -m pip install --quiet --requirement "$WORK_DIR/requirements.txt"

# Check every pin against what is now installed (markers evaluated here, e.g. tensorflow-cpu
# on x86-64) and log the versions.  pip's vendored `packaging` reads the requirement lines.
log "installed versions:"
"$PYTHON" - "$WORK_DIR/requirements.txt" <<'PYCHECK'
import sys
from importlib.metadata import PackageNotFoundError, version

from pip._vendor.packaging.requirements import Requirement

wrong = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    requirement = Requirement(line)
    if requirement.marker is not None and not requirement.marker.evaluate():
        continue
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        installed = None
    ok = installed is not None and requirement.specifier.contains(installed, prereleases=True)
    print(f"    {requirement.name}=={installed} (pinned {requirement.specifier})"
          f"{'' if ok else '  <-- MISMATCH'}")
    if not ok:
        wrong.append(requirement.name)
if wrong:
    sys.exit("installed versions differ from the pins: " + ", ".join(wrong))
PYCHECK
log "done: the pinned dependencies are installed for $PYTHON"

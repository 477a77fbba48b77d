#!/usr/bin/env bash
# EMR bootstrap action for fruits-pipeline: runs on every node (primary, core, task) before
# the applications start, as the hadoop user, and installs the job's Python dependencies for
# Python 3.11, the interpreter Spark uses (spark-env PYSPARK_PYTHON=/usr/bin/python3.11).
#
#   bootstrap-emr.sh s3://BUCKET/PREFIX/runs/RUN_ID/code/ s3://BUCKET/PREFIX/wheelhouse/DIGEST/
#
# The first argument is the run's code prefix, where the submitter uploaded requirements.txt
# (pyproject.toml's pins, minus pyspark, which EMR's Spark provides).  The second is the
# wheelhouse the submitter uploaded: a wheel for this platform of every package of the lock
# (the whole resolved set, pinned, each with its sha256) and the lock itself,
# requirements-lock.txt.  pip installs from that folder only, with its index disabled: the
# node needs no internet, and every run of the same lock installs the same bytes.
#
# What it reaches: S3 (those two prefixes) and, with dnf, Amazon Linux's repositories (for
# python3.11 when a node lacks it, and OpenBLAS), which a private subnet without NAT reaches
# through an S3 gateway endpoint (docs/emr.md says what its policy must allow).
#
# Idempotent: a second run installs nothing new.  A failing install step stops the script
# with one line naming it, and EMR then fails the cluster with "bootstrap action 1 failed";
# the output is under LOG_URI/CLUSTER_ID/node/INSTANCE_ID/bootstrap-actions/1/ (stdout.gz,
# stderr.gz).  A missing native BLAS only costs the PCA's speed: it is a warning, never a
# failed cluster.
set -euo pipefail
set -o errtrace  # the ERR trap below also fires inside functions

# The interpreter to install into; FRUITS_BOOTSTRAP_PYTHON overrides it (the tests point it
# at a fresh virtual environment).
PYTHON="${FRUITS_BOOTSTRAP_PYTHON:-/usr/bin/python3.11}"
# On Amazon Linux 2023 (Fedora's packaging) the `openblas` package holds the licence and
# docs; the single-threaded library, libopenblas.so.0, is in openblas-serial (-openmp and
# -threads hold libopenblaso.so.0 and libopenblasp.so.0).  Single-threaded, because Spark
# already runs one task per core.
BLAS_PACKAGE="openblas-serial"
BLAS_LIBRARY="libopenblas.so.0"
LOCK_NAME="requirements-lock.txt"

log() {
    printf '%s fruits-pipeline bootstrap: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

warn() {
    log "WARNING: $*" >&2
}

fail() {
    log "FAILED: $*" >&2
    exit 1
}

trap 'fail "command failed (exit $?) at line ${LINENO}: ${BASH_COMMAND}"' ERR

# Runs "$@" as root and returns its status.  Bootstrap actions run as the hadoop user, with
# password-less sudo.
run_as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    else
        sudo --preserve-env=PIP_DISABLE_PIP_VERSION_CHECK,PIP_NO_CACHE_DIR,PIP_ROOT_USER_ACTION \
            "$@"
    fi
}

# Runs "$@" as root; a failure stops the bootstrap with the command's name.
as_root() {
    run_as_root "$@" || fail "exit $? from: $*"
}

if [[ $# -ne 2 || "$1" != s3://* || "$2" != s3://* ]]; then
    fail "usage: $0 s3://BUCKET/PREFIX/runs/RUN_ID/code/ s3://BUCKET/PREFIX/wheelhouse/DIGEST/ (got: $*)"
fi
CODE_URI="${1%/}"
WHEELHOUSE_URI="${2%/}"

# Python 3.11 ships with EMR 7.1 and later (Amazon Linux 2023); install it, and its pip,
# from the distribution when a node lacks them.  dnf install is idempotent.
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    log "installing python3.11 with dnf"
    as_root dnf install -y -q python3.11
fi
if ! PIP_VERSION="$("$PYTHON" -m pip --version 2>/dev/null)"; then
    log "installing python3.11-pip with dnf"
    as_root dnf install -y -q python3.11-pip
    PIP_VERSION="$("$PYTHON" -m pip --version)"
fi
log "using $PYTHON, $PIP_VERSION"

# --- Native BLAS/LAPACK for Spark ML (a warning when it cannot be had) -------------------
# The PCA decomposes a 1280x1280 matrix on the driver, about 1.4 s with OpenBLAS against 7 s
# in Spark's pure-Java fallback.  Spark's dev.ludovic.netlib dlopens libblas.so.3 and
# liblapack.so.3; OpenBLAS's library holds both under neither name, and ldconfig's cache
# knows a library only by its soname, so each missing name becomes a link next to the
# library (on Amazon Linux /usr/lib64, a directory dlopen searches by file name).  The
# job's report says which LAPACK Spark used (pca.linear_algebra).
#
# ldconfig's cache is read once into a variable and searched there: a pipeline like
# `ldconfig -p | awk '... exit'` can end in SIGPIPE (exit 141), which pipefail turns into a
# failure.
LDCACHE=""
read_ldcache() {
    LDCACHE="$(ldconfig -p 2>/dev/null || true)"
}

# Prints where ldconfig's cache says library $1 (a soname) is.
cached_library() {
    local line
    while IFS= read -r line; do
        [[ "$line" == *"$1 "* ]] || continue
        if [[ "$line" =~ ^[[:space:]]*([^[:space:]]+)[[:space:]].*" => "(.+)$ ]] &&
            [[ "${BASH_REMATCH[1]}" == "$1" ]]; then
            printf '%s\n' "${BASH_REMATCH[2]}"
            return 0
        fi
    done <<<"$LDCACHE"
    return 1
}

# Prints the file called $2 that package $1 installed, from rpm's list of its files (when
# ldconfig's cache has not caught up).
packaged_library() {
    local files path
    files="$(rpm -ql "$1" 2>/dev/null || true)"
    while IFS= read -r path; do
        if [[ "${path##*/}" == "$2" ]]; then
            printf '%s\n' "$path"
            return 0
        fi
    done <<<"$files"
    return 1
}

has_library() {
    cached_library "$1" >/dev/null || [[ -e "/usr/lib64/$1" ]]
}

native_blas() {
    read_ldcache
    if has_library libblas.so.3 && has_library liblapack.so.3; then
        log "native BLAS/LAPACK present: libblas.so.3 and liblapack.so.3 resolve"
        return 0
    fi
    log "installing $BLAS_PACKAGE with dnf for Spark ML's BLAS/LAPACK"
    if ! run_as_root dnf install -y -q "$BLAS_PACKAGE"; then
        warn "dnf could not install $BLAS_PACKAGE: Spark ML falls back to pure-Java BLAS (a slower PCA, the same results)"
        return 0
    fi
    read_ldcache
    local library
    library="$(cached_library "$BLAS_LIBRARY" || packaged_library "$BLAS_PACKAGE" "$BLAS_LIBRARY" || true)"
    if [[ -z "$library" ]]; then
        warn "$BLAS_PACKAGE is installed but $BLAS_LIBRARY is neither in ldconfig's cache nor in rpm's list: Spark ML falls back to pure-Java BLAS"
        return 0
    fi
    local name
    for name in libblas.so.3 liblapack.so.3; do
        if has_library "$name" || [[ -e "${library%/*}/$name" ]]; then
            continue
        fi
        if run_as_root ln -s "$library" "${library%/*}/$name"; then
            log "$name -> $library"
        else
            warn "could not link ${library%/*}/$name to $library: Spark ML may fall back to pure-Java BLAS"
        fi
    done
}
native_blas

# --- The wheelhouse ------------------------------------------------------------------------
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/fruits-pipeline-bootstrap.XXXXXX")"
trap 'rm -rf "$WORK_DIR"' EXIT  # the wheels take room on the root volume
WHEELS="$WORK_DIR/wheels"
aws s3 cp --only-show-errors "$CODE_URI/requirements.txt" "$WORK_DIR/requirements.txt" ||
    fail "could not download $CODE_URI/requirements.txt"
aws s3 cp --only-show-errors --recursive "$WHEELHOUSE_URI/" "$WHEELS/" ||
    fail "could not download the wheelhouse $WHEELHOUSE_URI/"
[[ -f "$WHEELS/$LOCK_NAME" ]] ||
    fail "the wheelhouse $WHEELHOUSE_URI/ has no $LOCK_NAME: the submitter uploads it last, so its upload did not finish; submit again"
log "requirements from $CODE_URI/requirements.txt:"
grep -v '^#' "$WORK_DIR/requirements.txt" | sed 's/^/    /'

# Every locked wheel must be there, with its sha256, before pip starts: one line names what
# is missing, instead of pip's resolver report.
if ! missing="$("$PYTHON" - "$WHEELS" "$WHEELHOUSE_URI/" 2>&1 <<'PYCHECK'
import hashlib
import re
import sys
from pathlib import Path

from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
from pip._vendor.packaging.version import Version

folder, uri = Path(sys.argv[1]), sys.argv[2]
files = {}
for path in folder.glob("*.whl"):
    name, version, _, _ = parse_wheel_filename(path.name)
    files.setdefault((canonicalize_name(name), version), []).append(path)
lacking = []
for line in (folder / "requirements-lock.txt").read_text(encoding="utf-8").splitlines():
    locked = re.match(r"\s*([^#\s=]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})", line)
    if not locked:
        continue
    name, version, sha256 = locked.groups()
    candidates = files.get((canonicalize_name(name), Version(version)), [])
    if not any(hashlib.sha256(p.read_bytes()).hexdigest() == sha256 for p in candidates):
        lacking.append(f"{name}=={version}" + (" (a file with another sha256)" if candidates else ""))
if lacking:
    sys.exit(
        f"the wheelhouse {uri} lacks the locked wheel of {', '.join(lacking)}; "
        "submitting again uploads what is missing"
    )
PYCHECK
)"; then
    fail "${missing##*$'\n'}"
fi
log "wheelhouse $WHEELHOUSE_URI/: $(find "$WHEELS" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1)"
SITE="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
log "free space where they go ($SITE): $(df -Ph "$SITE" | awk 'NR == 2 {print $4}')"

# System-wide (as root), because YARN runs the Python workers as other users.  Only from the
# wheelhouse (--no-index), only wheels, only the locked files (--require-hashes).
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
as_root "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" \
    --only-binary=:all: --require-hashes --requirement "$WHEELS/$LOCK_NAME"

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
log "free space left on $SITE: $(df -Ph "$SITE" | awk 'NR == 2 {print $4}')"
log "done: the locked wheelhouse is installed for $PYTHON"

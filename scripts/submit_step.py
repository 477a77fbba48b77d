#!/usr/bin/env python3
"""Run fruits-pipeline on Amazon EMR, EU-only and private by default.

    .venv/bin/python scripts/submit_step.py --bucket my-fruits-eu \\
        --input s3://my-fruits-eu/data/Test/ --create --wait --share \\
        -- --weights s3://my-fruits-eu/models/mobilenet_v2.h5

1. builds the code (a zip of src/fruits_pipeline for --py-files, requirements.txt generated
   from pyproject.toml) and uploads it, with server-side encryption, to
   s3://BUCKET/PREFIX/runs/RUN_ID/code/;
2. --create starts a transient cluster from emr/cluster-config.json that ends with its step,
   or --cluster-id adds the step to a running cluster;
3. the step runs ``spark-submit --deploy-mode cluster`` on scripts/spark_job.py with
   ``run --input … --output s3://BUCKET/PREFIX/runs/RUN_ID/output/`` and the job options;
4. --wait follows the step, --share prints presigned links, --dry-run prints every request
   as JSON and sends none.

Guards: the region and the buckets must be in the EU (--allow-non-eu to override); the
bucket must block public access and encrypt by default (--force to only warn).  Nothing here
ever writes a bucket policy or an ACL.

The functions that build requests are pure (tested without a server); ``Aws`` holds the few
calls that do I/O.  boto3 finds credentials through its default chain (or --profile) and
honours AWS_ENDPOINT_URL, which the tests use to point it at a local moto server.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import re
import secrets
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # validate job options with the code we upload

from fruits_pipeline import cli as job_cli  # noqa: E402
from fruits_pipeline.chain.weights import WeightsError, parse_weights_spec  # noqa: E402

log = logging.getLogger("submit_step")

PROG = "submit_step.py"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

PACKAGE_DIR = ROOT / "src" / "fruits_pipeline"
ENTRY_FILE = ROOT / "scripts" / "spark_job.py"
BOOTSTRAP_FILE = ROOT / "bootstrap" / "bootstrap-emr.sh"
PYPROJECT = ROOT / "pyproject.toml"
CLUSTER_CONFIG = ROOT / "emr" / "cluster-config.json"

ZIP_NAME = "fruits_pipeline.zip"
REQUIREMENTS_NAME = "requirements.txt"

#: What reviewers get links to, with the type their browser is told: files the job writes
#: under OUTPUT (fruits_pipeline.commands.run.CSV_NAME, html_report.HTML_NAME, outputs.REPORT_NAME).
SHARED_FILES = {
    "features_pca.csv": "text/csv; charset=utf-8",
    "report.html": "text/html; charset=utf-8",
    "report.json": "application/json",
}

DEFAULT_REGION = "eu-west-1"
#: AWS regions inside the European Union.  London (eu-west-2) and Zurich (eu-central-2) are
#: in Europe but not in the EU: they need --allow-non-eu.
EU_REGIONS = frozenset(
    {"eu-central-1", "eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-3"}
)
#: Installed by EMR itself: pip must not shadow the cluster's Spark.
PROVIDED_BY_EMR = frozenset({"pyspark"})
#: Algorithms that count as default encryption at rest.
ENCRYPTION_ALGORITHMS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})
PUBLIC_ACCESS_FLAGS = (
    "BlockPublicAcls",
    "IgnorePublicAcls",
    "BlockPublicPolicy",
    "RestrictPublicBuckets",
)

STEP_SUCCEEDED = "COMPLETED"
STEP_ENDED = frozenset({"COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED"})
CLUSTER_ENDED = frozenset({"TERMINATED", "TERMINATED_WITH_ERRORS"})
CLUSTER_USABLE = frozenset({"STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"})
MAX_SHARE_HOURS = 168  # SigV4 presigned URLs live at most 7 days


class UsageError(Exception):
    """A wrong argument or a refused setting: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (UsageError) instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser (everything after ``--`` goes to the job)."""
    parser = _Parser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run fruits-pipeline on Amazon EMR: upload the code, start a transient "
        "cluster (or use a running one),\nadd the spark-submit step, and optionally wait for "
        "it and share the results privately.",
        epilog="""job options (after --) are passed to `fruits-pipeline run`, e.g.
  -- --weights s3://BUCKET/models/mobilenet_v2.h5 --variance-threshold 0.9 --limit 5000
  (--input and --output are set here; a weights file must be on S3; see README)

examples:
  %(prog)s --bucket my-fruits-eu --input s3://my-fruits-eu/data/Test/ --create --wait
  %(prog)s --bucket my-fruits-eu --input s3://my-fruits-eu/data/Test/ --cluster-id j-ABC123 \\
      --dry-run -- --limit 100

guards: the region and the buckets must be in the EU (--allow-non-eu); the bucket must block
public access and have default encryption (--force to only warn). Exit codes: 0 submitted
(or succeeded, with --wait); 1 an AWS error or a failed step; 2 a wrong argument or a refused
setting.""",
    )
    where = parser.add_argument_group("where")
    where.add_argument("--bucket", required=True, help="bucket for code, logs and output")
    where.add_argument(
        "--prefix",
        default="fruits-pipeline",
        help="key prefix in BUCKET; each run writes under PREFIX/runs/RUN_ID/ "
        "(default: %(default)s)",
    )
    where.add_argument(
        "--input", required=True, metavar="S3_URI", help="s3:// folder of images to process"
    )
    where.add_argument(
        "--run-id", help="name of this run (default: UTC date-time and a random suffix)"
    )

    cluster = parser.add_argument_group("cluster (one of)")
    choice = cluster.add_mutually_exclusive_group(required=True)
    choice.add_argument(
        "--create",
        action="store_true",
        help="start a transient cluster from emr/cluster-config.json; it ends with the step",
    )
    choice.add_argument(
        "--cluster-id", metavar="j-…", help="add the step to this running cluster instead"
    )

    new = parser.add_argument_group("new cluster (with --create)")
    new.add_argument("--subnet-id", help="EC2 subnet (default: the default VPC's)")
    new.add_argument(
        "--service-role", default="EMR_DefaultRole", help="EMR service role (%(default)s)"
    )
    new.add_argument(
        "--instance-profile",
        default="EMR_EC2_DefaultRole",
        help="EC2 instance profile of the nodes (%(default)s)",
    )
    new.add_argument(
        "--security-configuration",
        metavar="NAME",
        help="EMR security configuration, e.g. one with SSE-KMS at rest",
    )
    new.add_argument(
        "--core-nodes", type=_count(1), default=2, metavar="N", help="core nodes (default 2)"
    )
    new.add_argument("--spot-core", action="store_true", help="core nodes on Spot")
    new.add_argument(
        "--spot-task-nodes",
        type=_count(0),
        default=0,
        metavar="N",
        help="add N Spot task nodes (default 0)",
    )

    run = parser.add_argument_group("run")
    run.add_argument("--wait", action="store_true", help="follow the step until it ends")
    run.add_argument(
        "--poll-seconds", type=_count(1), default=30, metavar="S", help="with --wait (30)"
    )
    run.add_argument(
        "--dry-run", action="store_true", help="print every request as JSON and send none"
    )
    run.add_argument(
        "--share",
        action="store_true",
        help="print presigned HTTPS links to the CSV and the reports for reviewers",
    )
    run.add_argument(
        "--share-hours",
        type=_count(1, MAX_SHARE_HOURS),
        default=24,
        metavar="H",
        help=f"how long the links work, at most {MAX_SHARE_HOURS} (default 24)",
    )
    run.add_argument(
        "--kms-key-id",
        metavar="KEY",
        help="upload the code with SSE-KMS and this key (default: SSE-S3, AES256)",
    )

    aws = parser.add_argument_group("AWS")
    aws.add_argument("--region", default=DEFAULT_REGION, help="AWS region (%(default)s)")
    aws.add_argument("--profile", help="named profile (default: the default credential chain)")
    aws.add_argument(
        "--allow-non-eu",
        action="store_true",
        help="allow a region or a bucket outside the EU (personal data: check GDPR first)",
    )
    aws.add_argument(
        "--force",
        action="store_true",
        help="only warn about a bucket without Block Public Access or default encryption",
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    return parser


def _count(low: int, high: int | None = None) -> Callable[[str], int]:
    """Return an argparse type: a whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def split_job_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Return (our arguments, the job's arguments): the job's follow the first ``--``."""
    if "--" in argv:
        index = argv.index("--")
        return argv[:index], argv[index + 1 :]
    return argv, []


@dataclass(frozen=True)
class Options:
    """The validated command line."""

    args: argparse.Namespace
    job_args: list[str]
    run_id: str
    warnings: tuple[str, ...] = ()

    def __getattr__(self, name: str):
        return getattr(self.args, name)


def parse_options(argv: list[str], now: datetime | None = None) -> Options:
    """Parse and validate ``argv``; return Options.  Raises UsageError (one line)."""
    ours, job_args = split_job_args(argv)
    args = build_parser().parse_args(ours)
    check_bucket_name(args.bucket)
    args.prefix = clean_prefix(args.prefix)
    parse_s3_uri(args.input, what="--input")
    region_warning = check_region(args.region, args.allow_non_eu)
    check_cluster_options(args)
    run_id = args.run_id or make_run_id(now or datetime.now(UTC), secrets.token_hex(3))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", run_id):
        raise UsageError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-'")
    check_job_args(job_args, args.input)
    warnings = (region_warning,) if region_warning else ()
    return Options(args=args, job_args=job_args, run_id=run_id, warnings=warnings)


#: Options that shape a new cluster: refused with --cluster-id, where they would do nothing.
NEW_CLUSTER_OPTIONS = (
    "subnet_id",
    "service_role",
    "instance_profile",
    "security_configuration",
    "core_nodes",
    "spot_core",
    "spot_task_nodes",
)


def check_cluster_options(args: argparse.Namespace) -> None:
    """Raise UsageError for a malformed --cluster-id, or one given with new-cluster options."""
    if args.cluster_id is None:
        return
    if not re.fullmatch(r"j-[0-9A-Z]{1,256}", args.cluster_id):
        raise UsageError(f"--cluster-id {args.cluster_id!r}: expected j- and capitals/digits")
    parser = build_parser()
    for name in NEW_CLUSTER_OPTIONS:
        if getattr(args, name) != parser.get_default(name):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} only applies with --create (a new cluster)")


def check_bucket_name(name: str) -> None:
    """Raise UsageError unless ``name`` is a valid S3 bucket name."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name) or ".." in name:
        raise UsageError(f"--bucket {name!r} is not a valid S3 bucket name")


def clean_prefix(prefix: str) -> str:
    """Return ``prefix`` without leading/trailing slashes; raise UsageError if unsafe."""
    cleaned = prefix.strip("/")
    if any(part in ("", ".", "..") for part in cleaned.split("/")) and cleaned:
        raise UsageError(f"--prefix {prefix!r}: empty, '.' or '..' parts are not allowed")
    if not re.fullmatch(r"[A-Za-z0-9._/-]*", cleaned):
        raise UsageError(f"--prefix {prefix!r}: use letters, digits, '.', '_', '-' and '/'")
    return cleaned


def check_region(region: str, allow_non_eu: bool) -> str | None:
    """Raise UsageError for a region outside the EU, unless ``allow_non_eu``; return the
    warning to log in that case (None for an EU region)."""
    if region in EU_REGIONS:
        return None
    if allow_non_eu:
        return f"region {region} is outside the EU (--allow-non-eu given)"
    raise UsageError(
        f"region {region} is outside the EU; EU regions: {', '.join(sorted(EU_REGIONS))} "
        "(--allow-non-eu to override, after checking GDPR)"
    )


def check_job_args(job_args: list[str], input_uri: str) -> None:
    """Raise UsageError when the job options would not work on EMR.

    They are parsed by the job's own parser; --input, --output and --master are the
    submitter's, and a weights file must be on S3 (a local file is not on the cluster).
    """
    sentinel_in, sentinel_out = input_uri, "s3://submitter/output/"
    argv = ["run", "--input", sentinel_in, "--output", sentinel_out, *job_args]
    try:
        parsed = job_cli.build_parser(default_master=None).parse_args(argv)
    except job_cli.UsageError as error:
        raise UsageError(f"job option: {error}") from None
    if parsed.input != sentinel_in or parsed.output != sentinel_out or parsed.master:
        raise UsageError("job options: --input, --output and --master are set by the submitter")
    try:
        spec = parse_weights_spec(parsed.weights)
    except WeightsError as error:
        raise UsageError(f"job option: {error}") from None
    if spec.kind == "file" and not (spec.location or "").startswith("s3://"):
        raise UsageError(
            f"job option --weights {parsed.weights}: the cluster cannot read a local file; "
            "upload it to S3 and pass its s3:// URI"
        )


# --------------------------------------------------------------------------- pure builders


def make_run_id(now: datetime, token: str) -> str:
    """Return a run id like ``20250131-142501-a1b2c3`` (UTC time, then ``token``)."""
    return f"{now.astimezone(UTC):%Y%m%d-%H%M%S}-{token}"


def run_prefix(prefix: str, run_id: str) -> str:
    """Return the key prefix of a run: ``PREFIX/runs/RUN_ID`` (no slashes at the ends)."""
    return "/".join(part for part in (prefix, "runs", run_id) if part)


def s3_uri(bucket: str, key: str) -> str:
    """Return ``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str, what: str = "URI") -> tuple[str, str]:
    """Return (bucket, key) of an ``s3://`` URI; raise UsageError otherwise."""
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if not match:
        raise UsageError(f"{what} {uri!r} must be an s3:// URI (the cluster reads from S3)")
    return match.group(1), match.group(2)


def requirements_text(pyproject: Path) -> str:
    """Return requirements.txt content: pyproject's ``[project] dependencies``, exact pins and
    markers kept, minus the packages EMR provides (pyspark)."""
    with open(pyproject, "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    kept = [d for d in dependencies if _requirement_name(d) not in PROVIDED_BY_EMR]
    header = [
        "# Generated from pyproject.toml [project] dependencies by scripts/submit_step.py.",
        "# Left out, provided by EMR: " + ", ".join(sorted(PROVIDED_BY_EMR)) + ".",
    ]
    return "\n".join([*header, *kept]) + "\n"


def _requirement_name(requirement: str) -> str:
    """Return the normalized project name at the start of a requirement string."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", name.group(1)).lower() if name else ""


def build_py_files_zip(package_dir: Path, destination: Path) -> Path:
    """Write a zip of the package for ``--py-files`` to ``destination`` and return it.

    Deterministic (sorted entries, fixed timestamps), so the same code gives the same bytes
    and the same sha256.  Every file of the package but compiled caches.
    """
    files = sorted(
        p
        for p in package_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            name = (Path(package_dir.name) / path.relative_to(package_dir)).as_posix()
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return destination


@dataclass(frozen=True)
class CodeFile:
    """One file of the run's code: its name under ``code/`` and its bytes."""

    name: str
    body: bytes
    content_type: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def code_files(workdir: Path) -> list[CodeFile]:
    """Build and return the run's code files: the package zip, the entry file, the bootstrap
    script and requirements.txt.  Writes only under ``workdir``; no network."""
    zip_path = build_py_files_zip(PACKAGE_DIR, workdir / ZIP_NAME)
    return [
        CodeFile(ZIP_NAME, zip_path.read_bytes(), "application/zip"),
        CodeFile(ENTRY_FILE.name, ENTRY_FILE.read_bytes(), "text/x-python"),
        CodeFile(BOOTSTRAP_FILE.name, BOOTSTRAP_FILE.read_bytes(), "text/x-shellscript"),
        CodeFile(REQUIREMENTS_NAME, requirements_text(PYPROJECT).encode("utf-8"), "text/plain"),
    ]


def encryption_params(kms_key_id: str | None) -> dict:
    """Return the PutObject server-side encryption parameters: SSE-KMS with the key, or
    SSE-S3 (AES256)."""
    if kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
    return {"ServerSideEncryption": "AES256"}


def put_object_params(bucket: str, key: str, file: CodeFile, run_id: str, sse: dict) -> dict:
    """Return the PutObject parameters for ``file`` at ``key``, without the Body."""
    return {
        "Bucket": bucket,
        "Key": key,
        "ContentType": file.content_type,
        "Metadata": {"run-id": run_id, "sha256": file.sha256},
        **sse,
    }


@dataclass(frozen=True)
class RunLayout:
    """Where a run lives in S3."""

    bucket: str
    prefix: str  # PREFIX/runs/RUN_ID

    def uri(self, *names: str) -> str:
        return s3_uri(self.bucket, "/".join([self.prefix, *names]))

    @property
    def code(self) -> str:
        return self.uri("code") + "/"

    @property
    def output(self) -> str:
        return self.uri("output") + "/"

    @property
    def logs(self) -> str:
        return self.uri("logs") + "/"

    def key(self, *names: str) -> str:
        return "/".join([self.prefix, *names])


def spark_submit_args(layout: RunLayout, input_uri: str, job_args: list[str]) -> list[str]:
    """Return the step's command line: spark-submit in YARN cluster mode on the uploaded
    entry file, with the package zip as --py-files."""
    return [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--conf",
        "spark.yarn.maxAppAttempts=1",  # a retry would only meet the first try's output
        "--py-files",
        layout.uri("code", ZIP_NAME),
        layout.uri("code", ENTRY_FILE.name),
        "run",
        "--input",
        input_uri,
        "--output",
        layout.output,
        *job_args,
    ]


def step_config(run_id: str, args: list[str], action_on_failure: str) -> dict:
    """Return one EMR StepConfig running ``args`` through command-runner.jar."""
    return {
        "Name": f"fruits-pipeline {run_id}",
        "ActionOnFailure": action_on_failure,
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": list(args)},
    }


_PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")
_DROP = object()


def fill_placeholders(node, values: dict):
    """Return a copy of ``node`` with every ``${NAME}`` replaced from ``values``.

    A string that is exactly one placeholder takes the value itself (a number stays a
    number); a value of None removes that key or list item.  Raises KeyError for a
    placeholder that ``values`` lacks.
    """
    result = _fill(node, values)
    return None if result is _DROP else result


def _fill(node, values):
    if isinstance(node, dict):
        filled = {key: _fill(value, values) for key, value in node.items()}
        return {key: value for key, value in filled.items() if value is not _DROP}
    if isinstance(node, list):
        return [item for item in (_fill(value, values) for value in node) if item is not _DROP]
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:
            value = values[whole.group(1)]
            return _DROP if value is None else value
        return _PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), node)
    return node


def load_cluster_template(path: Path = CLUSTER_CONFIG) -> dict:
    """Return emr/cluster-config.json as a dict (x- keys and placeholders included)."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def cluster_values(options: Options, layout: RunLayout) -> dict:
    """Return the placeholder values of emr/cluster-config.json for this run."""
    args = options.args
    return {
        "BUCKET": layout.bucket,
        "RUN_PREFIX": layout.prefix,
        "RUN_ID": options.run_id,
        "SUBNET_ID": args.subnet_id,
        "SERVICE_ROLE": args.service_role,
        "INSTANCE_PROFILE": args.instance_profile,
        "SECURITY_CONFIGURATION": args.security_configuration,
        "CORE_MARKET": "SPOT" if args.spot_core else "ON_DEMAND",
        "CORE_NODES": args.core_nodes,
        "SPOT_TASK_NODES": args.spot_task_nodes,
    }


def run_job_flow_request(template: dict, values: dict, step: dict) -> dict:
    """Return the RunJobFlow request: the template filled with ``values``, without its x-
    keys and without instance groups of 0 nodes, running ``step`` and then ending."""
    body = fill_placeholders({k: v for k, v in template.items() if not k.startswith("x-")}, values)
    instances = body["Instances"]
    instances["InstanceGroups"] = [
        group for group in instances["InstanceGroups"] if int(group["InstanceCount"]) > 0
    ]
    instances["KeepJobFlowAliveWhenNoSteps"] = False  # transient: ends with its step
    body["Steps"] = [copy.deepcopy(step)]
    return body


def add_steps_request(cluster_id: str, step: dict) -> dict:
    """Return the AddJobFlowSteps request adding ``step`` to ``cluster_id``."""
    return {"JobFlowId": cluster_id, "Steps": [copy.deepcopy(step)]}


def bucket_problems(public_access: dict | None, encryption: dict | None) -> list[str]:
    """Return what makes a bucket unsafe for this data (empty when it is fine).

    ``public_access`` is GetPublicAccessBlock's PublicAccessBlockConfiguration and
    ``encryption`` GetBucketEncryption's ServerSideEncryptionConfiguration (None: absent).
    """
    problems = []
    if public_access is None:
        problems.append("no Block Public Access configuration")
    else:
        off = [flag for flag in PUBLIC_ACCESS_FLAGS if not public_access.get(flag)]
        if off:
            problems.append("Block Public Access is off for " + ", ".join(off))
    rules = (encryption or {}).get("Rules", [])
    algorithms = {
        rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for rule in rules
    }
    if not algorithms & ENCRYPTION_ALGORITHMS:
        problems.append("no default encryption")
    return problems


def region_of_location(location_constraint: str | None) -> str:
    """Return the region of a GetBucketLocation answer (None is us-east-1, EU eu-west-1)."""
    if not location_constraint:
        return "us-east-1"
    return "eu-west-1" if location_constraint == "EU" else location_constraint


def log_locations(log_uri: str | None, cluster_id: str, step_id: str, region: str) -> dict:
    """Return where to look: the step's stderr, the YARN container logs, the console page
    (with the persistent Spark History Server)."""
    base = (log_uri or "").rstrip("/")
    places = {
        "console": f"https://{region}.console.aws.amazon.com/emr/home?region={region}"
        f"#/clusterDetails/{cluster_id}",
    }
    if base:
        places["step stderr"] = f"{base}/{cluster_id}/steps/{step_id}/stderr.gz"
        places["containers"] = f"{base}/{cluster_id}/containers/"
    return places


def format_elapsed(seconds: float) -> str:
    """Return ``seconds`` as ``M:SS`` or ``H:MM:SS``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass(frozen=True)
class StepStatus:
    """One look at the step and its cluster."""

    step: str
    cluster: str
    reason: str = ""


@dataclass(frozen=True)
class WatchResult:
    """How a watched step ended."""

    state: str
    succeeded: bool
    reason: str
    seconds: float


def watch_step(
    poll: Callable[[], StepStatus],
    interval: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    emit: Callable[[str], None] = print,
) -> WatchResult:
    """Poll until the step ends (or its cluster does); emit each state change with the
    elapsed time; return the WatchResult."""
    started = clock()
    last = None
    while True:
        status = poll()
        elapsed = clock() - started
        if (status.step, status.cluster) != last:
            reason = f" ({status.reason})" if status.reason else ""
            emit(
                f"  [{format_elapsed(elapsed):>7}] step {status.step:<11} "
                f"cluster {status.cluster}{reason}"
            )
            last = (status.step, status.cluster)
        if status.step in STEP_ENDED:
            return WatchResult(status.step, status.step == STEP_SUCCEEDED, status.reason, elapsed)
        if status.cluster in CLUSTER_ENDED:
            reason = status.reason or f"cluster {status.cluster}"
            return WatchResult(status.step, False, f"the cluster ended first: {reason}", elapsed)
        sleep(interval)


# --------------------------------------------------------------------------- I/O


def request(service: str, operation: str, params: dict) -> dict:
    """Return one request as --dry-run prints it."""
    return {"service": service, "operation": operation, "params": params}


@dataclass
class Plan:
    """Everything a run sends, built before anything is sent."""

    layout: RunLayout
    files: list[CodeFile]
    uploads: list[dict]  # PutObject params without Body, in the order of ``files``
    step: dict
    submit: dict  # a request(): RunJobFlow or AddJobFlowSteps


def make_plan(options: Options, workdir: Path, template: dict | None = None) -> Plan:
    """Build every request of the run (local files only, no network) and return the Plan."""
    args = options.args
    layout = RunLayout(args.bucket, run_prefix(args.prefix, options.run_id))
    files = code_files(workdir)
    sse = encryption_params(args.kms_key_id)
    uploads = [
        put_object_params(args.bucket, layout.key("code", f.name), f, options.run_id, sse)
        for f in files
    ]
    command = spark_submit_args(layout, args.input, options.job_args)
    if args.create:
        step = step_config(options.run_id, command, "TERMINATE_CLUSTER")
        body = run_job_flow_request(
            template or load_cluster_template(), cluster_values(options, layout), step
        )
        submit = request("emr", "RunJobFlow", body)
    else:
        step = step_config(options.run_id, command, "CONTINUE")  # not our cluster to end
        submit = request("emr", "AddJobFlowSteps", add_steps_request(args.cluster_id, step))
    return Plan(layout, files, uploads, step, submit)


def dry_run_requests(options: Options, plan: Plan) -> list[dict]:
    """Return, in order, every request a real run would send (Bodies described, not sent)."""
    args = options.args
    input_bucket, _ = parse_s3_uri(args.input)
    checks = [request("s3", "GetBucketLocation", {"Bucket": args.bucket})]
    if input_bucket != args.bucket:
        checks.append(request("s3", "GetBucketLocation", {"Bucket": input_bucket}))
    checks += [
        request("s3", "GetPublicAccessBlock", {"Bucket": args.bucket}),
        request("s3", "GetBucketEncryption", {"Bucket": args.bucket}),
    ]
    if args.cluster_id:
        checks.append(request("emr", "DescribeCluster", {"ClusterId": args.cluster_id}))
    puts = [
        request(
            "s3",
            "PutObject",
            {**params, "Body": f"<{len(f.body)} bytes, sha256 {f.sha256}>"},
        )
        for params, f in zip(plan.uploads, plan.files, strict=True)
    ]
    return [*checks, *puts, plan.submit]


class Aws:
    """The calls that leave this machine: S3 checks and uploads, EMR submission and polling."""

    def __init__(self, region: str, profile: str | None):
        import boto3
        from botocore.config import Config

        session = boto3.Session(profile_name=profile, region_name=region)
        # SigV4 everywhere: presigned links to SSE-KMS objects need it.
        self.s3 = session.client("s3", config=Config(signature_version="s3v4"))
        self.emr = session.client("emr")
        # On AWS itself, links name the bucket's regional endpoint (bucket.s3.REGION...)
        # rather than the global one; an endpoint set by AWS_ENDPOINT_URL is kept as it is.
        self.signer = self.s3
        if self.s3.meta.endpoint_url.endswith(".amazonaws.com"):
            virtual = Config(signature_version="s3v4", s3={"addressing_style": "virtual"})
            self.signer = session.client("s3", config=virtual)

    def bucket_region(self, bucket: str) -> str:
        """Return the region of ``bucket``."""
        answer = self.s3.get_bucket_location(Bucket=bucket)
        return region_of_location(answer.get("LocationConstraint"))

    def bucket_settings(self, bucket: str) -> tuple[dict | None, dict | None]:
        """Return (public access block, default encryption) of ``bucket``; None when unset."""
        public = self._absent_is_none(
            lambda: self.s3.get_public_access_block(Bucket=bucket)[
                "PublicAccessBlockConfiguration"
            ],
            "NoSuchPublicAccessBlockConfiguration",
        )
        encryption = self._absent_is_none(
            lambda: self.s3.get_bucket_encryption(Bucket=bucket)[
                "ServerSideEncryptionConfiguration"
            ],
            "ServerSideEncryptionConfigurationNotFoundError",
        )
        return public, encryption

    @staticmethod
    def _absent_is_none(call: Callable[[], dict], absent_code: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return call()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == absent_code:
                return None
            raise

    def upload(self, plan: Plan) -> None:
        """PutObject every code file (server-side encrypted)."""
        for params, file in zip(plan.uploads, plan.files, strict=True):
            self.s3.put_object(Body=file.body, **params)
            log.info(
                "uploaded %s (%d bytes)", s3_uri(params["Bucket"], params["Key"]), len(file.body)
            )

    def cluster(self, cluster_id: str) -> dict:
        """Return DescribeCluster's Cluster."""
        return self.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]

    def submit(self, plan: Plan) -> tuple[str, str]:
        """Send RunJobFlow or AddJobFlowSteps; return (cluster id, step id)."""
        params = plan.submit["params"]
        if plan.submit["operation"] == "RunJobFlow":
            cluster_id = self.emr.run_job_flow(**params)["JobFlowId"]
            steps = self.emr.list_steps(ClusterId=cluster_id)["Steps"]
            step_id = next(s["Id"] for s in steps if s["Name"] == plan.step["Name"])
            return cluster_id, step_id
        step_id = self.emr.add_job_flow_steps(**params)["StepIds"][0]
        return params["JobFlowId"], step_id

    def status(self, cluster_id: str, step_id: str) -> StepStatus:
        """Return the current StepStatus."""
        step = self.emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]
        cluster = self.cluster(cluster_id)["Status"]
        reason = _reason(step) or (_reason(cluster) if cluster["State"] in CLUSTER_ENDED else "")
        return StepStatus(step["State"], cluster["State"], reason)

    def presign(self, bucket: str, key: str, seconds: int, content_type: str) -> str:
        """Return a presigned HTTPS GET link to one object, valid ``seconds``, served as
        ``content_type`` (so that a browser shows report.html instead of saving it)."""
        params = {"Bucket": bucket, "Key": key, "ResponseContentType": content_type}
        return self.signer.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)


def _reason(status: dict) -> str:
    """Return a state's reason (or failure details) as one line, or ''."""
    failure = status.get("FailureDetails") or {}
    text = failure.get("Message") or failure.get("Reason") or ""
    text = text or (status.get("StateChangeReason") or {}).get("Message", "")
    return " ".join(str(text).split())


def check_buckets(aws: Aws, options: Options) -> None:
    """Apply the EU and privacy guards to the buckets; raise UsageError on a refusal."""
    args = options.args
    region = aws.bucket_region(args.bucket)
    _check_bucket_region(args.bucket, region, args)
    input_bucket, _ = parse_s3_uri(args.input)
    if input_bucket != args.bucket:
        from botocore.exceptions import ClientError

        try:
            _check_bucket_region(input_bucket, aws.bucket_region(input_bucket), args)
        except ClientError as error:
            log.warning("could not check the region of input bucket %s: %s", input_bucket, error)
    problems = bucket_problems(*aws.bucket_settings(args.bucket))
    if problems and not args.force:
        raise UsageError(
            f"bucket {args.bucket} is not private enough: {'; '.join(problems)} "
            "(turn on Block Public Access and default encryption; --force to go on anyway)"
        )
    for problem in problems:
        log.warning("bucket %s: %s (--force given)", args.bucket, problem)


def _check_bucket_region(bucket: str, region: str, args: argparse.Namespace) -> None:
    if region not in EU_REGIONS:
        if not args.allow_non_eu:
            raise UsageError(
                f"bucket {bucket} is in {region}, outside the EU (--allow-non-eu to override)"
            )
        log.warning("bucket %s is in %s, outside the EU (--allow-non-eu given)", bucket, region)
    if region != args.region:
        log.warning("bucket %s is in %s, the cluster in %s", bucket, region, args.region)


def share_links(aws: Aws, layout: RunLayout, hours: int) -> list[tuple[str, str]]:
    """Return (file name, presigned link) for the CSV and the reports of the run."""
    seconds = hours * 3600
    return [
        (name, aws.presign(layout.bucket, layout.key("output", name), seconds, content_type))
        for name, content_type in SHARED_FILES.items()
    ]


def summary(options: Options, plan: Plan, cluster_id: str, step_id: str, places: dict) -> str:
    """Return the human summary printed after submitting."""
    new = "new, transient: ends with the step" if options.args.create else "running cluster"
    sse = plan.uploads[0]["ServerSideEncryption"]
    lines = [
        f"fruits-pipeline on EMR: run {options.run_id}",
        f"  code     {plan.layout.code} ({len(plan.files)} files, {sse})",
        f"  cluster  {cluster_id} ({new})",
        f"  step     {step_id}",
        f"  input    {options.args.input}",
        f"  output   {plan.layout.output}",
    ]
    lines += [f"  {name:<8} {where}" for name, where in places.items()]
    return "\n".join(lines)


def wait_report(result: WatchResult, step_id: str, places: dict, output: str) -> str:
    """Return what --wait prints once the step has ended: the verdict, then the results
    (success) or where the logs are (failure)."""
    verdict = "succeeded" if result.succeeded else "did not succeed"
    reason = f" ({result.reason})" if result.reason and not result.succeeded else ""
    lines = [f"step {step_id} {result.state} after {format_elapsed(result.seconds)}: {verdict}"]
    lines[0] += reason
    if result.succeeded:
        return "\n".join([*lines, f"results: {output}"])
    lines.append("logs (EMR copies them to S3 within about 5 minutes):")
    lines += [f"  {name:<12} {where}" for name, where in places.items()]
    lines.append(
        "  Spark UI     the console page above, tab Applications: persistent Spark History Server"
    )
    return "\n".join(lines)


def share_report(links: list[tuple[str, str]], expires: datetime, waited: bool) -> str:
    """Return what --share prints: the links, their expiry and what they open."""
    note = "" if waited else " (they work once the step has succeeded)"
    lines = [f"private links for reviewers, valid until {expires:%Y-%m-%d %H:%M} UTC{note}:"]
    lines += [f"  {name:<17} {link}" for name, link in links]
    lines.append(
        "  anyone holding a link can read that one file until it expires; the bucket stays private."
    )
    return "\n".join(lines)


def run(options: Options) -> int:
    """Submit (or dry-run) the run described by ``options``; return the exit code."""
    with tempfile.TemporaryDirectory(prefix="submit-step-") as workdir:
        plan = make_plan(options, Path(workdir))
    if options.dry_run:
        print(json.dumps(dry_run_requests(options, plan), indent=2))
        log.info("dry run: nothing was sent")
        return EXIT_OK

    aws = Aws(options.region, options.profile)
    check_buckets(aws, options)
    log_uri = plan.layout.logs if options.create else usable_cluster_log_uri(aws, options)
    aws.upload(plan)
    cluster_id, step_id = aws.submit(plan)
    places = log_locations(log_uri, cluster_id, step_id, options.region)
    print(summary(options, plan, cluster_id, step_id, places))

    if options.wait:
        print(
            f"waiting for step {step_id} (every {options.poll_seconds} s; Ctrl-C stops "
            "watching, not the step):"
        )
        try:
            result = watch_step(lambda: aws.status(cluster_id, step_id), options.poll_seconds)
        except KeyboardInterrupt:
            print(f"\nstopped watching; step {step_id} goes on in cluster {cluster_id}")
            return EXIT_INTERRUPTED
        print(wait_report(result, step_id, places, plan.layout.output))
        if not result.succeeded:
            return EXIT_FAILED
    if options.share:
        expires = datetime.now(UTC) + timedelta(hours=options.share_hours)
        links = share_links(aws, plan.layout, options.share_hours)
        print(share_report(links, expires, waited=options.wait))
    return EXIT_OK


def usable_cluster_log_uri(aws: Aws, options: Options) -> str | None:
    """Return the log URI of the --cluster-id cluster; raise UsageError if it has ended."""
    cluster = aws.cluster(options.cluster_id)
    state = cluster["Status"]["State"]
    if state not in CLUSTER_USABLE:
        raise UsageError(f"cluster {options.cluster_id} is {state}: it cannot run a step")
    return cluster.get("LogUri")


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        options = parse_options(argv)
    except UsageError as error:
        return _fail(f"error: {error}", EXIT_USAGE)
    setup_logging(options.quiet)
    for warning in options.warnings:
        log.warning(warning)
    from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

    try:
        return run(options)
    except (UsageError, ProfileNotFound) as error:
        return _fail(f"error: {error}", EXIT_USAGE)
    except ClientError as error:
        info = error.response.get("Error", {})
        operation = getattr(error, "operation_name", "AWS call")
        return _fail(
            f"AWS error in {operation}: {info.get('Code')}: {info.get('Message')}", EXIT_FAILED
        )
    except BotoCoreError as error:
        return _fail(f"AWS error: {error}", EXIT_FAILED)


def setup_logging(quiet: bool) -> None:
    """Send this script's log records to the current stderr, INFO and up (WARNING with
    ``quiet``); calling it again replaces the handler instead of adding one."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

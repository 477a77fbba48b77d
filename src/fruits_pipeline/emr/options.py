"""The submitter's command line, checked: ``parse_options`` turns argv into ``Options``.

Everything after ``--`` goes to the job; those options are checked with the job's own
parser, so a typo fails here, before anything is uploaded or started.
"""

from __future__ import annotations

import argparse
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from fruits_pipeline.emr.errors import PROG, UsageError
from fruits_pipeline.emr.guards import check_region
from fruits_pipeline.emr.s3paths import parse_s3_uri
from fruits_pipeline.errors import BadInput

DEFAULT_REGION = "eu-west-1"
MAX_SHARE_HOURS = 168  # SigV4 presigned URLs live at most 7 days


@dataclass(frozen=True)
class NewCluster:
    """The options that shape a new cluster (``--create``); refused with ``--cluster-id``,
    where they would do nothing."""

    subnet_id: str | None
    service_role: str
    instance_profile: str
    security_configuration: str | None
    core_nodes: int
    spot_core: bool
    spot_task_nodes: int


#: The parser's destinations that shape a new cluster, in the order they are checked.
NEW_CLUSTER_OPTIONS = tuple(field.name for field in fields(NewCluster))


@dataclass(frozen=True)
class Options:
    """The validated command line."""

    bucket: str
    prefix: str  # without slashes at the ends
    input: str
    run_id: str
    cluster_id: str | None  # None: --create
    new_cluster: NewCluster
    wait: bool
    poll_seconds: int
    dry_run: bool
    share: bool
    share_hours: int
    kms_key_id: str | None
    region: str
    profile: str | None
    allow_non_eu: bool
    force: bool
    quiet: bool
    job_args: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def create(self) -> bool:
        """True when the run starts its own transient cluster."""
        return self.cluster_id is None

    @property
    def input_bucket(self) -> str:
        """The bucket of --input."""
        return parse_s3_uri(self.input)[0]


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (UsageError) instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """Return the command-line parser (everything after ``--`` goes to the job)."""
    parser = _Parser(
        prog=prog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run fruits-pipeline on Amazon EMR: upload the code, start a transient "
        "cluster (or use a running one),\nadd the spark-submit step, and optionally wait for "
        "it and share the results privately.",
        epilog="""job options (after --) are passed to `fruits-pipeline run`, e.g.
  -- --weights s3://BUCKET/models/mobilenet_v2.h5 --variance-threshold 0.9 --limit 5000
  (--input and --output are set here; the weights must be a file on S3: the cluster has no
  internet; see docs/emr.md)

examples:
  %(prog)s --bucket my-fruits-eu --input s3://my-fruits-eu/data/Test/ --create --wait \\
      -- --weights s3://my-fruits-eu/models/mobilenet_v2.h5
  %(prog)s --bucket my-fruits-eu --input s3://my-fruits-eu/data/Test/ --cluster-id j-ABC123 \\
      --dry-run -- --weights s3://my-fruits-eu/models/mobilenet_v2.h5 --limit 100

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
        help="upload the code and the wheelhouse with SSE-KMS and this key (default: no "
        "encryption header, so the bucket's default encryption applies)",
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


def parse_options(argv: list[str], now: datetime | None = None, prog: str = PROG) -> Options:
    """Parse and validate ``argv``; return Options.  Raises UsageError (one line)."""
    ours, job_args = split_job_args(argv)
    args = build_parser(prog).parse_args(ours)
    check_bucket_name(args.bucket)
    prefix = clean_prefix(args.prefix)
    parse_s3_uri(args.input, what="--input")
    region_warning = check_region(args.region, args.allow_non_eu)
    check_cluster_options(args)
    run_id = args.run_id or make_run_id(now or datetime.now(UTC), secrets.token_hex(3))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", run_id):
        raise UsageError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-'")
    check_job_args(job_args, args.input)
    # Options' fields are the parser's destinations, but for those checked or derived here.
    values = {field.name: getattr(args, field.name, None) for field in fields(Options)}
    values.update(
        prefix=prefix,
        run_id=run_id,
        new_cluster=NewCluster(**{name: getattr(args, name) for name in NEW_CLUSTER_OPTIONS}),
        job_args=tuple(job_args),
        warnings=(region_warning,) if region_warning else (),
    )
    return Options(**values)


def make_run_id(now: datetime, token: str) -> str:
    """Return a run id like ``20250131-142501-a1b2c3`` (UTC time, then ``token``)."""
    return f"{now.astimezone(UTC):%Y%m%d-%H%M%S}-{token}"


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


def check_job_args(job_args: list[str], input_uri: str) -> None:
    """Raise UsageError when the job options would not work on EMR.

    They are parsed by the job's own parser; --input, --output and --master are the
    submitter's, and the weights must be on S3: a local file is not on the cluster, and
    ``imagenet`` (the job's default) is a download from the internet, which the cluster in
    the documented private subnet cannot reach.
    """
    # Imported here: --help and our own argument errors answer without the job's modules
    # (chain.weights loads numpy).
    from fruits_pipeline import cli as job_cli
    from fruits_pipeline.chain.weights import parse_weights_spec

    sentinel_in, sentinel_out = input_uri, "s3://submitter/output/"
    argv = ["run", "--input", sentinel_in, "--output", sentinel_out, *job_args]
    try:
        parsed = job_cli.build_parser(default_master=None).parse_args(argv)
    except BadInput as error:
        raise UsageError(f"job option: {error}") from None
    if parsed.input != sentinel_in or parsed.output != sentinel_out or parsed.master:
        raise UsageError("job options: --input, --output and --master are set by the submitter")
    try:
        spec = parse_weights_spec(parsed.weights)
    except BadInput as error:
        raise UsageError(f"job option: {error}") from None
    if spec.kind == "imagenet":
        raise UsageError(
            f"job option --weights {parsed.weights} (the job's default): the driver would "
            "download the weights from the internet, which the cluster cannot reach; upload "
            "the Keras file to S3 and pass --weights s3://… (or random:SEED for a smoke test)"
        )
    if spec.kind == "file" and not (spec.location or "").startswith("s3://"):
        raise UsageError(
            f"job option --weights {parsed.weights}: the cluster cannot read a local file; "
            "upload it to S3 and pass its s3:// URI"
        )

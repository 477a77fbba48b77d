"""The submitter's command line: ``main`` checks the arguments, then runs the flow (plan,
guards, wheelhouse, upload, submit, watch, share) and prints what a person needs to follow
the run.

Exit codes: 0 submitted (or succeeded, with --wait); 1 an AWS error or a failed step; 2 a
wrong argument or a refused setting (one line on stderr); 130 Ctrl-C while watching.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fruits_pipeline.emr.aws import Aws
from fruits_pipeline.emr.bundle import KitFiles
from fruits_pipeline.emr.errors import EXIT_INTERRUPTED, PROG, program_name
from fruits_pipeline.emr.guards import check_buckets
from fruits_pipeline.emr.options import Options, parse_options
from fruits_pipeline.emr.requests import Plan, dry_run_requests, make_plan
from fruits_pipeline.emr.s3paths import RunLayout
from fruits_pipeline.emr.targets import Submission, target_for
from fruits_pipeline.emr.watch import wait_report, watch_step
from fruits_pipeline.emr.wheelhouse import LOCK_NAME, Published, Wheelhouse, cache_folder, publish
from fruits_pipeline.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, BadInput
from fruits_pipeline.results.layout import SHAREABLE

#: The parent of every submitter module's logger: setup_logging sends them to stderr.
log = logging.getLogger("fruits_pipeline.emr")


def main(argv: list[str] | None = None, kit: KitFiles | None = None) -> int:
    """Run the command line and return the exit code.

    Messages start with the console script's name when started as ``fruits-pipeline-emr``,
    and with ``submit_step.py`` otherwise (the script, or ``main`` called with ``argv``).
    ``kit`` is where the kit's files are (default: the checkout this package runs from).
    """
    prog = program_name(sys.argv[0]) if argv is None else PROG
    argv = sys.argv[1:] if argv is None else argv
    try:
        options = parse_options(argv, prog=prog)
    except BadInput as error:
        return fail(prog, f"error: {error}", EXIT_USAGE)
    setup_logging(options.quiet)
    for warning in options.warnings:
        log.warning(warning)
    from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

    try:
        return run(options, kit or KitFiles.find())
    except (BadInput, ProfileNotFound) as error:
        return fail(prog, f"error: {error}", EXIT_USAGE)
    except ClientError as error:
        info = error.response.get("Error", {})
        operation = getattr(error, "operation_name", "AWS call")
        return fail(
            prog,
            f"AWS error in {operation}: {info.get('Code')}: {info.get('Message')}",
            EXIT_FAILED,
        )
    except BotoCoreError as error:
        return fail(prog, f"AWS error: {error}", EXIT_FAILED)


def run(options: Options, kit: KitFiles) -> int:
    """Submit (or dry-run) the run described by ``options``; return the exit code."""
    target = target_for(options, kit)
    with tempfile.TemporaryDirectory(prefix="submit-step-") as workdir:
        plan = make_plan(options, kit, Path(workdir), target)
    if options.dry_run:
        return dry_run(options, plan)

    aws = Aws(options.region, options.profile)
    check_buckets(
        aws,
        options.bucket,
        options.input_bucket,
        region=options.region,
        allow_non_eu=options.allow_non_eu,
        force=options.force,
    )
    log_uri = target.prepare(aws, plan.layout)
    published = None
    if plan.wheelhouse is not None:
        folder = cache_folder(plan.wheelhouse.lock.digest)
        published = publish(aws, plan.wheelhouse, folder, plan.sse)
    aws.upload(plan.files, plan.uploads)
    submission = target.submit(aws, plan.job)
    places = target.log_places(submission, log_uri)
    print(summary(options, plan, submission, places, published))

    if options.wait:
        step_id, cluster_id = submission.step_id, submission.cluster_id
        print(
            f"waiting for step {step_id} (every {options.poll_seconds} s; Ctrl-C stops "
            "watching, not the step):"
        )
        try:
            result = watch_step(
                lambda: target.status(aws, submission), options.poll_seconds, target.ends
            )
        except KeyboardInterrupt:
            print(f"\nstopped watching; step {step_id} goes on in cluster {cluster_id}")
            return EXIT_INTERRUPTED
        print(wait_report(result, step_id, places, plan.layout.output))
        if not result.succeeded:
            return EXIT_FAILED
    if options.share:
        expires = datetime.now(UTC) + timedelta(hours=options.share_hours)
        region = aws.bucket_region(plan.layout.bucket)
        links = share_links(aws, plan.layout, options.share_hours, region)
        print(share_report(links, expires, waited=options.wait))
    return EXIT_OK


def dry_run(options: Options, plan: Plan) -> int:
    """Print every request the run would send, as JSON, and send none of them.  The one call
    it makes is a read: the wheelhouse's listing, to say whether it would be uploaded or
    reused."""
    missing = None
    if plan.wheelhouse is not None:
        missing = wheelhouse_missing(options, plan.wheelhouse)
    requests = [request.as_json() for request in dry_run_requests(options, plan, missing)]
    print(json.dumps(requests, indent=2))
    if plan.wheelhouse is not None:
        log.info("dry run: %s", wheelhouse_plan(plan.wheelhouse, missing))
    log.info("dry run: nothing was sent")
    return EXIT_OK


def wheelhouse_missing(options: Options, wheelhouse: Wheelhouse) -> list[str] | None:
    """Return what the wheelhouse lacks in S3, by its listing; None when it cannot be read."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        aws = Aws(options.region, options.profile)
        return wheelhouse.missing(aws.list_keys(wheelhouse.bucket, wheelhouse.prefix + "/"))
    except (BotoCoreError, ClientError) as error:
        log.warning("could not list the wheelhouse %s: %s", wheelhouse.uri, error)
        return None


def wheelhouse_plan(wheelhouse: Wheelhouse, missing: list[str] | None) -> str:
    """Return what a run would do with the wheelhouse: reuse it, or upload (some of) it."""
    count = len(wheelhouse.lock.wheels)
    if missing is None:
        return f"the wheelhouse {wheelhouse.uri} could not be listed: uploaded if absent"
    if not missing:
        return f"the wheelhouse {wheelhouse.uri} is complete ({count} wheels): reused"
    wheels = len([name for name in missing if name != LOCK_NAME])
    return (
        f"the wheelhouse {wheelhouse.uri} would be uploaded: {wheels} of {count} wheels "
        "and the lock (built first with pip download)"
    )


def summary(
    options: Options,
    plan: Plan,
    submission: Submission,
    places: dict,
    published: Published | None,
) -> str:
    """Return the human summary printed after submitting."""
    sse = plan.sse.get("SSEKMSKeyId")
    encryption = f"SSE-KMS with {sse}" if sse else "the bucket's default encryption"
    lines = [
        f"fruits-pipeline on EMR: run {options.run_id}",
        f"  code     {plan.layout.code} ({len(plan.files)} files, {encryption})",
    ]
    if published is not None:
        done = "reused" if published.reused else f"uploaded {len(published.uploaded)} files"
        lines.append(f"  wheels   {published.uri} ({published.wheels} wheels, {done})")
    lines += [
        f"  cluster  {submission.cluster_id} ({submission.cluster_note})",
        f"  step     {submission.step_id}",
        f"  input    {options.input}",
        f"  output   {plan.layout.output}",
    ]
    lines += [f"  {name:<8} {where}" for name, where in places.items()]
    return "\n".join(lines)


def share_links(aws: Aws, layout: RunLayout, hours: int, region: str) -> list[tuple[str, str]]:
    """Return (file name, presigned link) for the files of the run a reviewer may read:
    the CSV and the reports (results.layout.SHAREABLE), signed for the bucket's ``region``."""
    seconds = hours * 3600
    return [
        (
            name,
            aws.presign(layout.bucket, layout.key("output", name), seconds, content_type, region),
        )
        for name, content_type in SHAREABLE.items()
    ]


def share_report(links: list[tuple[str, str]], expires: datetime, waited: bool) -> str:
    """Return what --share prints: the links, their expiry and what they open."""
    note = "" if waited else " (they work once the step has succeeded)"
    lines = [f"private links for reviewers, valid until {expires:%Y-%m-%d %H:%M} UTC{note}:"]
    lines += [f"  {name:<17} {link}" for name, link in links]
    lines.append(
        "  anyone holding a link can read that one file until it expires; the bucket stays private."
    )
    return "\n".join(lines)


def setup_logging(quiet: bool) -> None:
    """Send the submitter's log records to the current stderr, INFO and up (WARNING with
    ``quiet``); calling it again replaces the handler instead of adding one."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def fail(prog: str, message: str, code: int) -> int:
    """Print ``prog: message`` as one line on stderr; return ``code``."""
    print(f"{prog}: {message}", file=sys.stderr)
    return code

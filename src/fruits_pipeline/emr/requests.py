"""Every request of a run, built before anything is sent: pure functions, no I/O.

The spark-submit command the step runs, EMR's step and cluster requests (the cluster from
emr/cluster-config.json with its ``${PLACEHOLDERS}`` filled), the uploads of the code, the
wheelhouse the nodes install from, the ``Plan`` that holds them all, and the list
``--dry-run`` prints.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fruits_pipeline.emr.bundle import ENTRY_NAME, ZIP_NAME, CodeFile, KitFiles, code_files
from fruits_pipeline.emr.options import NewCluster, Options
from fruits_pipeline.emr.s3paths import RunLayout, run_prefix
from fruits_pipeline.emr.wheelhouse import (
    LOCK_NAME,
    Wheelhouse,
    read_lock,
    upload_params,
    wheelhouse_prefix,
)


@dataclass(frozen=True)
class Request:
    """One AWS request: the service, the operation and its parameters (boto3's shape)."""

    service: str
    operation: str
    params: dict

    def as_json(self) -> dict:
        """Return the request as --dry-run prints it."""
        return {"service": self.service, "operation": self.operation, "params": self.params}


@dataclass(frozen=True)
class Job:
    """What a target sends to run the step: the read-only checks it makes first, the step as
    it describes it (EMR on EC2: a StepConfig), and the request that submits the step."""

    checks: tuple[Request, ...]
    step: dict
    submit: Request


def spark_submit_args(layout: RunLayout, input_uri: str, job_args: tuple[str, ...]) -> list[str]:
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
        layout.uri("code", ENTRY_NAME),
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


def load_cluster_template(path: Path) -> dict:
    """Return emr/cluster-config.json (at ``path``) as a dict, x- keys and placeholders
    included."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def cluster_values(
    run_id: str, cluster: NewCluster, layout: RunLayout, wheelhouse: Wheelhouse
) -> dict:
    """Return the placeholder values of emr/cluster-config.json for this run."""
    return {
        "BUCKET": layout.bucket,
        "RUN_PREFIX": layout.prefix,
        "RUN_ID": run_id,
        "WHEELHOUSE": wheelhouse.uri,
        "SUBNET_ID": cluster.subnet_id,
        "SERVICE_ROLE": cluster.service_role,
        "INSTANCE_PROFILE": cluster.instance_profile,
        "SECURITY_CONFIGURATION": cluster.security_configuration,
        "CORE_MARKET": "SPOT" if cluster.spot_core else "ON_DEMAND",
        "CORE_NODES": cluster.core_nodes,
        "SPOT_TASK_NODES": cluster.spot_task_nodes,
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


def encryption_params(kms_key_id: str | None) -> dict:
    """Return the PutObject server-side encryption parameters: SSE-KMS with the user's key,
    or none at all, so that the bucket's default encryption applies (a header would override
    it, and a bucket policy that demands its KMS key would refuse the upload)."""
    if kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
    return {}


def put_object_params(bucket: str, key: str, file: CodeFile, run_id: str, sse: dict) -> dict:
    """Return the PutObject parameters for ``file`` at ``key``, without the Body."""
    return {
        "Bucket": bucket,
        "Key": key,
        "ContentType": file.content_type,
        "Metadata": {"run-id": run_id, "sha256": file.sha256},
        **sse,
    }


class JobBuilder(Protocol):
    """What the plan asks of a cluster target (``targets.Target`` answers)."""

    def architecture(self) -> str | None:
        """The CPU architecture the target's nodes install wheels for; None: it installs
        nothing for this run."""
        ...

    def job(self, command: list[str], layout: RunLayout, wheelhouse: Wheelhouse | None) -> Job:
        """The Job that runs ``command``."""
        ...


@dataclass(frozen=True)
class Plan:
    """Everything a run sends, built before anything is sent."""

    layout: RunLayout
    files: tuple[CodeFile, ...]
    uploads: tuple[dict, ...]  # PutObject params without Body, in the order of ``files``
    job: Job
    wheelhouse: Wheelhouse | None  # None: the target installs nothing (a running cluster)
    sse: dict  # the uploads' server-side encryption parameters


def make_plan(options: Options, kit: KitFiles, workdir: Path, target: JobBuilder) -> Plan:
    """Build every request of the run (local files only, no network) and return the Plan."""
    layout = RunLayout(options.bucket, run_prefix(options.prefix, options.run_id))
    files = tuple(code_files(kit, workdir))
    sse = encryption_params(options.kms_key_id)
    uploads = tuple(
        put_object_params(options.bucket, layout.key("code", f.name), f, options.run_id, sse)
        for f in files
    )
    architecture = target.architecture()
    wheelhouse = None
    if architecture is not None:
        lock_path = kit.lock(architecture)
        lock = read_lock(lock_path, architecture)
        prefix = wheelhouse_prefix(options.prefix, lock.digest)
        wheelhouse = Wheelhouse(options.bucket, prefix, lock, lock_path)
    command = spark_submit_args(layout, options.input, options.job_args)
    job = target.job(command, layout, wheelhouse)
    return Plan(layout, files, uploads, job, wheelhouse, sse)


def dry_run_requests(options: Options, plan: Plan, missing: list[str] | None) -> list[Request]:
    """Return, in order, every request a real run would send (Bodies described, not sent).

    ``missing`` is what the wheelhouse lacks in S3 (None: unknown, so all of it)."""
    checks = [Request("s3", "GetBucketLocation", {"Bucket": options.bucket})]
    if options.input_bucket != options.bucket:
        checks.append(Request("s3", "GetBucketLocation", {"Bucket": options.input_bucket}))
    checks += [
        Request("s3", "GetPublicAccessBlock", {"Bucket": options.bucket}),
        Request("s3", "GetBucketEncryption", {"Bucket": options.bucket}),
        *plan.job.checks,
    ]
    wheels = []
    if plan.wheelhouse is not None:
        house = plan.wheelhouse
        listing = {"Bucket": house.bucket, "Prefix": house.prefix + "/"}
        wheels.append(Request("s3", "ListObjectsV2", listing))
        hashes = {wheel.filename: wheel.sha256 for wheel in house.lock.wheels}
        hashes[LOCK_NAME] = hashlib.sha256(house.lock.text.encode("utf-8")).hexdigest()
        for name in house.missing(()) if missing is None else missing:
            what = "the lock" if name == LOCK_NAME else "wheel"
            params = {"Bucket": house.bucket, "Key": house.key(name)}
            params["Body"] = f"<{what}, sha256 {hashes[name]}>"
            extra = upload_params(name, hashes[name], plan.sse)
            wheels.append(Request("s3", "PutObject", {**params, **extra}))
    puts = [
        Request(
            "s3",
            "PutObject",
            {**params, "Body": f"<{len(f.body)} bytes, sha256 {f.sha256}>"},
        )
        for params, f in zip(plan.uploads, plan.files, strict=True)
    ]
    return [*checks, *wheels, *puts, plan.job.submit]

"""IAM for the EMR kit's tests: the policy documents of docs/emr.md, the IAM action (and
resource) of each request the moto server recorded, and a small evaluator of Allow
statements (wildcards, StringLike/StringEquals conditions) to check one against the other.

The evaluator knows only what the guide's policies use; anything else (another condition
operator, an S3 request it cannot name) fails the test rather than passing it."""

from __future__ import annotations

import base64
import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "emr.md"
ACCOUNT = "123456789012"

_BLOCK = re.compile(r"<!-- policy: ([a-z0-9-]+) -->\s*```json\n(.*?)\n```", re.DOTALL)


def guide_policies(values: dict[str, str] | None = None) -> dict[str, dict]:
    """Return docs/emr.md's policy documents by name (the ``<!-- policy: NAME -->`` before
    each JSON block), placeholders (BUCKET, PREFIX, ACCOUNT_ID, REGION, KEY_ID) replaced by
    ``values`` when given."""
    found = {}
    for name, text in _BLOCK.findall(GUIDE.read_text(encoding="utf-8")):
        for placeholder, value in (values or {}).items():
            text = re.sub(rf"\b{placeholder}\b", value, text)
        found[name] = json.loads(text)
    return found


@dataclass(frozen=True)
class Call:
    """One authorization an AWS request needs: the action, on the resource, with context."""

    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict)
    request: str = ""


def header(entry: dict, name: str) -> str | None:
    return next((v for k, v in entry["headers"].items() if k.lower() == name.lower()), None)


def body_of(entry: dict) -> bytes:
    body = entry.get("body") or ""
    return base64.b64decode(body) if entry.get("body_encoded") else body.encode("utf-8")


def s3_call(entry: dict) -> Call:
    """Return the authorization a path-style S3 request needs."""
    url = urlsplit(entry["url"])
    bucket, _, key = unquote(url.path).lstrip("/").partition("/")
    query = parse_qs(url.query, keep_blank_values=True)
    method = entry["method"]
    seen = f"{method} {url.path}?{url.query}"
    if not key:
        resource = f"arn:aws:s3:::{bucket}"
        for word, action in (
            ("location", "s3:GetBucketLocation"),
            ("publicAccessBlock", "s3:GetBucketPublicAccessBlock"),
            ("encryption", "s3:GetEncryptionConfiguration"),
            ("uploads", "s3:ListBucketMultipartUploads"),
        ):
            if word in query and method == "GET":
                return Call(action, resource, request=seen)
        if method == "GET" and ("list-type" in query or not query):
            prefix = query.get("prefix", [""])[0]
            return Call("s3:ListBucket", resource, {"s3:prefix": prefix}, seen)
        raise AssertionError(f"an S3 bucket request the test cannot name: {seen}")
    resource = f"arn:aws:s3:::{bucket}/{key}"
    if method in ("GET", "HEAD"):
        return Call("s3:GetObject", resource, request=seen)
    if method in ("PUT", "POST"):  # PutObject, and the parts of a multipart upload
        return Call("s3:PutObject", resource, request=seen)
    if method == "DELETE":
        action = "s3:AbortMultipartUpload" if "uploadId" in query else "s3:DeleteObject"
        return Call(action, resource, request=seen)
    raise AssertionError(f"an S3 object request the test cannot name: {seen}")


def emr_calls(entry: dict, region: str) -> list[Call]:
    """Return the authorizations an EMR request needs, those AWS checks along with the
    operation included: tags and an auto-termination policy given to RunJobFlow are
    elasticmapreduce:AddTags and PutAutoTerminationPolicy, its roles iam:PassRole."""
    operation = header(entry, "X-Amz-Target").split(".", 1)[1]
    body = json.loads(body_of(entry) or b"{}")
    cluster = body.get("ClusterId") or body.get("JobFlowId") or "*"
    resource = f"arn:aws:elasticmapreduce:{region}:{ACCOUNT}:cluster/{cluster}"
    if operation != "RunJobFlow":
        return [Call(f"elasticmapreduce:{operation}", resource, request=operation)]
    new = f"arn:aws:elasticmapreduce:{region}:{ACCOUNT}:cluster/j-NEW"
    calls = [Call("elasticmapreduce:RunJobFlow", "*", request=operation)]
    if body.get("Tags"):
        calls.append(Call("elasticmapreduce:AddTags", new, request="RunJobFlow Tags"))
    if body.get("AutoTerminationPolicy"):
        action = "elasticmapreduce:PutAutoTerminationPolicy"
        calls.append(Call(action, new, request="RunJobFlow AutoTerminationPolicy"))
    for role, service in (("ServiceRole", "elasticmapreduce"), ("JobFlowRole", "ec2")):
        calls.append(
            Call(
                "iam:PassRole",
                f"arn:aws:iam::{ACCOUNT}:role/{body[role]}",
                {"iam:PassedToService": f"{service}.amazonaws.com"},
                f"RunJobFlow {role}",
            )
        )
    return calls


def calls_of(entries: list[dict], region: str) -> list[Call]:
    """Return every authorization the recorded requests needed, in order."""
    calls = []
    for entry in entries:
        if header(entry, "X-Amz-Target"):
            calls += emr_calls(entry, region)
        else:
            calls.append(s3_call(entry))
            kms_key = header(entry, "x-amz-server-side-encryption-aws-kms-key-id")
            if kms_key and entry["method"] in ("PUT", "POST"):
                calls.append(Call("kms:GenerateDataKey", kms_key, request="SSE-KMS upload"))
    return calls


def listed(value) -> list:
    return value if isinstance(value, list) else [value]


def conditions_hold(conditions: dict, context: dict[str, str]) -> bool:
    for operator, tests in conditions.items():
        if operator not in ("StringLike", "StringEquals"):
            raise AssertionError(f"the test's evaluator does not know {operator}")
        for key, wanted in tests.items():
            value = context.get(key)
            if value is None:
                return False
            if operator == "StringEquals" and value not in listed(wanted):
                return False
            if operator == "StringLike" and not any(
                fnmatch.fnmatchcase(value, pattern) for pattern in listed(wanted)
            ):
                return False
    return True


def allows(policy: dict, call: Call) -> bool:
    """True when an Allow statement of ``policy`` covers ``call``."""
    for statement in listed(policy["Statement"]):
        if statement["Effect"] != "Allow":
            continue
        actions = [a.lower() for a in listed(statement["Action"])]
        if not any(fnmatch.fnmatchcase(call.action.lower(), a) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(call.resource, r) for r in listed(statement["Resource"])):
            continue
        if conditions_hold(statement.get("Condition", {}), call.context):
            return True
    return False


def refused(policy: dict, calls: list[Call]) -> list[str]:
    """Return, one line each, the calls ``policy`` does not allow."""
    return [
        f"{call.action} on {call.resource} {call.context or ''} ({call.request})"
        for call in calls
        if not allows(policy, call)
    ]

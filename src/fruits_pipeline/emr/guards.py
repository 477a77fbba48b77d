"""The EU and privacy guards: the region and the buckets must be in the EU, and the bucket
must block public access and encrypt by default.

``--allow-non-eu`` lets a region or a bucket outside the EU through, with a warning;
``--force`` turns the privacy refusal into warnings.  The submitter never writes a bucket
policy or an ACL, so nothing here can open a bucket either.
"""

from __future__ import annotations

import logging
from typing import Protocol

from fruits_pipeline.emr.errors import UsageError

log = logging.getLogger(__name__)

#: AWS regions inside the European Union.  London (eu-west-2) and Zurich (eu-central-2) are
#: in Europe but not in the EU: they need --allow-non-eu.
EU_REGIONS = frozenset(
    {"eu-central-1", "eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-3"}
)
#: Algorithms that count as default encryption at rest.
ENCRYPTION_ALGORITHMS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})
PUBLIC_ACCESS_FLAGS = (
    "BlockPublicAcls",
    "IgnorePublicAcls",
    "BlockPublicPolicy",
    "RestrictPublicBuckets",
)


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


def region_of_location(location_constraint: str | None) -> str:
    """Return the region of a GetBucketLocation answer (None is us-east-1, EU eu-west-1)."""
    if not location_constraint:
        return "us-east-1"
    return "eu-west-1" if location_constraint == "EU" else location_constraint


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


class BucketQuestions(Protocol):
    """What the guards ask AWS about a bucket (``aws.Aws`` answers)."""

    def bucket_region(self, bucket: str) -> str:
        """Return the region of ``bucket``."""
        ...

    def bucket_settings(self, bucket: str) -> tuple[dict | None, dict | None]:
        """Return (public access block, default encryption) of ``bucket``; None when unset."""
        ...


def check_buckets(
    answers: BucketQuestions,
    bucket: str,
    input_bucket: str,
    *,
    region: str,
    allow_non_eu: bool,
    force: bool,
) -> None:
    """Apply the guards to the run's ``bucket`` and the ``input_bucket`` it reads, for a
    cluster in ``region``; raise UsageError on a refusal, log a warning otherwise."""
    check_bucket_region(bucket, answers.bucket_region(bucket), region, allow_non_eu)
    if input_bucket != bucket:
        from botocore.exceptions import ClientError

        # The input may be someone else's bucket: reading it can be allowed while asking
        # where it is is not.
        try:
            where = answers.bucket_region(input_bucket)
            check_bucket_region(input_bucket, where, region, allow_non_eu)
        except ClientError as error:
            log.warning("could not check the region of input bucket %s: %s", input_bucket, error)
    problems = bucket_problems(*answers.bucket_settings(bucket))
    if problems and not force:
        raise UsageError(
            f"bucket {bucket} is not private enough: {'; '.join(problems)} "
            "(turn on Block Public Access and default encryption; --force to go on anyway)"
        )
    for problem in problems:
        log.warning("bucket %s: %s (--force given)", bucket, problem)


def check_bucket_region(bucket: str, where: str, region: str, allow_non_eu: bool) -> None:
    """Raise UsageError for a bucket ``where`` outside the EU, unless ``allow_non_eu``; warn
    when it is not in the cluster's ``region``."""
    if where not in EU_REGIONS:
        if not allow_non_eu:
            raise UsageError(
                f"bucket {bucket} is in {where}, outside the EU (--allow-non-eu to override)"
            )
        log.warning("bucket %s is in %s, outside the EU (--allow-non-eu given)", bucket, where)
    if where != region:
        log.warning("bucket %s is in %s, the cluster in %s", bucket, where, region)

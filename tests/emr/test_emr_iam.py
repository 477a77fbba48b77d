"""docs/emr.md's IAM and network documents: each a policy a user can paste (valid JSON, the
shape IAM takes), the lifecycle rule a valid S3 request that moto applies, and what they
allow against what the kit needs.  Whether every request the submitter and the bootstrap
really send is allowed is checked where those run (test_emr_submit.py,
test_emr_bootstrap.py), from moto's recording."""

from __future__ import annotations

import json
import re

import botocore.session
import pytest
from botocore.validate import ParamValidator
from iam import ACCOUNT, GUIDE, Call, allows, guide_policies  # tests/emr/iam.py

from fruits_pipeline.emr import options
from fruits_pipeline.results.lock import STAGING_TAG

VALUES = {
    "BUCKET": "fruits-eu",
    "PREFIX": "fruits-pipeline",
    "ACCOUNT_ID": ACCOUNT,
    "REGION": "eu-west-1",
    "KEY_ID": "k-1",
}
IDENTITIES = {"submitter", "service-role", "instance-profile"}


def test_each_identity_has_one_policy_a_user_can_paste():
    policies = guide_policies()
    assert set(policies) == IDENTITIES | {
        "service-role-trust",
        "instance-profile-trust",
        "s3-gateway-endpoint",
    }
    for name, policy in policies.items():
        assert set(policy) == {"Version", "Statement"}, name
        assert policy["Version"] == "2012-10-17"
        sids = [statement.get("Sid") for statement in policy["Statement"]]
        assert len([s for s in sids if s]) == len({s for s in sids if s}), name
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow"
            keys = {"Sid", "Effect", "Action", "Resource", "Principal", "Condition"}
            assert set(statement) <= keys
            assert "Action" in statement
            # identity policies name resources; trust and endpoint policies name principals
            assert ("Principal" in statement) == (name not in IDENTITIES), name
            assert ("Resource" in statement) == (not name.endswith("-trust")), name


def test_the_placeholders_are_the_documented_ones():
    text = GUIDE.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- policy: [a-z0-9-]+ -->\s*```json\n(.*?)\n```", text, re.DOTALL)
    words = set(re.findall(r"\b[A-Z][A-Z_]{2,}\b", "\n".join(blocks)))
    assert words == set(VALUES)
    for placeholder in VALUES:
        assert f"`{placeholder}`" in text  # the guide says what to put there


def test_the_policies_name_the_submitters_default_roles():
    parser = options.build_parser()
    roles = [parser.get_default("service_role"), parser.get_default("instance_profile")]
    submitter = guide_policies(VALUES)["submitter"]
    for role, service in zip(roles, ("elasticmapreduce", "ec2"), strict=True):
        call = Call(
            "iam:PassRole",
            f"arn:aws:iam::{ACCOUNT}:role/{role}",
            {"iam:PassedToService": f"{service}.amazonaws.com"},
        )
        assert allows(submitter, call), role
    elsewhere = Call("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/Admin", call.context)
    assert not allows(submitter, elsewhere)
    service = guide_policies(VALUES)["service-role"]
    pass_nodes = Call(
        "iam:PassRole",
        f"arn:aws:iam::{ACCOUNT}:role/{roles[1]}",
        {"iam:PassedToService": "ec2.amazonaws.com"},
    )
    assert allows(service, pass_nodes)


@pytest.mark.parametrize(
    ("identity", "action", "key", "allowed"),
    [
        # the nodes: the S3A committers on the output, the input's own key before its listing
        ("instance-profile", "s3:AbortMultipartUpload", "fruits-pipeline/runs/r1/output/x", True),
        ("instance-profile", "s3:GetObject", "fruits-pipeline/runs/r1/output", True),
        ("instance-profile", "s3:GetObject", "data/Test", True),
        ("instance-profile", "s3:ListBucketMultipartUploads", "", True),
        ("instance-profile", "s3:PutObject", "fruits-pipeline/runs/r1/code/x", False),
        ("instance-profile", "s3:PutObject", "fruits-pipeline/wheelhouse/d/x.whl", False),
        ("instance-profile", "s3:DeleteObject", "data/Test/x.jpg", False),
        ("instance-profile", "kms:Decrypt", None, True),
        # you: no reading the input, no writing the output
        ("submitter", "s3:GetObject", "data/Test/x.jpg", False),
        ("submitter", "s3:PutObject", "fruits-pipeline/runs/r1/output/report.json", False),
        ("submitter", "s3:GetObject", "fruits-pipeline/runs/r1/output/report.html", True),
        ("submitter", "kms:Decrypt", None, True),  # links to SSE-KMS objects
    ],
)
def test_what_each_identity_may_and_may_not_do(identity, action, key, allowed):
    policy = guide_policies(VALUES)[identity]
    if action.startswith("kms:"):
        resource = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/k-1"
    else:
        resource = "arn:aws:s3:::fruits-eu" + (f"/{key}" if key else "")
    assert allows(policy, Call(action, resource)) is allowed


def test_the_gateway_endpoint_lets_the_nodes_reach_amazon_linux_and_the_bucket():
    endpoint = guide_policies(VALUES)["s3-gateway-endpoint"]
    for resource in (
        "arn:aws:s3:::al2023-repos-eu-west-1-de612dc2/core/mirrors/latest/x86_64/mirror.list",
        "arn:aws:s3:::repo.eu-west-1.emr.amazonaws.com/apps-repository/x",
        "arn:aws:s3:::fruits-eu/fruits-pipeline/wheelhouse/d/numpy.whl",
    ):
        assert allows(endpoint, Call("s3:GetObject", resource)), resource
    assert not allows(endpoint, Call("s3:GetObject", "arn:aws:s3:::someone-else/x"))


def test_the_lifecycle_rule_is_a_valid_request_that_s3_takes(s3, private_bucket):
    text = GUIDE.read_text(encoding="utf-8")
    (block,) = re.findall(
        r"<!-- request: s3 PutBucketLifecycleConfiguration LifecycleConfiguration -->\s*"
        r"```json\n(.*?)```",
        text,
        re.DOTALL,
    )
    configuration = json.loads(block)
    model = botocore.session.get_session().get_service_model("s3")
    params = {"Bucket": private_bucket, "LifecycleConfiguration": configuration}
    operation = model.operation_model("PutBucketLifecycleConfiguration")
    report = ParamValidator().validate(params, operation.input_shape)
    assert not report.has_errors(), report.generate_report()
    s3.put_bucket_lifecycle_configuration(**params)
    rules = {
        rule["ID"]: rule
        for rule in s3.get_bucket_lifecycle_configuration(Bucket=private_bucket)["Rules"]
    }
    assert set(rules) == {"abort-incomplete-multipart-uploads", "fruits-pipeline-staging"}
    aborts = rules["abort-incomplete-multipart-uploads"]
    assert aborts["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    # the rule expires what the job tags as staging (results/lock.py), and only that
    key, value = STAGING_TAG.split("=")
    staging = rules["fruits-pipeline-staging"]
    assert staging["Filter"] == {"Tag": {"Key": key, "Value": value}}
    assert staging["Expiration"] == {"Days": 7}

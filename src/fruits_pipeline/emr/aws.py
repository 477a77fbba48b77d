"""The calls that leave this machine: one boto3 session, the S3 questions the guards ask,
the uploads, the presigned links, and a client for each service a target calls.

boto3 finds credentials through its default chain (or --profile) and honours
AWS_ENDPOINT_URL, which the tests use to point it at a local moto server.  It is imported
when an ``Aws`` is made, so that --help and --dry-run never load it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from fruits_pipeline.emr.bundle import CodeFile
from fruits_pipeline.emr.guards import region_of_location
from fruits_pipeline.emr.s3paths import s3_uri

log = logging.getLogger(__name__)


class Aws:
    """A boto3 session in one region, with the S3 calls of a run."""

    def __init__(self, region: str, profile: str | None):
        import boto3
        from botocore.config import Config

        self.session = boto3.Session(profile_name=profile, region_name=region)
        self.clients: dict[str, object] = {}
        # SigV4 everywhere: presigned links to SSE-KMS objects need it.
        self.s3 = self.session.client("s3", config=Config(signature_version="s3v4"))
        # On AWS itself, links name the bucket's regional endpoint (bucket.s3.REGION...)
        # rather than the global one; an endpoint set by AWS_ENDPOINT_URL is kept as it is.
        self.signer = self.s3
        if self.s3.meta.endpoint_url.endswith(".amazonaws.com"):
            virtual = Config(signature_version="s3v4", s3={"addressing_style": "virtual"})
            self.signer = self.session.client("s3", config=virtual)

    def client(self, service: str):
        """Return the session's boto3 client for ``service`` (one per service)."""
        if service not in self.clients:
            self.clients[service] = self.session.client(service)
        return self.clients[service]

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

    def upload(self, files: Iterable[CodeFile], uploads: Iterable[dict]) -> None:
        """PutObject each file with its params (server-side encryption included)."""
        for file, params in zip(files, uploads, strict=True):
            self.s3.put_object(Body=file.body, **params)
            log.info(
                "uploaded %s (%d bytes)", s3_uri(params["Bucket"], params["Key"]), len(file.body)
            )

    def presign(self, bucket: str, key: str, seconds: int, content_type: str) -> str:
        """Return a presigned HTTPS GET link to one object, valid ``seconds``, served as
        ``content_type`` (so that a browser shows report.html instead of saving it)."""
        params = {"Bucket": bucket, "Key": key, "ResponseContentType": content_type}
        return self.signer.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)

"""The calls that leave this machine: one boto3 session, the S3 questions the guards ask,
the uploads (the code, the wheelhouse), the presigned links, and a client for each service a
target calls.

boto3 finds credentials through its default chain (or --profile) and honours
AWS_ENDPOINT_URL, which the tests use to point it at a local moto server.  It is imported
when an ``Aws`` is made, so that --help and --dry-run never load it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

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
        self.regions: dict[str, str] = {}  # bucket -> region, asked once
        self.signers: dict[tuple[str, str], object] = {}
        # SigV4 everywhere: presigned links to SSE-KMS objects need it.
        self.s3 = self.session.client("s3", config=Config(signature_version="s3v4"))
        # An endpoint set by AWS_ENDPOINT_URL (the tests' local server) is kept as it is.
        self.on_aws = self.s3.meta.endpoint_url.endswith(".amazonaws.com")

    def client(self, service: str):
        """Return the session's boto3 client for ``service`` (one per service)."""
        if service not in self.clients:
            self.clients[service] = self.session.client(service)
        return self.clients[service]

    def bucket_region(self, bucket: str) -> str:
        """Return the region of ``bucket`` (GetBucketLocation, once per bucket)."""
        if bucket not in self.regions:
            answer = self.s3.get_bucket_location(Bucket=bucket)
            self.regions[bucket] = region_of_location(answer.get("LocationConstraint"))
        return self.regions[bucket]

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
        """PutObject each file with its params (server-side encryption only with a key of
        the user's: otherwise the bucket's default encryption applies)."""
        for file, params in zip(files, uploads, strict=True):
            self.s3.put_object(Body=file.body, **params)
            log.info(
                "uploaded %s (%d bytes)", s3_uri(params["Bucket"], params["Key"]), len(file.body)
            )

    def list_keys(self, bucket: str, prefix: str) -> set[str]:
        """Return every key under ``prefix`` in ``bucket`` (ListObjectsV2, all pages)."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    def upload_path(self, path: Path, bucket: str, key: str, extra: dict) -> None:
        """Upload the file at ``path`` (in parallel parts when it is large: a TensorFlow wheel
        is a quarter of a gigabyte) with PutObject's ``extra`` parameters."""
        self.s3.upload_file(str(path), bucket, key, ExtraArgs=extra)
        log.info("uploaded %s (%d bytes)", s3_uri(bucket, key), path.stat().st_size)

    def signer(self, bucket: str, region: str):
        """Return the client that signs links to ``bucket``, which is in ``region``.

        SigV4 for the bucket's own region (a link signed for another region is refused),
        and on AWS path-style addressing for a name with dots, whose virtual-hosted name
        (a.b.s3.REGION.amazonaws.com) the *.s3.REGION.amazonaws.com certificate does not
        cover.  An endpoint set by AWS_ENDPOINT_URL keeps botocore's addressing."""
        from botocore.config import Config

        style = ("path" if "." in bucket else "virtual") if self.on_aws else "auto"
        if (region, style) not in self.signers:
            config = Config(signature_version="s3v4", s3={"addressing_style": style})
            self.signers[(region, style)] = self.session.client(
                "s3", region_name=region, config=config
            )
        return self.signers[(region, style)]

    def presign(self, bucket: str, key: str, seconds: int, content_type: str, region: str) -> str:
        """Return a presigned HTTPS GET link to one object of ``bucket`` (in ``region``),
        valid ``seconds``, served as ``content_type`` (so that a browser shows report.html
        instead of saving it)."""
        params = {"Bucket": bucket, "Key": key, "ResponseContentType": content_type}
        return self.signer(bucket, region).generate_presigned_url(
            "get_object", Params=params, ExpiresIn=seconds
        )

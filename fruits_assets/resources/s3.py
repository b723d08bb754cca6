"""The boto3 S3 client of Python-side writes (small values, EMR staging), encrypting what it writes."""

from typing import Any

from dagster_aws.s3 import S3Resource
from pydantic import Field

from fruits_assets.vision.storage import encryption_params

# The S3 calls that create an object; each must ask for server-side encryption.
WRITE_OPERATIONS = ("PutObject", "CreateMultipartUpload", "CopyObject")


def register_encryption(events: Any, kms_key_id: str | None) -> None:
    """Ask for server-side encryption on every object written through `events` (a client's or a session's)."""
    encryption = encryption_params(kms_key_id)

    def add_encryption(params: dict, **_: Any) -> None:  # botocore passes the call's parameters as `params`
        for name, value in encryption.items():
            params.setdefault(name, value)

    for operation in WRITE_OPERATIONS:
        events.register(f"before-parameter-build.s3.{operation}", add_encryption)


def encrypt_writes(client: Any, kms_key_id: str | None) -> Any:
    """`client`, asking for server-side encryption on every object it writes, whoever calls it."""
    register_encryption(client.meta.events, kms_key_id)
    return client


class EncryptedS3Resource(S3Resource):
    """dagster-aws's S3 resource (credentials and endpoint from the standard AWS chain), encrypting writes.

    dagster-aws's S3 IO manager writes with plain `upload_fileobj`; the client it
    gets from here adds the encryption S3A adds to Spark's writes.
    """

    kms_key_id: str | None = Field(default=None, description="A KMS key for SSE-KMS; SSE-S3 without one.")

    def get_client(self) -> Any:
        return encrypt_writes(super().get_client(), self.kms_key_id)

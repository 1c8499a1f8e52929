"""botocore errors → Kawa's error tree, at the S3 backend's boundary (messages say what to check)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kawa.errors import (
    BucketExists,
    BucketNotEmpty,
    BucketNotFound,
    ConfigError,
    InvalidBucketName,
    KawaError,
    ObjectNotFound,
    StoreError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from kawa.store.s3_types import S3Backend

_NOT_FOUND = ("NoSuchKey", "404", "NotFound")
_REFUSED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403")


def translate(exc: Exception, store: S3Backend, action: str, bucket: str | None, key: str | None) -> KawaError:
    """The Kawa error for a botocore exception raised while doing ``action`` on ``bucket``/``key``."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import ConnectTimeoutError, NoCredentialsError, ReadTimeoutError

    if isinstance(exc, NoCredentialsError):
        return ConfigError(
            "no S3 credentials: set store.access_key_id and store.secret_access_key in kawa.yaml "
            "(or KAWA_STORE__ACCESS_KEY_ID / KAWA_STORE__SECRET_ACCESS_KEY)"
        )
    if isinstance(exc, BotoConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return StoreUnavailable(
            f"cannot reach S3 endpoint {store.endpoint}: {exc}; gave up after {store.config.store.max_attempts} "
            "attempt(s). Check store.endpoint_url and that the server is running"
        )
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return StoreError(f"S3 {action} failed: {exc}")
    return _client_error(response, store, action, bucket, key)


def _client_error(
    response: dict[str, Any], store: S3Backend, action: str, bucket: str | None, key: str | None
) -> StoreError:
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    message = error.get("Message") or code
    where = f"{key!r} in bucket {bucket!r}" if key is not None else f"bucket {bucket!r}"
    missing_bucket = f"bucket {bucket!r} does not exist; create it with `kawa buckets create {bucket}`"
    if code == "NoSuchBucket" or (code in _NOT_FOUND and key is None):
        return BucketNotFound(missing_bucket)
    if code in _NOT_FOUND:
        # HEAD answers a bare 404 for a missing bucket too: ask which one is missing.
        if bucket is not None and code != "NoSuchKey" and not store.bucket_exists(bucket):
            return BucketNotFound(missing_bucket)
        return ObjectNotFound(f"object {where} not found")
    if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
        return BucketExists(f"bucket {bucket!r} already exists ({code})")
    if code == "BucketNotEmpty":
        return BucketNotEmpty(f"bucket {bucket!r} is not empty; delete its objects first (`kawa rm`)")
    if code == "InvalidBucketName":
        return InvalidBucketName(f"S3 rejected bucket name {bucket!r}: {message}")
    if code in _REFUSED:
        return StoreError(
            f"S3 {action} of {where} was refused ({code}: {message}); check store.access_key_id, "
            "store.secret_access_key and the bucket policy"
        )
    return StoreError(f"S3 {action} of {where} failed: {code}: {message}")

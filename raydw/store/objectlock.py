"""Create-if-absent on object stores, for the driver lock: S3's conditional PUT (`If-None-Match: *`, generally
available since 2024; MinIO and moto honour it too). pyarrow's S3 filesystem has no conditional write, so this one
request goes through boto3 (the optional extra `raydw[s3]`). Other object stores keep the best-effort check-then-PUT,
said in a warning. Torch-free.
"""
from __future__ import annotations

import sys
from urllib.parse import parse_qs, urlparse


class ObjectLockError(RuntimeError):
    """The lock could not be created (boto3 absent, a refused request); raydw.store says it as a StoreError."""


def create_if_absent(store, parts: tuple[str, ...], data: bytes) -> bool:
    """Write `data` at `parts` unless an object is there already; True if this call created it."""
    parsed = urlparse(store.uri)
    if parsed.scheme not in ("s3", "s3a"):
        print(f"warning: {store.uri}: a {parsed.scheme}:// store's driver lock is best effort (check, then write): two "
              "drivers started in the same moment could both take it", file=sys.stderr, flush=True)
        if store.exists(*parts):
            return False
        store.write_bytes(parts, data)
        return True
    try:
        import boto3
        from botocore.exceptions import ClientError
    except ImportError:
        raise ObjectLockError(f"results store {store.uri}: an s3:// store's driver lock is a conditional PUT made with "
                         "boto3, which is not installed: pip install 'raydw[s3]'") from None
    bucket, _, key = store.path(*parts).partition("/")
    q = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    endpoint = q.get("endpoint_override")  # as pyarrow reads the URI; else boto3's own AWS_ENDPOINT_URL(_S3)
    if endpoint and "://" not in endpoint:
        endpoint = f"{q.get('scheme', 'https')}://{endpoint}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name=q.get("region"))
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as e:
        # 412: the object exists; 409: another conditional write of it is in flight (S3 says: retry; we lose the race)
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or \
                e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
            return False
        raise ObjectLockError(f"results store {store.uri}: cannot create its lock {bucket}/{key}: {e}") from None
    return True

"""Image bytes in S3-compatible object storage (AWS S3, MinIO, Cloudflare R2) through boto3.

Chosen by ``STUDIO_STORAGE_URL=s3://bucket/prefix``. Endpoint, region and credentials come from the
usual AWS variables, so one set of code talks to every S3-compatible service:

- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: the service's URL (unset: AWS itself). With an
  endpoint, requests use path-style addressing (``http://host/bucket/key``), which MinIO and R2 take
  without wildcard DNS; on AWS boto3 picks the addressing itself.
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (R2: ``auto``).
- credentials: boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an
  instance role). They are never logged or put in a message.

The file-before-record rule holds because ``put`` returns only once the object is stored *and* has
been checked: the upload carries its MD5 (``Content-MD5``) and SHA-256 (``x-amz-checksum-sha256``),
which S3 checks on arrival (BadDigest otherwise), and the service's answer must name the same
object: its ETag (the MD5 of what it stored, for a single-part upload not encrypted with KMS or a
customer key) and its SHA-256 where it reports one. When the answer has no MD5 to compare (KMS), a
HEAD must report the same size and SHA-256. An object that does not match is deleted and ``put``
raises ``StorageError``; the caller then writes no row.

Objects are never given a public ACL: browsers get an image through ``url`` (a presigned GET that
expires) or through the server, which reads the bytes.

boto3 is imported only when an ``S3FileStore`` is made, so ``import studio`` stays fast.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from studio.storage.files import StorageError

log = logging.getLogger(__name__)

# The longest a presigned URL may live: SigV4 allows 7 days; images are shown within minutes.
MAX_URL_SECONDS = 7 * 24 * 3600
DEFAULT_URL_SECONDS = 300
# S3's own bucket naming rules (3-63 characters, lower case letters, digits, dots and hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                  ".json": "application/json"}


@dataclass(frozen=True)
class S3Location:
    """Where a store's objects live: ``bucket`` and ``prefix`` (no leading or trailing slash; "" for
    the bucket's root)."""

    bucket: str
    prefix: str = ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_s3_url(url: str) -> S3Location:
    """``s3://bucket/prefix`` -> ``S3Location``; ValueError saying what is wrong for anything else
    (another scheme, no or a malformed bucket name, a query, ``..`` or empty segments in the prefix)."""
    text = str(url).strip()
    parts = urlsplit(text)
    if parts.scheme != "s3":
        raise ValueError("it takes s3://bucket/prefix")
    if parts.query or parts.fragment or parts.username or parts.password or parts.port:
        raise ValueError("it takes s3://bucket/prefix, with no user, port, query or fragment")
    bucket = parts.hostname or ""
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not an S3 bucket name (3-63 lower case letters, digits, dots, hyphens)")
    prefix = parts.path.strip("/")
    if prefix:
        _check_segments(prefix, "the prefix")
    return S3Location(bucket, prefix)


def _check_segments(key: str, what: str) -> None:
    segments = key.split("/")
    if any(segment in ("", ".", "..") for segment in segments) or "\\" in key or "\x00" in key:
        raise ValueError(f"refusing {what} {key!r}: empty, '.' or '..' segments")


def client_from_environment():
    """A boto3 S3 client configured from the usual AWS variables (see the module docstring)."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    config = Config(
        signature_version="s3v4",
        # MinIO and R2 behind one host name need path-style; AWS chooses for itself.
        s3={"addressing_style": "path" if endpoint else "auto"},
        # We send our own checksums on upload; boto3's default extra CRC32 trailers are refused by
        # some S3-compatible services, so only what an operation requires is added.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,  # a batch saves from several threads at once
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint, region_name=region, config=config)


class S3FileStore:
    """The ``FileStore`` interface over one bucket and prefix. Keys are the studio's relative keys
    (``images/<category>/<yyyy>/<mm>/<dd>/<id>.png``); each is stored as ``<prefix>/<key>``.

    Thread-safe (a boto3 client may be shared by threads). Every method raises ``StorageError`` when
    the service refuses or cannot be reached, naming the operation, the key and the service's error
    code (never a credential); ``get`` and ``move`` raise ``FileNotFoundError`` for a missing key, as
    the local store does."""

    page_size = 1000  # keys per listing request (S3's own maximum)

    def __init__(self, location: S3Location | str, client: Any = None):
        self.location = location if isinstance(location, S3Location) else parse_s3_url(location)
        self.client = client if client is not None else client_from_environment()

    # -- keys ---------------------------------------------------------------------------------

    def _object(self, key: str) -> str:
        _check_segments(key, "the storage key")
        return f"{self.location.prefix}/{key}" if self.location.prefix else key

    def _relative(self, name: str) -> str:
        return name[len(self.location.prefix) + 1:] if self.location.prefix else name

    def location_of(self, key: str) -> str:
        """``s3://bucket/prefix/key``: where a key's object is, for messages and the CLI."""
        return f"s3://{self.location.bucket}/{self._object(key)}"

    # -- the FileStore interface --------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` and check that what S3 holds is exactly it (see the module
        docstring). On a mismatch the object is deleted and ``StorageError`` raised."""
        name = self._object(key)
        md5 = hashlib.md5(data, usedforsecurity=False)
        sha256 = base64.b64encode(hashlib.sha256(data).digest()).decode()
        answer = self._call("put", key, self.client.put_object, Bucket=self.location.bucket, Key=name, Body=data,
                            ContentMD5=base64.b64encode(md5.digest()).decode(), ChecksumAlgorithm="SHA256",
                            ChecksumSHA256=sha256, ContentType=_CONTENT_TYPES.get(Path(key).suffix.lower(),
                                                                                 "application/octet-stream"),
                            CacheControl="private, max-age=300")
        # The PUT's own answer carries the stored object's MD5 (ETag): one request, not two. Only
        # where it cannot (KMS-encrypted buckets) is the object looked at again.
        if _plain_etag(answer):
            problem = _mismatch({**answer, "ContentLength": len(data)}, len(data), md5.hexdigest(), sha256)
        else:
            problem = _mismatch(self._head(key, checksums=True), len(data), md5.hexdigest(), sha256)
        if problem:
            try:
                self.client.delete_object(Bucket=self.location.bucket, Key=name)
            except Exception:  # the verification error below is the one to report; this is logged
                log.exception("could not delete the damaged upload %s", self.location_of(key))
            raise StorageError(f"image storage: the upload of {key} did not arrive intact ({problem}); "
                               f"nothing was saved")

    def get(self, key: str) -> bytes:
        response = self._call("get", key, self.client.get_object, Bucket=self.location.bucket, Key=self._object(key))
        try:
            return response["Body"].read()
        except Exception as exc:
            raise StorageError(f"image storage: reading {key} failed: {type(exc).__name__}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def delete(self, key: str) -> None:
        # S3 answers a delete of a missing key with success too: idempotent, like the local store.
        self._call("delete", key, self.client.delete_object, Bucket=self.location.bucket, Key=self._object(key))

    def move(self, src: str, dst: str) -> None:
        """Copy ``src`` to ``dst``, check the copy (size and ETag/checksum as the source's), then
        delete ``src``. A crash in between leaves both, never neither."""
        source = self._head(src, checksums=True)
        if source is None:
            raise FileNotFoundError(f"no stored object {src}")
        self._call("copy", dst, self.client.copy_object, Bucket=self.location.bucket, Key=self._object(dst),
                   CopySource={"Bucket": self.location.bucket, "Key": self._object(src)})
        copied = self._head(dst, checksums=True)
        problem = _copy_mismatch(source, copied)
        if problem:
            raise StorageError(f"image storage: the copy of {src} to {dst} does not match it ({problem}); "
                               f"the original is kept")
        self.delete(src)

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (a folder-like key such as "images"; "" for all), page by page."""
        if prefix:
            listed = self._object(prefix.strip("/")) + "/"
        else:
            listed = f"{self.location.prefix}/" if self.location.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.location.bucket, Prefix=listed,
                                   PaginationConfig={"PageSize": self.page_size})
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield self._relative(item["Key"])
        except Exception as exc:
            raise self._error("list", prefix or "/", exc) from exc

    def local_path(self, key: str) -> Path | None:
        return None  # objects have no path on this machine: read them with get, or hand out url()

    def discard_partial(self, key: str) -> None:
        """Nothing to do: a single PUT is all or nothing on S3 (no partial objects are left)."""

    def url(self, key: str, expires: int = DEFAULT_URL_SECONDS) -> str:
        """A presigned GET URL for ``key`` that works for ``expires`` seconds (1 to 7 days). Made
        locally (no request); it grants reading that one object only."""
        if not 1 <= int(expires) <= MAX_URL_SECONDS:
            raise ValueError(f"a presigned URL lives 1 to {MAX_URL_SECONDS} seconds, not {expires}")
        params = {"Bucket": self.location.bucket, "Key": self._object(key)}
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=int(expires))

    def close(self) -> None:
        """Close the client's pooled connections (a later call opens new ones)."""
        self.client.close()

    def check(self) -> None:
        """Raise ``StorageError`` unless the bucket exists and can be reached with these credentials."""
        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except Exception as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket"):
                raise StorageError(f"image storage: the bucket {self.location.bucket!r} does not exist "
                                   f"(create it, or set STUDIO_STORAGE_URL to another)") from exc
            raise self._error("open the bucket", str(self.location), exc) from exc

    # -- helpers ------------------------------------------------------------------------------

    def _head(self, key: str, checksums: bool = False) -> dict | None:
        """The object's HEAD answer, or None when there is no such key."""
        extra = {"ChecksumMode": "ENABLED"} if checksums else {}
        try:
            return self.client.head_object(Bucket=self.location.bucket, Key=self._object(key), **extra)
        except Exception as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error("check", key, exc) from exc

    def _call(self, what: str, key: str, method, **params):
        try:
            return method(**params)
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404") and what in ("get", "copy"):
                raise FileNotFoundError(f"no stored object {key}") from exc
            raise self._error(what, key, exc) from exc

    def _error(self, what: str, key: str, exc: Exception) -> StorageError:
        code = _code(exc) or type(exc).__name__
        # botocore's messages name the operation, endpoint and error code, never the credentials.
        return StorageError(f"image storage: {what} {key} in {self.location} failed: {code}: {exc}")


def _code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "") or None
    return None


def _plain_etag(head: dict) -> str | None:
    """The ETag when it is the object's MD5 (single-part, not encrypted with KMS or a customer key)."""
    etag = str(head.get("ETag") or "").strip('"')
    if not re.fullmatch(r"[0-9a-f]{32}", etag):
        return None
    if head.get("ServerSideEncryption") == "aws:kms" or head.get("SSECustomerAlgorithm"):
        return None
    return etag


def _mismatch(head: dict | None, size: int, md5_hex: str, sha256_b64: str) -> str | None:
    """Why the stored object (its HEAD answer) is not the bytes we sent; None when it is."""
    if head is None:
        return "it is not there after the upload"
    if int(head.get("ContentLength", -1)) != size:
        return f"{head.get('ContentLength')} bytes stored, {size} sent"
    checked = False
    stored_sha = head.get("ChecksumSHA256")
    if stored_sha:
        if stored_sha != sha256_b64:
            return "its SHA-256 differs"
        checked = True
    etag = _plain_etag(head)
    if etag:
        if etag != md5_hex:
            return "its MD5 (ETag) differs"
        checked = True
    if not checked:
        return "the service reported neither a SHA-256 nor an MD5 to compare"
    return None


def _copy_mismatch(source: dict, copied: dict | None) -> str | None:
    if copied is None:
        return "the copy is not there"
    if copied.get("ContentLength") != source.get("ContentLength"):
        return f"{copied.get('ContentLength')} bytes, the original {source.get('ContentLength')}"
    before, after = source.get("ChecksumSHA256"), copied.get("ChecksumSHA256")
    if before and after and before != after:
        return "its SHA-256 differs"
    before, after = _plain_etag(source), _plain_etag(copied)
    if before and after and before != after:
        return "its MD5 (ETag) differs"
    return None

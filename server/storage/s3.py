"""S3-compatible blob store (``GATEWAY_STORAGE=s3``): ``<prefix>blobs/<key>`` in one bucket.

Keys are content-addressed and unique per write (``server/core/blobkeys.new_blob_key``),
so an object never changes once written and any replica may cache it.

Atomicity and durability: an S3 object becomes visible whole or not at all. A blob up
to ``part_size`` bytes is one ``PutObject``; a bigger one is a multipart upload read
part by part from the spooled file (one part in memory at a time) and made visible by
``CompleteMultipartUpload``. Every request carries ``Content-MD5``, so the server refuses
a truncated or altered body. The call returns only after the server acknowledged the
object, i.e. an instance is durable in the store before the index commit and the
answer; :meth:`S3BlobStore.sync` has nothing left to do.

A failed multipart upload is aborted at once. One left behind by a process that died
(``kill -9``, power loss) is invisible to readers (it is not an object) and is aborted
by :meth:`S3BlobStore.clean_spool` (start-up of any replica, ``check --repair``) once it
is older than an hour, so that uploads in progress in other replicas are left alone. A
bucket lifecycle rule ``AbortIncompleteMultipartUpload`` does the same on the server side.

Reads: :meth:`S3BlobStore.open` gives a seekable file whose ``read(n)`` is one ranged
``GetObject`` (frames are read by offset and length, never the whole object).
:meth:`S3BlobStore.path` is for decoders that need a local file (pydicom): the object is
downloaded once into a bounded local cache (``<data_dir>/s3-cache``, least recently used
files removed first).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from server.errors import NotFound, ServiceUnavailable
from server.metrics import metered, timed

if TYPE_CHECKING:
    from server.settings import S3Settings

log = logging.getLogger("gateway.storage.s3")

MIN_PART = 5 * 1024 * 1024  # S3's smallest part (all but the last)
ABANDONED_AFTER = 3600.0  # seconds: multipart uploads older than this are aborted
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class S3WriteError(OSError):
    """A blob could not be written (the ingest pipeline answers 0xA700 for that part)."""


@dataclass(frozen=True)
class S3Config:
    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    ca_file: Path | None = None
    prefix: str = ""
    part_size: int = 8 * 1024 * 1024
    upload_concurrency: int = 4  # parts of one multipart upload in flight at once
    cache_bytes: int = 2 * 1024**3
    timeout: float = 30.0
    abandoned_after: float = ABANDONED_AFTER

    @classmethod
    def from_settings(cls, s: S3Settings) -> S3Config:
        secret = s.secret_access_key.get_secret_value() if s.secret_access_key else None
        return cls(
            bucket=s.bucket or "", endpoint_url=s.endpoint_url, region=s.region,
            access_key_id=s.access_key_id, secret_access_key=secret, ca_file=s.ca_file,
            prefix=s.prefix, part_size=s.part_size_mb * 1024 * 1024,
            upload_concurrency=s.upload_concurrency,
            cache_bytes=s.cache_mb * 1024 * 1024, timeout=s.timeout,
            abandoned_after=s.abandon_uploads_after,
        )  # fmt: skip


def make_client(config: S3Config) -> Any:
    """A botocore S3 client: path-style addressing, checksums only when S3 requires them
    (S3-compatible servers differ in their support of the newer trailing checksums)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        verify=str(config.ca_file) if config.ca_file else None,
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            connect_timeout=min(config.timeout, 10.0),
            read_timeout=config.timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=32,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return str(error.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    return ""


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _describe(exc: BaseException) -> str:
    """What went wrong, without request details that could carry credentials."""
    code = _code(exc)
    return f"{type(exc).__name__} {code}".strip()


@metered("s3")
class S3BlobStore:
    def __init__(self, config: S3Config, cache_dir: Path, client: Any | None = None) -> None:
        if not config.bucket:
            raise ValueError("GATEWAY_S3__BUCKET is required with GATEWAY_STORAGE=s3")
        self.config = config
        self.bucket = config.bucket
        self.client = client if client is not None else make_client(config)
        self._blobs = f"{config.prefix}blobs/"
        self._quarantine = f"{config.prefix}quarantine/"
        self.part_size = max(config.part_size, MIN_PART)
        self.cache_dir = cache_dir
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._cache_lock = threading.Lock()
        self._last_trim = 0.0

    # -- naming ------------------------------------------------------------------------
    def _object_key(self, key: str) -> str:
        if "/" in key or "\\" in key or key.startswith(".") or not key:
            raise ValueError(f"invalid blob key {key!r}")
        return self._blobs + key

    def ready(self) -> str | None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            code = _code(exc)
            if code in _MISSING:
                return f"bucket {self.bucket} not found"
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return f"access to bucket {self.bucket} refused ({code})"
            return f"object storage unreachable ({_describe(exc)})"
        return None

    # -- writes ------------------------------------------------------------------------
    def put_file(self, key: str, source: Path) -> None:
        """Upload ``source`` as ``key``; visible only once complete; ``source`` is removed."""
        target = self._object_key(key)
        try:
            size = source.stat().st_size
            with source.open("rb") as f:
                if size <= self.part_size:
                    data = f.read()
                    if len(data) != size:
                        raise S3WriteError("spooled file changed during upload")
                    self.client.put_object(
                        Bucket=self.bucket, Key=target, Body=data, ContentMD5=_md5(data),
                        ContentType="application/dicom",
                    )  # fmt: skip
                else:
                    self._multipart(target, f, size)
        except OSError:
            raise
        except Exception as exc:
            raise S3WriteError(f"object storage write failed ({_describe(exc)})") from exc
        source.unlink(missing_ok=True)

    def _multipart(self, target: str, f: BinaryIO, size: int) -> None:
        """Parts read in order and sent ``upload_concurrency`` at a time (memory: that many
        parts plus the one being read); any failure aborts the upload."""
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=target, ContentType="application/dicom"
        )["UploadId"]
        try:
            etags: dict[int, str] = {}
            sent, number = 0, 0
            width = max(1, self.config.upload_concurrency)
            with ThreadPoolExecutor(width, thread_name_prefix="s3-part") as pool:
                pending: set[Future[None]] = set()
                while chunk := f.read(self.part_size):
                    number += 1
                    sent += len(chunk)
                    if len(pending) >= width:  # bounded: wait for a slot
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()  # the first failure stops the upload
                    pending.add(pool.submit(self._part, target, upload, number, chunk, etags))
                for future in pending:
                    future.result()
            if sent != size:  # the spool changed under us: never complete a short object
                raise S3WriteError(f"spooled file changed during upload ({sent} of {size} bytes)")
            parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=target, UploadId=upload,
                MultipartUpload={"Parts": parts},
            )  # fmt: skip
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=target, UploadId=upload)
            raise

    def _part(
        self, target: str, upload: str, number: int, chunk: bytes, etags: dict[int, str]
    ) -> None:
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=target, UploadId=upload, PartNumber=number,
            Body=chunk, ContentMD5=_md5(chunk),
        )  # fmt: skip
        etags[number] = answer["ETag"]

    def sync(self) -> None:
        """Nothing to do: every put returned after the server acknowledged the object."""

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))
        self._uncache(key)

    def quarantine(self, key: str, reason: str) -> Path | None:
        """Copy the object under ``quarantine/`` with a ``.reason`` object beside it, then
        remove it from ``blobs/``; never deletes data. The returned path names the object."""
        name = f"{self._quarantine}{key}.{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            self.client.copy_object(
                Bucket=self.bucket, Key=name,
                CopySource={"Bucket": self.bucket, "Key": self._object_key(key)},
            )  # fmt: skip
        except Exception as exc:
            if _code(exc) in _MISSING:
                return None
            raise
        self.client.put_object(
            Bucket=self.bucket, Key=name + ".reason", Body=(reason + "\n").encode()
        )
        self.delete(key)
        return Path(name)

    def clean_spool(self, older_than_seconds: float = 0) -> int:
        """Abort multipart uploads abandoned by dead processes (any replica's).

        Uploads younger than ``abandoned_after`` (an hour) are kept whatever
        ``older_than_seconds`` says: other replicas share the bucket and may be uploading.
        """
        age = max(older_than_seconds, self.config.abandoned_after)
        now, count = datetime.now(UTC), 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._blobs):
                for upload in page.get("Uploads", []):
                    if (now - upload["Initiated"]).total_seconds() < age:
                        continue
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    count += 1
        except Exception as exc:  # the store is down: /readyz says so; try again next time
            log.warning("abandoned multipart uploads not cleaned: %s", _describe(exc))
        return count

    def incomplete_uploads(self) -> list[str]:
        """Object keys of multipart uploads not completed nor aborted (tests, ``check``)."""
        out: list[str] = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._blobs):
            out.extend(u["Key"] for u in page.get("Uploads", []))
        return out

    # -- reads -------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except Exception as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        return True

    def local_files(self, keys: Sequence[str]) -> list[tuple[str, int] | None] | None:
        return None  # objects live in the bucket; the read cache is not the store

    def kept_bodies(self) -> None:
        return None  # bodies are kept only beside local blob files

    def size(self, key: str) -> int:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except Exception as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(key) from exc
            raise
        return int(head["ContentLength"])

    def open(self, key: str) -> BinaryIO:
        """A seekable reader: each ``read(n)`` is one ranged GET (NotFound if missing)."""
        try:
            size = self.size(key)
        except FileNotFoundError as exc:
            raise NotFound("the instance's stored data is missing") from exc
        except Exception as exc:
            raise ServiceUnavailable(f"object storage unreachable ({_describe(exc)})") from exc
        return cast(BinaryIO, RangedObject(self.client, self.bucket, self._object_key(key), size))

    def path(self, key: str) -> Path:
        """A local copy in the read cache (downloaded on first use; FileNotFoundError if the
        object is missing)."""
        self._object_key(key)  # validates
        local = self.cache_dir / key
        with contextlib.suppress(FileNotFoundError):
            os.utime(local)  # most recently used
            return local
        part = self.cache_dir / f".{key}.{uuid.uuid4().hex[:8]}"
        try:
            with part.open("wb") as out:
                os.chmod(part, 0o600)
                self.client.download_fileobj(self.bucket, self._object_key(key), out)
            os.replace(part, local)
        except Exception as exc:
            part.unlink(missing_ok=True)
            if _code(exc) in _MISSING:
                raise FileNotFoundError(key) from exc
            if isinstance(exc, OSError):
                raise
            raise ServiceUnavailable(f"object storage unreachable ({_describe(exc)})") from exc
        self._trim()
        return local

    def keys(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._blobs):
            for item in page.get("Contents", []):
                name = item["Key"][len(self._blobs) :]
                if name and "/" not in name:
                    yield name

    # -- local read cache --------------------------------------------------------------
    def _uncache(self, key: str) -> None:
        (self.cache_dir / key).unlink(missing_ok=True)

    def _trim(self) -> None:
        """Remove least recently used cached files beyond ``cache_bytes`` (files used in the
        last minute stay: a decoder may be about to open one)."""
        now = time.monotonic()
        if now - self._last_trim < 5 or not self._cache_lock.acquire(blocking=False):
            return
        try:
            self._last_trim = now
            files = []
            for entry in os.scandir(self.cache_dir):
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat()
                    files.append((st.st_mtime, st.st_size, entry.path))
            total = sum(size for _, size, _ in files)
            wall = time.time()
            for mtime, size, name in sorted(files):
                if total <= self.config.cache_bytes:
                    break
                if wall - mtime < 60:
                    continue
                Path(name).unlink(missing_ok=True)
                total -= size
        finally:
            self._cache_lock.release()


class RangedObject(io.RawIOBase):
    """A read-only, seekable view of one S3 object; ``read(n)`` is one ranged GET."""

    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self._client, self._bucket, self._key, self._size = client, bucket, key, size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        try:
            with timed("s3", "read_range"):  # metrics and a trace span per ranged GET
                answer = self._client.get_object(
                    Bucket=self._bucket, Key=self._key, Range=f"bytes={self._pos}-{end - 1}"
                )
                data = cast(bytes, answer["Body"].read())
        except Exception as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(self._key) from exc
            raise OSError(f"object storage read failed ({_describe(exc)})") from exc
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        return n

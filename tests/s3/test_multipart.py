"""Multipart uploads on a real S3 server send their parts concurrently, never more than
``upload_concurrency`` at once, and the object is assembled in part order."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from server.storage.s3 import S3BlobStore
from tests.s3_server import S3Endpoint

PART = 5 * 1024 * 1024


class _Counting:
    """The real boto3 client, counting the ``upload_part`` calls in flight."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.parts: list[int] = []

    def upload_part(self, **kwargs: Any) -> Any:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(0.05)  # long enough for the next parts to be sent meanwhile
            return self._client.upload_part(**kwargs)
        finally:
            with self._lock:
                self.in_flight -= 1
                self.parts.append(kwargs["PartNumber"])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_parts_go_up_to_the_concurrency_at_once_and_the_object_reads_back_identical(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    config = replace(
        s3_endpoint.config(s3_endpoint.new_bucket(), part_size=PART), upload_concurrency=2
    )
    store = S3BlobStore(config, tmp_path / "cache")
    counting = _Counting(store.client)
    store.client = counting
    data = os.urandom(5 * PART + 777)  # six parts
    spool = tmp_path / "spool"
    spool.write_bytes(data)
    key = f"{hashlib.sha256(data).hexdigest()}.{'0' * 16}.big.dcm"
    store.put_file(key, spool)
    assert sorted(counting.parts) == [1, 2, 3, 4, 5, 6]
    assert counting.most == 2  # concurrent, and bounded
    with store.open(key) as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    assert store.incomplete_uploads() == [] and not spool.exists()

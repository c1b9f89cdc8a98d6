"""``check`` and ``reindex`` read each S3 blob once: one download into the read cache,
hashed and parsed there (no ranged reads for the hash, then a second download)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

from server.core.blobkeys import new_blob_key
from server.services.recovery import record_from_blob
from server.storage.s3 import S3BlobStore
from tests.helpers import cohort, part10
from tests.s3_server import S3Endpoint

READS = ("get_object", "download_fileobj", "download_file")


class _Reads:
    """The real boto3 client, counting the calls that read object bytes."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._client, name)
        if name not in READS:
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return found(*args, **kwargs)

        return counted


def test_indexing_a_blob_from_s3_reads_its_object_once(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    store = S3BlobStore(s3_endpoint.config(s3_endpoint.new_bucket()), tmp_path / "cache")
    ds = cohort(instances_per_series=1)[0]
    data = part10(ds)
    key = new_blob_key(str(ds.SOPInstanceUID), hashlib.sha256(data).hexdigest(), "lung")
    spool = tmp_path / "spool"
    spool.write_bytes(data)
    store.put_file(key, spool)
    reads = _Reads(store.client)
    store.client = reads
    record = record_from_blob(store, key, b"k" * 32)
    assert record.sop_uid == str(ds.SOPInstanceUID) and record.dataset == "lung"
    assert sum(reads.calls.values()) == 1, reads.calls

"""The blob stores the contract suite runs on: the filesystem and a real S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.storage.base import BlobStore
from server.storage.filesystem import FilesystemBlobStore
from server.storage.s3 import S3BlobStore
from tests.s3_server import S3Endpoint

STORES = ["filesystem", "s3"]
PART = 5 * 1024 * 1024  # the smallest multipart part size: bigger blobs go in parts


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "filesystem":
        yield FilesystemBlobStore(tmp_path / "data")
        return
    endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
    config = endpoint.config(endpoint.new_bucket(), part_size=PART)
    yield S3BlobStore(config, tmp_path / "data" / "s3-cache")

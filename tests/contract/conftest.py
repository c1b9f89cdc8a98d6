"""Backends the contract suite runs against. Elasticsearch joins this list in its own issue."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from server.core.records import InstanceRecord, read_instance
from server.index.base import Index
from server.index.sqlite import SqliteIndex
from tests.helpers import CT_IMAGE, instance

BACKENDS = ["sqlite", "elasticsearch"]


@pytest.fixture(params=BACKENDS)
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Index]:
    if request.param == "sqlite":
        backend: Index = SqliteIndex(tmp_path / "index.sqlite")
        yield backend
        backend.close()
        return
    url = request.getfixturevalue("elasticsearch_url")
    from elasticsearch import Elasticsearch

    from server.index.elasticsearch import ElasticsearchIndex

    prefix = f"contract-{uuid.uuid4().hex[:12]}"
    es_backend = ElasticsearchIndex(Elasticsearch(url), prefix, refresh=True)
    yield es_backend
    Elasticsearch(url).options(ignore_status=404).indices.delete(index=f"{prefix}-*")
    es_backend.close()


CT = CT_IMAGE


def make_dataset(**attrs: Any) -> Dataset:
    """An instance (tests.helpers.instance) in UTF-8 unless ``SpecificCharacterSet`` is given."""
    return instance(**{"SpecificCharacterSet": "ISO_IR 192", **attrs})


@pytest.fixture
def record_of(tmp_path: Path) -> Callable[..., InstanceRecord]:
    """Build an index record the way ingest does, from a dataset with the given attributes."""
    counter = [0]

    def build(**attrs: Any) -> InstanceRecord:
        counter[0] += 1
        path = tmp_path / f"i{counter[0]}.dcm"
        make_dataset(**attrs).save_as(path, enforce_file_format=True)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return read_instance(path, digest, patient_secret=bytes(32))

    return build

"""Backends the contract suite runs against. Elasticsearch joins this list in its own issue."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from server.core.records import InstanceRecord, read_instance
from server.index.base import Index
from server.index.sqlite import SqliteIndex

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


CT = "1.2.840.10008.5.1.4.1.1.2"


def make_dataset(**attrs: Any) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = attrs.pop("SOPClassUID", CT)
    ds.SOPInstanceUID = attrs.pop("SOPInstanceUID", generate_uid())
    ds.StudyInstanceUID = attrs.pop("StudyInstanceUID", generate_uid())
    ds.SeriesInstanceUID = attrs.pop("SeriesInstanceUID", generate_uid())
    ds.SpecificCharacterSet = "ISO_IR 192"
    for key, val in attrs.items():
        setattr(ds, key, val)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


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

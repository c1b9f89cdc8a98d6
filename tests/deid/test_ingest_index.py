"""The de-identification record is kept with the instance on both index backends, and
indexes made before it existed gain it on open (SQLite side table, Elasticsearch field)."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import orjson

from server.core.attributes import Level
from server.index.base import Scope
from server.index.es_mapping import mapping, settings
from server.index.sqlite import SqliteIndex
from tests.contract.conftest import index, record_of  # noqa: F401  (fixtures)

RECORD = {"profile": "basic", "options": [], "edition": "2026c", "changed": ["PatientName"],
          "removed": ["PatientBirthDate"], "added": ["PatientIdentityRemoved"]}  # fmt: skip


def test_record_kept_read_and_removed_with_the_instance(index, record_of) -> None:  # noqa: F811
    with_record, without = record_of(), record_of()
    with_record.dataset, without.dataset = "lung", "lung"
    with_record.deid = orjson.dumps(RECORD)
    index.add_instances([with_record, without], overwrite=False)
    dataset, stored = index.deid_record(with_record.sop_uid)
    assert dataset == "lung" and orjson.loads(stored) == RECORD
    assert index.deid_record(without.sop_uid) == ("lung", None)  # stored before the record
    assert index.deid_record("1.2.3.999") is None
    index.delete(Scope(with_record.study_uid))
    assert index.deid_record(with_record.sop_uid) is None


def test_sqlite_index_made_before_records_gains_them(tmp_path: Path, record_of) -> None:  # noqa: F811
    path = tmp_path / "index.sqlite"
    SqliteIndex(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE instance_deid")  # as an index of the previous version
    conn.commit()
    conn.close()
    migrated = SqliteIndex(path)
    record = record_of()
    record.deid = orjson.dumps(RECORD)
    migrated.add_instances([record], overwrite=False)
    assert orjson.loads(migrated.deid_record(record.sop_uid)[1]) == RECORD
    migrated.close()


def test_elasticsearch_index_made_before_records_gains_them(
    elasticsearch_url: str,
    record_of,  # noqa: F811
) -> None:
    from elasticsearch import Elasticsearch

    from server.index.elasticsearch import ElasticsearchIndex

    es = Elasticsearch(elasticsearch_url)
    prefix = f"deidmig-{uuid.uuid4().hex[:10]}"
    try:
        for level, name in (
            (Level.STUDY, "studies"),
            (Level.SERIES, "series"),
            (Level.INSTANCE, "instances"),
        ):
            old = mapping(level)
            old["properties"].pop("deid", None)  # the previous version's strict mapping
            es.indices.create(index=f"{prefix}-{name}-v1", mappings=old,
                              settings=settings(1, 0), aliases={f"{prefix}-{name}": {}})  # fmt: skip
        migrated = ElasticsearchIndex(es, prefix, refresh=True)
        record = record_of()
        record.deid = orjson.dumps(RECORD)
        migrated.add_instances([record], overwrite=False)
        assert orjson.loads(migrated.deid_record(record.sop_uid)[1]) == RECORD
    finally:
        es.options(ignore_status=404).indices.delete(index=f"{prefix}-*")


def test_elasticsearch_reindex_keeps_the_records(elasticsearch_url: str, tmp_path: Path) -> None:
    """Records cannot be recomputed from de-identified blobs: reindex carries them over."""
    from tests.deid.ingest_helpers import create_dataset, planted
    from tests.live import LiveServer

    prefix = f"deidre{uuid.uuid4().hex[:10]}"
    env = {"GATEWAY_INDEX": "elasticsearch", "GATEWAY_ELASTICSEARCH__INDEX_PREFIX": prefix,
           "GATEWAY_ELASTICSEARCH__HOSTS": f'["{elasticsearch_url}"]'}  # fmt: skip
    live = LiveServer(tmp_path / "data", extra_env=env)
    create_dataset(live, "basic", "--deidentify", "basic")
    live.start()
    try:
        from dicomweb_client.api import DICOMwebClient

        answer = DICOMwebClient(f"{live.url}/datasets/basic/dicom-web").store_instances(
            planted().datasets
        )
        sops = [str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence]
        before = [live.cli("instance", "deid-record", sop).stdout for sop in sops]
        assert all('"profile": "basic"' in shown for shown in before)
        done = live.cli("reindex", "--quiet")
        assert done.returncode == 0, done.stderr
        assert [live.cli("instance", "deid-record", sop).stdout for sop in sops] == before
    finally:
        live.stop()
        from elasticsearch import Elasticsearch

        Elasticsearch(elasticsearch_url).options(ignore_status=404).indices.delete(
            index=f"{prefix}-*"
        )

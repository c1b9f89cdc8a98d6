"""Rebuild the Elasticsearch index from the blob store, switching aliases atomically.

The gateway keeps serving from the old indices (behind the aliases) while the new
ones are built; the aliases then move in one ``_aliases`` call, and instances stored
during the rebuild are copied over in a catch-up pass. Dataset membership is named in
each blob key; for blobs written before keys named it, it is carried over from the
old documents, or given by the caller (``restore`` passes the membership a backup
recorded: the old documents may be gone).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from server.core.attributes import Level
from server.core.records import InstanceRecord
from server.errors import BadRequest
from server.index.elasticsearch import ElasticsearchIndex
from server.services.recovery import BadBlob, record_from_blob
from server.storage.base import BlobStore

BATCH = 200


@dataclass
class ReindexReport:
    indexed: int = 0
    caught_up: int = 0
    skipped: int = 0
    new_indices: tuple[str, ...] = ()
    old_indices: tuple[str, ...] = ()


def reindex(
    index: object, store: BlobStore, *, patient_secret: bytes, keep_old: bool = False,
    progress: Callable[[int], object] = lambda n: None,
    memberships: Mapping[str, str | None] | None = None,
) -> ReindexReport:  # fmt: skip
    """Rebuild; ``memberships`` (blob key -> dataset, e.g. from a backup) wins over the old index."""
    if not isinstance(index, ElasticsearchIndex):
        raise BadRequest(
            "reindex rebuilds the Elasticsearch index; this gateway uses the embedded one"
        )
    es = index.es
    report = ReindexReport()
    old = {
        level: list(es.indices.get_alias(name=alias).keys()) for level, alias in index.names.items()
    }
    datasets = {**_datasets(index), **(memberships or {})}
    new_names = {
        level: index.create_version(level, alias, with_alias=False)
        for level, alias in index.names.items()
    }
    target = ElasticsearchIndex(es, names=new_names, refresh=False)
    done = _load(target, store, store.keys(), datasets, report, progress, patient_secret, index)
    report.indexed = done
    es.indices.refresh(index=list(new_names.values()))
    target.first_studies.backfill()  # patients' first-study values, once all studies are in
    actions: list[dict[str, object]] = []
    for level, alias in index.names.items():
        actions += [{"remove": {"index": name, "alias": alias}} for name in old[level]]
        actions.append({"add": {"index": new_names[level], "alias": alias}})
    es.indices.update_aliases(actions=actions)
    report.caught_up = _catch_up(index, target, store, old, report, patient_secret)
    report.new_indices = tuple(new_names.values())
    report.old_indices = tuple(name for names in old.values() for name in names)
    if not keep_old and report.old_indices:
        es.indices.delete(index=",".join(report.old_indices))
    return report


def _datasets(index: ElasticsearchIndex) -> dict[str, str | None]:
    """blob key → dataset, from the documents being replaced."""
    return {hit["_source"]["blob_key"]: hit["_source"].get("dataset")
            for hit in index._scan(Level.INSTANCE, {"match_all": {}}, ["blob_key", "dataset"])}  # fmt: skip


def _records(
    store: BlobStore,
    keys: Iterable[str],
    datasets: dict[str, str | None],
    report: ReindexReport,
    patient_secret: bytes,
) -> Iterable[InstanceRecord]:
    for key in keys:
        try:
            record = record_from_blob(store, key, patient_secret, datasets.get(key))
        except (BadBlob, FileNotFoundError):  # not a valid blob: `check` quarantines it
            report.skipped += 1
            continue
        yield record


def _carry_deid(old: ElasticsearchIndex, batch: list[InstanceRecord]) -> None:
    """De-identification records cannot be recomputed from the stored (de-identified)
    blobs: carry them over from the documents being replaced (same SOP UID and blob)."""
    found = old._mget(Level.INSTANCE, [r.sop_uid for r in batch], ["blob_key", "deid"])
    for record in batch:
        doc = found.get(record.sop_uid)
        if doc and doc.get("blob_key") == record.blob_key and doc.get("deid"):
            record.deid = base64.b64decode(doc["deid"])


def _load(target: ElasticsearchIndex, store: BlobStore, keys: Iterable[str], datasets: dict[str, str | None],
          report: ReindexReport, progress: Callable[[int], object], patient_secret: bytes,
          old: ElasticsearchIndex) -> int:  # fmt: skip
    batch: list[InstanceRecord] = []
    count = 0
    for record in _records(store, keys, datasets, report, patient_secret):
        batch.append(record)
        if len(batch) == BATCH:
            _carry_deid(old, batch)
            target.add_instances(batch, overwrite=True)
            count += len(batch)
            progress(len(batch))
            batch = []
    if batch:
        _carry_deid(old, batch)
        target.add_instances(batch, overwrite=True)
        count += len(batch)
        progress(len(batch))
    return count


def _catch_up(index: ElasticsearchIndex, target: ElasticsearchIndex, store: BlobStore,
              old: dict[Level, list[str]], report: ReindexReport, patient_secret: bytes) -> int:  # fmt: skip
    """Instances the old indices received while the new ones were being built."""
    old_index = ElasticsearchIndex(
        index.es, names={lvl: ",".join(n) for lvl, n in old.items()}, refresh=False
    )
    have = set(target.blob_keys())
    missing = {k: d for k, d in _datasets(old_index).items() if k not in have and store.exists(k)}
    if not missing:
        return 0
    records = list(_records(store, list(missing), missing, report, patient_secret))
    for start in range(0, len(records), BATCH):
        _carry_deid(old_index, records[start : start + BATCH])
    if records:
        index.add_instances(records, overwrite=True)
    return len(records)

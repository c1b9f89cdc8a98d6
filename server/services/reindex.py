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
from dataclasses import dataclass, field, fields
from typing import Any

from server.core.attributes import Level
from server.core.records import InstanceRecord
from server.errors import BadRequest
from server.index.elasticsearch import ElasticsearchIndex
from server.services.recovery import BadBlob, record_from_blob
from server.storage.base import BlobStore

BATCH = 200


@dataclass
class ReindexReport:
    """What a rebuild did, and where it stands: a stored job keeps it (``to_json``) so that
    a runner taking the job over after a crash resumes where the last one checkpointed."""

    indexed: int = 0
    caught_up: int = 0
    skipped: int = 0
    new_indices: tuple[str, ...] = ()
    old_indices: tuple[str, ...] = ()
    phase: str = "new"  # new -> load (cursor moves) -> switched -> caught_up -> done
    cursor: str | None = None  # the last blob key loaded (keys come in sorted order)
    new_names: dict[str, str] = field(default_factory=dict)  # level -> new concrete index
    old_names: dict[str, list[str]] = field(default_factory=dict)  # level -> replaced ones

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReindexReport:
        known = {f.name for f in fields(cls)}
        report = cls(**{k: v for k, v in data.items() if k in known})
        report.new_indices, report.old_indices = (
            tuple(report.new_indices),
            tuple(report.old_indices),
        )
        return report


class Stop(Exception):
    """The runner lost its job (taken over, or the process is stopping): stop, keep state."""


def reindex(
    index: object, store: BlobStore, *, patient_secret: bytes, keep_old: bool = False,
    progress: Callable[[int], object] = lambda n: None,
    memberships: Mapping[str, str | None] | None = None,
    report: ReindexReport | None = None, checkpoint: Callable[[ReindexReport], object] = lambda r: None,
    batch: int = BATCH,
) -> ReindexReport:  # fmt: skip
    """Rebuild; ``memberships`` (blob key -> dataset, e.g. from a backup) wins over the old index.

    ``report`` is where an earlier, interrupted run stopped (a stored job's state): the
    rebuild goes on from there. ``checkpoint`` is called after every step that moved the
    state (each loaded batch, the alias switch); it raises :class:`Stop` to end the run.
    """
    if not isinstance(index, ElasticsearchIndex):
        raise BadRequest(
            "reindex rebuilds the Elasticsearch index; this gateway uses the embedded one"
        )
    es = index.es
    report = report if report is not None else ReindexReport()
    if report.phase == "new":
        report.old_names = {
            level.value: list(es.indices.get_alias(name=alias).keys())
            for level, alias in index.names.items()
        }
        report.new_names = {
            level.value: index.create_version(level, alias, with_alias=False)
            for level, alias in index.names.items()
        }
        report.phase = "load"
        checkpoint(report)
    new_names = {Level(level): name for level, name in report.new_names.items()}
    old = {Level(level): names for level, names in report.old_names.items()}
    target = ElasticsearchIndex(es, names=new_names, refresh=False)
    if report.phase == "load":
        datasets = {**_datasets(index), **(memberships or {})}
        keys = _after(store.keys(), report.cursor)
        _load(
            target,
            store,
            keys,
            datasets,
            report,
            progress,
            patient_secret,
            index,
            checkpoint,
            batch,
        )
        es.indices.refresh(index=list(new_names.values()))
        target.first_studies.backfill()  # patients' first-study values, once all studies are in
        actions: list[dict[str, object]] = []
        for level, alias in index.names.items():
            actions += [{"remove": {"index": name, "alias": alias}} for name in old[level]]
            actions.append({"add": {"index": new_names[level], "alias": alias}})
        es.indices.update_aliases(actions=actions)
        report.phase = "switched"
        checkpoint(report)
    if report.phase == "switched":
        report.caught_up = _catch_up(index, target, store, old, report, patient_secret)
        report.phase = "caught_up"
        checkpoint(report)
    report.new_indices = tuple(new_names.values())
    report.old_indices = tuple(name for names in old.values() for name in names)
    if not keep_old and report.old_indices:
        es.indices.delete(index=",".join(report.old_indices), ignore_unavailable=True)
    report.phase = "done"
    return report


def _after(keys: Iterable[str], cursor: str | None) -> Iterable[str]:
    """The keys past ``cursor`` (blob stores list keys in sorted order)."""
    return keys if cursor is None else (k for k in keys if k > cursor)


def _datasets(index: ElasticsearchIndex) -> dict[str, str | None]:
    """blob key → dataset, from the documents being replaced."""
    return {hit["_source"]["blob_key"]: hit["_source"].get("dataset")
            for hit in index._scan(Level.INSTANCE, {"match_all": {}}, ["blob_key", "dataset"])}  # fmt: skip


def _records(
    store: BlobStore,
    keys: Iterable[str],
    datasets: Mapping[str, str | None],
    report: ReindexReport,
    patient_secret: bytes,
) -> Iterable[tuple[str, InstanceRecord | None]]:
    """(key, its record), or (key, None) for a blob that is not a valid instance."""
    for key in keys:
        try:
            record = record_from_blob(store, key, patient_secret, datasets.get(key))
        except (BadBlob, FileNotFoundError):  # not a valid blob: `check` quarantines it
            report.skipped += 1
            yield key, None
            continue
        yield key, record


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
          old: ElasticsearchIndex, checkpoint: Callable[[ReindexReport], object], size: int) -> None:  # fmt: skip
    batch: list[InstanceRecord] = []
    for key, record in _records(store, keys, datasets, report, patient_secret):
        if record is not None:
            batch.append(record)
        if len(batch) == size:
            _flush(target, old, batch, report, progress, checkpoint, key)
            batch = []
    if batch:
        _flush(target, old, batch, report, progress, checkpoint, batch[-1].blob_key)


def _flush(target: ElasticsearchIndex, old: ElasticsearchIndex, batch: list[InstanceRecord],
           report: ReindexReport, progress: Callable[[int], object],
           checkpoint: Callable[[ReindexReport], object], last_key: str) -> None:  # fmt: skip
    _carry_deid(old, batch)
    target.add_instances(batch, overwrite=True)
    report.indexed += len(batch)
    report.cursor = last_key
    progress(len(batch))
    checkpoint(report)


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
    found = _records(store, list(missing), missing, report, patient_secret)
    records = [record for _, record in found if record is not None]
    for start in range(0, len(records), BATCH):
        _carry_deid(old_index, records[start : start + BATCH])
    if records:
        index.add_instances(records, overwrite=True)
    return len(records)

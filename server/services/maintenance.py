"""Delete (PS3.18 10.4 DELETE, as Orthanc/dcm4chee offer it) and index/store consistency checks."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from server.core.records import UnreadableInstance, read_instance
from server.errors import NotFound
from server.index.base import Index, Scope, StoredInstance
from server.security.keys import patient_id_key
from server.settings import Settings
from server.storage.base import BlobStore

log = logging.getLogger("gateway.maintenance")


class DeleteService:
    def __init__(self, store: BlobStore, index: Index) -> None:
        self.store = store
        self.index = index

    def delete(self, scope: Scope) -> list[StoredInstance]:
        """Remove a study/series/instance: blobs to trash, index rows, then purge.

        A crash between steps leaves index rows without blobs, which ``check``
        removes; a deleted instance never comes back.
        """
        found = self.index.instances(scope)
        if not found:
            raise NotFound(
                f"nothing stored at {scope.study_uid}/{scope.series_uid or ''}/{scope.sop_uid or ''}".rstrip(
                    "/"
                )
            )
        for inst in found:
            self.store.trash(inst.blob_key)
        removed = self.index.delete(scope)
        self.store.purge_trash()
        log.info("deleted %d instance(s) of study %s", len(removed), scope.study_uid)
        return removed


@dataclass
class CheckReport:
    indexed: int = 0
    blobs: int = 0
    missing_blobs: list[str] = field(default_factory=list)  # index rows whose blob is gone
    unindexed_blobs: list[str] = field(default_factory=list)  # blobs no index row points at
    reindexed: int = 0
    removed_rows: int = 0
    removed_blobs: int = 0
    spool_cleaned: int = 0
    trash_purged: int = 0

    @property
    def consistent(self) -> bool:
        return not self.missing_blobs and not self.unindexed_blobs


class CheckService:
    def __init__(self, store: BlobStore, index: Index, settings: Settings) -> None:
        self.store = store
        self.index = index
        self.settings = settings
        self.patient_secret = patient_id_key(settings.data_dir)

    def check(self, *, repair: bool) -> CheckReport:
        """Compare index and blob store; with ``repair`` make them agree.

        Rows without blobs are removed; complete blobs without rows are indexed
        (their write finished, only the index step was lost); a blob whose SOP
        Instance UID is indexed with other content is removed.
        """
        report = CheckReport()
        indexed = self.index.blob_keys()
        on_disk = set(self.store.keys())
        report.indexed, report.blobs = len(indexed), len(on_disk)
        report.missing_blobs = sorted(k for k in indexed if k not in on_disk)
        report.unindexed_blobs = sorted(k for k in on_disk if k not in indexed)
        if not repair:
            return report
        report.spool_cleaned = self.store.clean_spool()
        report.trash_purged = self.store.purge_trash()
        if report.missing_blobs:
            report.removed_rows = self.index.remove_by_blob_keys(report.missing_blobs)
        for key in report.unindexed_blobs:
            self._repair_blob(key, report)
        return report

    def _repair_blob(self, key: str, report: CheckReport) -> None:
        path = self.store.path(key)
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        try:
            record = read_instance(path, digest.hexdigest(), patient_secret=self.patient_secret)
        except UnreadableInstance as exc:
            log.warning("removing unreadable blob %s: %s", key, exc.message)
            self.store.delete(key)
            report.removed_blobs += 1
            return
        if record.blob_key != key:
            self.store.delete(key)
            report.removed_blobs += 1
            return
        result = self.index.add_instances([record], overwrite=False)[0]
        if result.outcome.value in ("stored", "identical"):
            report.reindexed += 1
        else:
            self.store.delete(key)
            report.removed_blobs += 1

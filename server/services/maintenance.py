"""Delete (PS3.18 10.4 DELETE, as Orthanc/dcm4chee offer it)."""

from __future__ import annotations

import logging

from server.errors import NotFound
from server.index.base import Index, Scope, StoredInstance
from server.services.recovery import Recovery
from server.storage.base import BlobStore
from server.storage.journal import WriteJournal

log = logging.getLogger("gateway.maintenance")


class DeleteService:
    def __init__(
        self, store: BlobStore, index: Index, journal: WriteJournal, patient_secret: bytes
    ) -> None:
        self.store = store
        self.index = index
        self.journal = journal
        self.recovery = Recovery(store, index, journal, patient_secret)

    def delete(self, scope: Scope) -> list[StoredInstance]:
        """Remove a study/series/instance: journal, index rows, then the blobs.

        A blob is removed only after the index change that unreferenced it committed,
        and only if no row points to it then; a failed index change removes nothing.
        A crash in between is settled at the next start from the journal.
        """
        found = self.index.instances(scope)
        if not found:
            raise NotFound(
                f"nothing stored at {scope.study_uid}/{scope.series_uid or ''}/{scope.sop_uid or ''}".rstrip(
                    "/"
                )
            )
        entries = [self.journal.begin(inst.blob_key, "drop") for inst in found]
        try:
            removed = self.index.delete(scope)
        finally:
            self.recovery.settle_own(entries)
        log.info("deleted %d instance(s) of study %s", len(removed), scope.study_uid)
        return removed

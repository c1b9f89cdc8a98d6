"""Instances held out of the index because they may carry burned-in text (policy ``quarantine``).

``data_dir/deid-quarantine/<id>/`` (0700) holds the DE-IDENTIFIED copy (``instance.dcm``,
0600; the original bytes are never kept) and ``held.json`` (0600): dataset, reason,
the de-identification record (names of attributes, never values), the stored
(pseudonymised) UIDs and when it was held. Nothing here is indexed, served or counted.
An administrator lists, releases (stored through the ingest pipeline minus the
burned-in check: the copy is already de-identified) or deletes them with
``imaging-gateway quarantine``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pydicom

from server.core.deid.policy import DeidRecord
from server.errors import NotFound

QUARANTINE_DIR = "deid-quarantine"  # (``quarantine/`` holds corrupted blobs: check)
INSTANCE_FILE = "instance.dcm"
HELD_FILE = "held.json"
_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Held:
    id: str
    dataset: str | None
    reason: str
    held_at: float
    deid: DeidRecord
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dataset": self.dataset,
            "reason": self.reason,
            "heldAt": self.held_at,
            "deidentification": self.deid.to_json(),
            "studyInstanceUID": self.study_uid,
            "seriesInstanceUID": self.series_uid,
            "sopInstanceUID": self.sop_uid,
            "modality": self.modality,
        }


def _record(body: dict[str, Any]) -> DeidRecord:
    return DeidRecord(
        profile=str(body.get("profile", "")),
        options=list(body.get("options", [])),
        edition=str(body.get("edition", "")),
        changed=list(body.get("changed", [])),
        removed=list(body.get("removed", [])),
        added=list(body.get("added", [])),
    )


def _held(body: dict[str, Any]) -> Held:
    return Held(
        id=str(body["id"]),
        dataset=body.get("dataset"),
        reason=str(body.get("reason", "")),
        held_at=float(body.get("heldAt", 0)),
        deid=_record(body.get("deidentification") or {}),
        study_uid=str(body.get("studyInstanceUID", "")),
        series_uid=str(body.get("seriesInstanceUID", "")),
        sop_uid=str(body.get("sopInstanceUID", "")),
        modality=str(body.get("modality", "")),
    )


def _uids(path: Path) -> tuple[str, str, str, str]:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # kept anyway: an administrator decides
        return "", "", "", ""
    keys = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality")
    study, series, sop, modality = (str(ds.get(k, "") or "")[:64] for k in keys)
    return study, series, sop, modality


class Quarantine:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / QUARANTINE_DIR

    def hold(self, deidentified: Path, deid: DeidRecord, dataset: str | None, reason: str) -> str:
        """Move a de-identified file into the quarantine; its id."""
        self.root.mkdir(mode=0o700, exist_ok=True)
        held_id = uuid.uuid4().hex
        making = self.root / f".{held_id}"
        making.mkdir(mode=0o700)
        target = making / INSTANCE_FILE
        shutil.move(deidentified, target)
        os.chmod(target, 0o600)
        study, series, sop, modality = _uids(target)
        held = Held(held_id, dataset, reason, time.time(), deid, study, series, sop, modality)
        fd = os.open(making / HELD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(held.to_json()))
            f.flush()
            os.fsync(f.fileno())
        making.rename(self.root / held_id)  # visible only once complete
        return held_id

    def list(self) -> list[Held]:
        if not self.root.is_dir():
            return []
        out = []
        for entry in sorted(self.root.iterdir()):
            if _ID.match(entry.name) and (entry / HELD_FILE).is_file():
                out.append(_held(orjson.loads((entry / HELD_FILE).read_bytes())))
        return sorted(out, key=lambda h: h.held_at)

    def get(self, held_id: str) -> Held:
        folder = self._folder(held_id)
        return _held(orjson.loads((folder / HELD_FILE).read_bytes()))

    def take(self, held_id: str, spool: Path) -> tuple[Held, Path]:
        """Copy a held instance into ``spool`` for release; (entry, copied file)."""
        held = self.get(held_id)
        target = spool / f"release-{held_id}"
        shutil.copyfile(self._folder(held_id) / INSTANCE_FILE, target)
        return held, target

    def delete(self, held_id: str) -> None:
        shutil.rmtree(self._folder(held_id))

    def _folder(self, held_id: str) -> Path:
        folder = self.root / held_id
        if not _ID.match(held_id) or not (folder / HELD_FILE).is_file():
            raise NotFound(f"no quarantined instance {held_id[:40]!r}")
        return folder

"""STOW-RS response (PS3.18 10.5.3, Table 10.5.3-1; status codes PS3.18 10.5.3.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Failure and warning reasons (PS3.4 B.2.3 / PS3.7 C), as PS3.18 10.5.3 uses them.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
WARN_DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xB007


@dataclass
class PartOutcome:
    """What happened to one part of a STOW request."""

    sop_class_uid: str = ""
    sop_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    failure: int | None = None
    warnings: list[int] = field(default_factory=list)
    message: str = ""
    deid: bytes | None = None  # the DeidRecord JSON of a stored part (audit; never values)
    # a stored part: "stored" (new), "identical" (already stored, the same bytes) or
    # "replaced" (a correction: new content under the same SOP Instance UID)
    added: str = ""

    @property
    def present(self) -> bool:
        """Stored before with the same content: nothing changed."""
        return self.added == "identical"

    @property
    def stored(self) -> bool:
        return self.failure is None


def deidentified(outcomes: list[PartOutcome]) -> tuple[tuple[str, str], ...]:
    """(stored SOP Instance UID, DeidRecord JSON) of every stored part, for the audit."""
    return tuple((o.sop_uid, o.deid.decode()) for o in outcomes if o.stored and o.deid)


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def stow_status(outcomes: list[PartOutcome]) -> int:
    """PS3.18 10.5.3.2: 200 all stored, 202 some failed or with warnings, 409 none stored."""
    stored = [o for o in outcomes if o.stored]
    if not stored:
        return 409
    if len(stored) < len(outcomes) or any(o.warnings for o in stored):
        return 202
    return 200


def stow_response(
    outcomes: list[PartOutcome], dicomweb_root: str, study_uid: str | None
) -> dict[str, Any]:
    """PS3.18 Table 10.5.3-1: Store Instances Response Module as DICOM JSON."""
    body: dict[str, Any] = {}
    if study_uid:
        body["00081190"] = {"vr": "UR", "Value": [f"{dicomweb_root}/studies/{study_uid}"]}
    failed = [o for o in outcomes if not o.stored]
    stored = [o for o in outcomes if o.stored]
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_failed_item(o) for o in failed]}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [_stored_item(o, dicomweb_root) for o in stored]}
    return body


def _failed_item(o: PartOutcome) -> dict[str, Any]:
    item = {
        "00081150": _ui(o.sop_class_uid),
        "00081155": _ui(o.sop_uid),
        "00081197": {"vr": "US", "Value": [o.failure]},
    }
    if o.message:
        item["00001902"] = {"vr": "LO", "Value": [o.message[:64]]}  # Error Comment (PS3.7 C)
    return item


def _stored_item(o: PartOutcome, root: str) -> dict[str, Any]:
    url = f"{root}/studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_uid}"
    item: dict[str, Any] = {
        "00081150": _ui(o.sop_class_uid),
        "00081155": _ui(o.sop_uid),
        "00081190": {"vr": "UR", "Value": [url]},
    }
    if o.warnings:
        item["00081196"] = {"vr": "US", "Value": o.warnings}
    return item

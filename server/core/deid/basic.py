"""The ``basic`` profile: PS3.15 Annex E Table E.1-1 with the options as switches."""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from server.core.deid import actions, values
from server.core.deid.actions import Context
from server.core.deid.policy import Option
from server.core.deid.rules import basic_action
from server.core.deid.safe_private import is_safe

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010


def _private(ds: Dataset, options: frozenset[Option], ctx: Context) -> None:
    """Private elements go unless Retain Safe Private and on the safe-list."""
    keep_safe = Option.retain_safe_private in options
    used_blocks: set[int] = set()
    for elem in [e for e in ds if e.tag.is_private]:
        tag = int(elem.tag)
        element = tag & 0xFFFF
        if keep_safe and element >= 0x1000:
            creator_tag = (tag & 0xFFFF0000) | (element >> 8)
            creator = ds.get(creator_tag)
            if creator is not None and is_safe(str(creator.value), tag):
                used_blocks.add(creator_tag)
                continue
        if 0x0010 <= element <= 0x00FF:
            continue  # creators: decided once their blocks are known
        actions.remove(ds, elem, ctx)
    for elem in [e for e in ds if e.tag.is_private]:
        if int(elem.tag) not in used_blocks and (int(elem.tag) & 0xFFFF) < 0x1000:
            actions.remove(ds, elem, ctx)


def patient_key(ds: Dataset, inherited: str) -> str:
    """The original PatientID a pseudonym is keyed on (a study's UID when it has none)."""
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        return pid
    return inherited or "study:" + str(ds.get("StudyInstanceUID", "") or "")


def apply(
    ds: Dataset, options: frozenset[Option], secret: str, ctx: Context, inherited: str = ""
) -> None:
    """Apply Table E.1-1 to ``ds`` and every item of its sequences, in place."""
    _private(ds, options, ctx)
    pid = patient_key(ds, inherited)
    for elem in list(ds):
        tag = int(elem.tag)
        if tag in (PATIENT_ID, PATIENT_NAME):
            new = values.keyed_patient_id(secret, pid)
            if str(elem.value or "") != new:
                elem.value = new
                ctx.changes.changed.add(actions.name_of(tag))
            continue
        action = basic_action(tag, elem.VR, options)
        if elem.VR == "SQ" and action in ("K", "D", "C", "U"):
            for item in elem.value:
                apply(item, options, secret, ctx, pid)
            continue
        _do(action, ds, elem, ctx)


def _do(action: str, ds: Dataset, elem: DataElement, ctx: Context) -> None:
    if action == "X":
        actions.remove(ds, elem, ctx)
    elif action == "Z":
        actions.empty(ds, elem, ctx)
    elif action == "D":
        actions.dummy(ds, elem, ctx)
    elif action == "U":
        if elem.VR == "UI":
            actions.remap_uids(elem, ctx)
        else:
            actions.empty(ds, elem, ctx)
    elif action == "C":
        actions.clean(ds, elem, ctx)
    else:
        actions.keep(ds, elem, ctx)

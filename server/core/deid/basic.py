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
    private = [t for t in actions.tags(ds) if (t >> 16) & 1]
    kept: set[int] = set()
    if Option.retain_safe_private in options:
        for tag in private:
            creator_tag = (tag & 0xFFFF0000) | ((tag & 0xFF00) >> 8)
            block = tag & 0xFFFF >= 0x1000 and creator_tag in ds
            if block and is_safe(str(ds[creator_tag].value), tag):
                kept |= {tag, creator_tag}
    for tag in private:
        if tag not in kept:
            actions.drop(ds, tag, ctx)


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
    for tag in [t for t in actions.tags(ds) if not (t >> 16) & 1]:  # private: done
        if tag in (PATIENT_ID, PATIENT_NAME):
            elem = ds[tag]
            new = values.keyed_patient_id(secret, pid)
            if str(elem.value or "") != new:
                elem.value = new
                ctx.changes.changed.add(actions.name_of(tag))
            continue
        vr = actions.vr_of(ds, tag)
        actions.check_length(ds, tag, vr)
        action = basic_action(tag, vr, options)
        if action == "X":
            actions.drop(ds, tag, ctx)
            continue
        if not actions.needs_value(action, vr):
            continue  # kept as read: the value is never decoded
        elem = ds[tag]
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

"""The ``eucaim`` profile: every rule of LETHE's ``anon.script`` (see ``lethe_table.py``).

Pseudonyms are CTP's (``ctp.py``) so they join LETHE output made with the same secret.
LETHE's defects are not copied: ReferencedSOPClassUID and every other definition UID
(SOP class, transfer syntax, coding scheme) stay unchanged; the two rules written without
"@" (``keep()`` on the contrast bolus times, ``hashuid`` on ManufacturerDeviceClassUID)
do what they meant; the private elements the script keeps (diffusion b-value and
direction, GE and Philips scaling) are kept only under the vendor creator they belong to
(CTP keeps the raw tag whoever wrote it), with their creator element.

Deviations from the script, named in DeidentificationMethod (see ``code_for``): every
DA/DT value the profile keeps, LETHE's ``@keep()`` dates included, gets the
``@modifydate(this,*,*,1)`` rule, so no original date is served; and where the script
removes an attribute (``@remove()`` or "remove unchecked elements") the Annex E Basic
action applies instead (dates as under Modified Dates), so a SEG keeps its functional
groups and segments and an SR or KOS its content and evidence references, with their
UIDs hashed like the listed ones. In the kept groups (0018, 0020, 0028) an unlisted
instance UID is hashed, an unlisted person name emptied. Rules apply at every depth.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from server.core.deid import actions, ctp
from server.core.deid.actions import Context
from server.core.deid.lethe_table import KEEP_GROUPS, RULES
from server.core.deid.policy import Option
from server.core.deid.rules import basic_action
from server.core.deid.safe_private import is_safe

PATIENT_ID = 0x00100020
EDITION = "LETHE anon.script e784340 (2025-11-03)"
SITE_ID = 0x00131013
_KEPT_PRIVATE = {tag for tag, code in RULES.items() if (tag >> 16) & 1 and code == "K"}


def provider_hash(provider_id: str | None) -> str:
    """InstitutionName under eucaim: SHA-256 hex of the EUCAIM SITE-ID (empty if none)."""
    if not provider_id:
        return ""
    return hashlib.sha256(provider_id.encode("utf-8")).hexdigest()


def _private(ds: Dataset, ctx: Context) -> None:
    """All private elements go except those the script keeps, under their vendor's creator."""
    private = [t for t in actions.tags(ds) if (t >> 16) & 1]
    kept: set[int] = set()
    for tag in _KEPT_PRIVATE.intersection(private):
        creator_tag = (tag & 0xFFFF0000) | ((tag & 0xFF00) >> 8)
        if creator_tag in ds and is_safe(str(ds[creator_tag].value), tag):
            kept |= {tag, creator_tag}
    for tag in private:
        if tag not in kept:
            actions.drop(ds, tag, ctx)


_DATES = ("DA", "DT")
_MODIFIED_DATES = frozenset({Option.retain_long_modified_dates})


@lru_cache(maxsize=16384)
def code_for(tag: int, vr: str) -> str:
    """The eucaim action for ``tag``: LETHE's rule, with two deviations.

    Dates: every DA/DT value kept (LETHE's ``@keep()`` included) gets the day-of-month
    rule. Removal: where LETHE removes an attribute (``@remove()``, or "remove unchecked
    elements" outside its kept groups) the Annex E Basic action applies instead, so
    non-identifying structure (functional groups, segments, SR content, evidence
    references) survives, processed item by item.
    """
    code = RULES.get(tag)
    kept_group = tag >> 16 in KEEP_GROUPS or tag >> 16 == 0x7FE0
    if code is None and kept_group and actions.is_known(tag):
        code = "U" if vr == "UI" else "Z" if vr == "PN" else "K"
    if code is None or code == "X":
        return _basic_fallback(tag, vr)
    if code == "K" and vr in _DATES:
        return "M1"
    return code


def _basic_fallback(tag: int, vr: str) -> str:
    """Annex E Basic for what LETHE removes; dates as under Modified Dates (day -> 1)."""
    if vr in _DATES:
        action = basic_action(tag, vr, _MODIFIED_DATES)
        return "M1" if action in ("C", "K") else action
    return basic_action(tag, vr, frozenset())


def apply(ds: Dataset, secret: str, original_pid: str | None, ctx: Context) -> None:
    """Apply LETHE's rules to ``ds`` and every item of its sequences, in place."""
    _private(ds, ctx)
    for tag in [t for t in actions.tags(ds) if not (t >> 16) & 1]:
        vr = actions.vr_of(ds, tag)
        actions.check_length(ds, tag, vr)
        code = code_for(tag, vr)
        if code == "X":
            actions.drop(ds, tag, ctx)
            continue
        if code == "K" and vr != "UI" and not actions.needs_value(code, vr):
            continue  # kept as read: the value is never decoded
        elem = ds[tag]
        if elem.VR == "SQ":
            if code == "Z":
                actions.empty(ds, elem, ctx)
            else:
                for item in elem.value:
                    apply(item, secret, original_pid, ctx)
            continue
        _value(code, ds, elem, secret, original_pid, ctx)


def _simple(code: str, ds: Dataset, elem: DataElement, ctx: Context) -> None:
    if code == "X":
        actions.remove(ds, elem, ctx)
    else:
        actions.empty(ds, elem, ctx)


def _value(
    code: str, ds: Dataset, elem: DataElement, secret: str, pid: str | None, ctx: Context
) -> None:
    tag = int(elem.tag)
    before = elem.value
    if code in ("X", "Z", "SITE", "METHOD"):
        # SITE and METHOD are written on the top level afterwards; nested copies go empty
        _simple("X" if code == "X" else "Z", ds, elem, ctx)
        return
    if code == "U" or (code in ("K", "C", "D") and elem.VR == "UI"):
        actions.remap_uids(elem, ctx)
        return
    if code == "K":
        actions.keep(ds, elem, ctx)
        return
    if code == "D":
        actions.dummy(ds, elem, ctx)
        return
    if code == "C":
        actions.clean(ds, elem, ctx)
        return
    if code == "M1":
        actions.map_values(elem, ctp.modify_date)
    elif code == "HD":
        if pid is None:  # CTP: @hashdate without its hash element removes the date
            actions.remove(ds, elem, ctx)
            return
        actions.map_values(elem, lambda v: ctp.hash_date_shift(v, pid))
    elif code == "H16":
        actions.map_values(elem, lambda v: ctp.ctp_hash(v, 16))
    elif code == "PID":
        elem.value = ctp.hash_patient_id(secret, str(elem.value or ""))
    elif code == "PN":
        elem.value = ctp.hash_patient_name(secret, pid)
    elif code == "YES":
        elem.value = "YES"
    if elem.value != before:
        ctx.changes.changed.add(actions.name_of(tag))

"""Carry out one action code on one data element, at any sequence depth.

The profiles (``basic.py``, ``eucaim.py``) decide the code for each element; this module
applies it and notes the attribute's name (never its value) in the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from server.core.deid import values
from server.core.records import UnreadableInstance

_TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE", "UR"}
FREE_TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC"}


@lru_cache(maxsize=4096)
def name_of(tag: int) -> str:
    """The record's name for an attribute: its keyword, or ``(gggg,eeee)``."""
    keyword = "" if (tag >> 16) & 1 else keyword_for_tag(tag)
    return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def tags(ds: Dataset) -> list[int]:
    """The dataset's tags, without converting any value (iterating a Dataset would)."""
    return [int(t) for t in ds.keys()]  # noqa: SIM118


def vr_of(ds: Dataset, tag: int) -> str:
    """An element's VR without converting its value (dictionary VR for implicit files)."""
    vr = ds.get_item(tag).VR
    if vr and vr != "UN":
        return str(vr)
    try:  # implicit VR, or explicit "UN" for a public attribute: the dictionary's VR
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


_FIXED = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "AT": 4, "FD": 8, "SV": 8, "UV": 8}
_MAX_CHARS = {"AE": 16, "AS": 4, "CS": 16, "DA": 18, "DS": 16, "DT": 54, "IS": 12}
_MAX_CHARS |= {"LO": 64, "SH": 16, "TM": 28, "UI": 64, "PN": 3 * 64 + 2}


def check_length(ds: Dataset, tag: int, vr: str) -> None:
    """A value whose length cannot fit its VR and multiplicity means the lengths in the
    file are corrupt (the value would swallow the elements after it): refuse it."""
    if not is_known(tag):
        return
    count = _vm_count(tag)
    raw = ds.get_item(tag)
    if not isinstance(raw, DataElement):
        check_raw_length(tag, vr, raw.length)
        return
    # already decoded while reading: the value's multiplicity and characters
    if count is not None and count < raw.VM:
        raise UnreadableInstance(f"corrupt length for attribute {name_of(tag)} ({vr})")
    if vr not in _MAX_CHARS or count is None or raw.VM == 0:
        return
    if len(str(raw.value)) > count * (_MAX_CHARS[vr] + 1) + 1:
        raise UnreadableInstance(f"corrupt length for attribute {name_of(tag)} ({vr})")


@lru_cache(maxsize=16384)  # raises or returns None: only the good answers are cached
def check_raw_length(tag: int, vr: str, length: int) -> None:
    """``check_length`` of an element not decoded: its length as read."""
    if length == 0xFFFFFFFF or not is_known(tag):
        return
    count = _vm_count(tag)
    size = _FIXED.get(vr)
    if size is not None:
        fits = length % size == 0 and (count is None or length == count * size)
    elif vr in _MAX_CHARS and count is not None:
        fits = length <= count * (_MAX_CHARS[vr] + 1) + 1
    else:
        return
    if not fits:
        raise UnreadableInstance(f"corrupt length for attribute {name_of(tag)} ({vr})")


@lru_cache(maxsize=8192)
def _vm_count(tag: int) -> int | None:
    """The dictionary's fixed multiplicity of a known tag (None: a range like 1-n)."""
    vm = dictionary_VM(tag)
    return int(vm) if vm.isdigit() else None


@lru_cache(maxsize=8192)
def is_known(tag: int) -> bool:
    """Whether a public tag is in the data dictionary (repeating groups included)."""
    try:
        dictionary_VR(tag)
    except KeyError:
        return False
    return True


def drop(ds: Dataset, tag: int, ctx: Context) -> None:
    """X by tag, without reading the value."""
    del ds[tag]
    ctx.changes.removed.add(name_of(tag))


def needs_value(action: str, vr: str) -> bool:
    """Whether a K needs to look at the value (sequences, free text to scrub)."""
    return action != "K" or vr == "SQ" or vr in FREE_TEXT_VRS


@dataclass
class Changes:
    """Names of attributes changed, removed and added (never their values)."""

    changed: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    added: set[str] = field(default_factory=set)


@dataclass
class Context:
    """What an action needs besides the element: keyed functions of this instance."""

    map_uid: Callable[[str], str]  # an instance UID -> its pseudonym UID
    shift_date: Callable[[str], str]  # C on DA/DT: the per-patient shift
    words: list[str]  # identifying words a C on free text removes
    changes: Changes = field(default_factory=Changes)


def map_values(elem: DataElement, fn: Callable[[str], str]) -> None:
    """Apply ``fn`` to every value of a string element (VM > 1 included)."""
    value = elem.value
    if value is None or value == "":
        return
    if isinstance(value, MultiValue | list):
        new: object = [fn(str(v)) for v in value]
    else:
        new = fn(str(value))
    if new != value:
        elem.value = new


def _note(ctx: Context, tag: int, before: object, elem: DataElement) -> None:
    if elem.value != before:
        ctx.changes.changed.add(name_of(tag))


def empty(ds: Dataset, elem: DataElement, ctx: Context) -> None:
    """Z: a zero-length value (an empty sequence for SQ)."""
    if elem.VR == "SQ":
        if len(elem.value):
            elem.value = []
            ctx.changes.changed.add(name_of(int(elem.tag)))
        return
    if elem.value not in (None, "", b""):
        elem.value = None
        ctx.changes.changed.add(name_of(int(elem.tag)))


def remove(ds: Dataset, elem: DataElement, ctx: Context) -> None:
    """X: the attribute goes."""
    del ds[elem.tag]
    ctx.changes.removed.add(name_of(int(elem.tag)))


def dummy(ds: Dataset, elem: DataElement, ctx: Context) -> None:
    """D: a non-zero-length value consistent with the VR."""
    if elem.VR == "UI":
        remap_uids(elem, ctx)
        return
    replacement = values.DUMMY.get(elem.VR)
    if replacement is None:
        empty(ds, elem, ctx)
        return
    before = elem.value
    elem.value = replacement
    _note(ctx, int(elem.tag), before, elem)


def remap_uids(elem: DataElement, ctx: Context) -> None:
    """U: every instance UID value replaced by its keyed pseudonym; definitions kept."""
    tag = int(elem.tag)
    before = elem.value

    def one(uid: str) -> str:
        uid = uid.rstrip("\x00 ")
        return uid if not uid or values.is_definition_uid(tag, uid) else ctx.map_uid(uid)

    map_values(elem, one)
    _note(ctx, tag, before, elem)


def clean(ds: Dataset, elem: DataElement, ctx: Context) -> None:
    """C: dates shifted per patient, free text cleaned of this instance's identifiers."""
    before = elem.value
    if elem.VR in ("DA", "DT"):
        map_values(elem, ctx.shift_date)
    elif elem.VR == "PN":
        empty(ds, elem, ctx)
        return
    elif elem.VR in _TEXT_VRS:
        map_values(elem, lambda text: values.scrub(text, ctx.words))
    elif elem.VR == "UI":
        remap_uids(elem, ctx)
        return
    _note(ctx, int(elem.tag), before, elem)


def keep(ds: Dataset, elem: DataElement, ctx: Context) -> None:
    """K: kept; other kept free text still loses this instance's identifying words."""
    if elem.VR in FREE_TEXT_VRS and ctx.words and elem.keyword not in values.IDENTIFYING:
        before = elem.value
        map_values(elem, lambda text: values.scrub(text, ctx.words))
        _note(ctx, int(elem.tag), before, elem)


def set_value(ds: Dataset, tag: int, vr: str, value: object, ctx: Context) -> None:
    """Write ``value`` (adding the attribute if absent), noting changed or added."""
    if tag in ds:
        if ds[tag].value != value:
            ds[tag].value = value
            ctx.changes.changed.add(name_of(tag))
        return
    ds.add_new(tag, vr, value)
    ctx.changes.added.add(name_of(tag))

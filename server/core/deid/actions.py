"""Carry out one action code on one data element, at any sequence depth.

The profiles (``basic.py``, ``eucaim.py``) decide the code for each element; this module
applies it and notes the attribute's name (never its value) in the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from server.core.deid import values

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
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


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

"""Apply a dataset's policy to one spooled Part-10 file (see policy.py).

``deidentify_file(src, dst, policy, secret)`` reads ``src``, writes the de-identified
instance to ``dst`` (same transfer syntax; pixel data copied, never decoded) and returns
its ``DeidRecord``. The output is a pure function of (input bytes, policy, secret): the
same input gives byte-identical output in every process, so a re-sent instance is
recognised as the same instance.

Raises ``BurnedInSuspected`` when the instance may carry burned-in text and the policy
does not clean it (``PolicyError`` when it asks for cleaning: no OCR step here),
``UnreadableInstance`` when the input is not DICOM.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from server.core.deid import basic, burned_in, ctp, eucaim, method, values
from server.core.deid.actions import Changes, Context, set_value, tags
from server.core.deid.annex_e_table import EDITION
from server.core.deid.policy import (
    BurnedInSuspected,
    DeidPolicy,
    DeidRecord,
    Option,
    PolicyError,
    Profile,
)
from server.core.deid.stream import (
    Source,
    copy_pixels,
    new_meta,
    read,
    read_trailing,
    write_header,
    write_trailing,
    written_as_parsed,
)
from server.core.records import UnreadableInstance

PADDING = 0xFFFCFFFC
_IDENTIFYING_TAGS = [int(tag_for_keyword(k) or 0) for k in values.IDENTIFYING]
_MALFORMED = (ValueError, TypeError, UnicodeError, OverflowError, struct.error, KeyError)
# sequences are parsed lazily, while the profile walks them: their parse errors too
_MALFORMED_ITEMS = (*_MALFORMED, OSError, EOFError, NotImplementedError, IndexError)


def deidentify_file(
    src: Path,
    dst: Path,
    policy: DeidPolicy,
    secret: str,
    on_read: Callable[[Dataset], None] | None = None,
    *,
    check_burned_in: bool = True,
) -> DeidRecord:
    """See ``deidentify_hashed``; only the record."""
    record, _ = deidentify_hashed(
        src, dst, policy, secret, on_read, check_burned_in=check_burned_in
    )
    return record


def deidentify_hashed(
    src: Path,
    dst: Path,
    policy: DeidPolicy,
    secret: str,
    on_read: Callable[[Dataset], None] | None = None,
    *,
    check_burned_in: bool = True,
) -> tuple[DeidRecord, str | None]:
    """See ``deidentify_parsed``; the record and the sha256."""
    record, digest, _ = deidentify_parsed(
        src, dst, policy, secret, on_read, check_burned_in=check_burned_in
    )
    return record, digest


@dataclass
class Written:
    """The de-identified header as written to ``dst`` (its file meta is the new one) and
    where the pixel element starts in ``dst`` (None: no pixel data): what parsing ``dst``
    up to its pixel data would give, so the index record is built without that parse."""

    ds: Dataset
    pixel_offset: int | None


def deidentify_parsed(
    src: Path,
    dst: Path,
    policy: DeidPolicy,
    secret: str,
    on_read: Callable[[Dataset], None] | None = None,
    *,
    check_burned_in: bool = True,
) -> tuple[DeidRecord, str | None, Written | None]:
    """PS3.15 Annex E / LETHE: write the de-identified copy of ``src`` to ``dst``.

    ``on_read`` sees the parsed header before anything is changed (the caller reads the
    sent UIDs from it instead of parsing the file again); it must not change it, and
    what it raises stops the work, nothing written. ``check_burned_in=False``: the
    header is de-identified although the instance is a burned-in suspect (for the
    quarantine, which holds it for an administrator).

    Also returns the sha256 (hex) of ``dst``, computed while it was written (None when
    the writer had to seek back: hash the file then), and the header as written (None
    when the writer re-encoded it, e.g. deflated: parse ``dst`` then)."""
    if policy.profile is Profile.none:
        shutil.copyfile(src, dst)
        return DeidRecord(profile="none", options=[], edition=""), None, None
    changes = Changes()
    with open(src, "rb") as fin:
        source = read(fin)
        if on_read is not None:
            on_read(source.ds)
        try:
            trailing = _prepare(fin, source, policy, secret, changes, check_burned_in)
        except (PolicyError, BurnedInSuspected, UnreadableInstance):
            raise
        except _MALFORMED_ITEMS as exc:  # a value pydicom cannot decode: the sender's bytes
            name = type(exc).__name__
            raise UnreadableInstance(f"malformed value in the instance ({name})") from exc
        plain = written_as_parsed(source)
        digest, pixel_at = _write(fin, dst, source, trailing)
    written = None
    if plain:  # the sender's file meta is not what was written: the new one, as written
        try:
            source.ds.file_meta = new_meta(source.ds, source.transfer_syntax)
            written = Written(source.ds, pixel_at)
        except _MALFORMED:
            written = None  # ingest parses the written file instead
    return _record(policy, changes), digest, written


def _prepare(
    fin: BinaryIO,
    source: Source,
    policy: DeidPolicy,
    secret: str,
    changes: Changes,
    check_burned_in: bool = True,
) -> Dataset:
    """Burned-in check, then the profile on the header and on any trailing elements."""
    if check_burned_in:
        burned_in.check(source.ds, policy)
    trailing = Dataset()
    if source.pixel_offset is not None:
        fin.seek(source.pixel_offset)
        copy_pixels(fin, None, source)  # seek past it: pixels are not read here
        trailing = read_trailing(fin, source)
    if policy.profile is Profile.eucaim:
        _eucaim(source.ds, trailing, policy, secret, changes)
    else:
        _basic(source.ds, trailing, policy.options, secret, changes)
    return trailing


class _Hashing:
    """A write-only file that hashes what goes through it (a seek spoils the hash)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.seeked = False

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        self.seeked = True
        return self.raw.seek(offset, whence)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def hexdigest(self) -> str | None:
        return None if self.seeked else self.sha256.hexdigest()


def _write(
    fin: BinaryIO, dst: Path, source: Source, trailing: Dataset
) -> tuple[str | None, int | None]:
    """New header, raw pixel element, trailing elements; nothing left half-written.
    Returns the sha256 (None: unknown) and where the pixel element starts in ``dst``."""
    pixel_at = None
    try:
        with open(dst, "wb") as raw:
            fout = cast(BinaryIO, _Hashing(raw))
            write_header(fout, source)
            if source.pixel_offset is not None:
                pixel_at = fout.tell()
                copy_pixels(fin, fout, source)
                write_trailing(fout, trailing, source)
        return cast(_Hashing, fout).hexdigest(), pixel_at
    except BaseException as exc:
        dst.unlink(missing_ok=True)
        if isinstance(exc, _MALFORMED):
            name = type(exc).__name__
            raise UnreadableInstance(f"instance cannot be re-encoded ({name})") from exc
        raise


def _drop_stale(ds: Dataset, trailing: Dataset, changes: Changes) -> None:
    """Group lengths, LengthToEnd and trailing padding would be wrong or carry junk."""
    for data in (ds, trailing):
        for tag in [t for t in tags(data) if t & 0xFFFF == 0 or t == 0x00080001]:
            del data[tag]
            changes.removed.add("GroupLength" if tag & 0xFFFF == 0 else "LengthToEnd")
    if PADDING in trailing:
        del trailing[PADDING]
        changes.removed.add("DataSetTrailingPadding")


def _basic(
    ds: Dataset, trailing: Dataset, options: frozenset[Option], secret: str, changes: Changes
) -> None:
    pid = basic.patient_key(ds, "")
    ctx = _context(ds, changes, lambda uid: values.keyed_uid(secret, uid))
    days = values.date_offset_days(secret, pid)
    ctx.shift_date = lambda v: values.shift_dt_or_da(v, days)
    _drop_stale(ds, trailing, changes)
    basic.apply(ds, options, secret, ctx)
    basic.apply(trailing, options, secret, ctx, pid)
    pseudonym = values.keyed_patient_id(secret, pid)
    set_value(ds, basic.PATIENT_ID, "LO", pseudonym, ctx)
    set_value(ds, basic.PATIENT_NAME, "PN", pseudonym, ctx)
    method.longitudinal(ds, options, ctx)
    method.write(ds, method.basic_codes(options), method.BASIC_TEXT, ctx)


def _eucaim(
    ds: Dataset, trailing: Dataset, policy: DeidPolicy, secret: str, changes: Changes
) -> None:
    pid = ds.get(eucaim.PATIENT_ID)
    original = None if pid is None else str(pid.value or "")
    anon_pid = ctp.hash_patient_id(secret, original)
    ctx = _context(ds, changes, lambda uid: ctp.hash_uid(ctp.EUCAIM_UID_ROOT, uid, anon_pid))
    _drop_stale(ds, trailing, changes)
    eucaim.apply(ds, secret, original, ctx)
    eucaim.apply(trailing, secret, original, ctx)
    set_value(ds, 0x00080080, "LO", eucaim.provider_hash(policy.provider_id), ctx)
    codes = list(method.EUCAIM_CODES)
    if any(e.tag.is_private for e in ds):
        codes.append("113111")  # the few numeric private elements the script keeps
    method.write(ds, codes, method.EUCAIM_TEXT, ctx)


def _context(ds: Dataset, changes: Changes, map_uid: Callable[[str], str]) -> Context:
    words = values.identifying_words(_identifying_values(ds))
    return Context(map_uid=map_uid, shift_date=lambda v: v, words=words, changes=changes)


def _identifying_values(ds: Dataset) -> list[str]:
    """This instance's identifying values (before de-identification) for C cleaning."""
    found: list[str] = []
    for tag in _IDENTIFYING_TAGS:
        if tag not in ds:
            continue
        value = ds[tag].value
        if value is None:
            continue
        if isinstance(value, MultiValue | list):
            found.extend(str(v) for v in value)
        else:
            found.append(str(value))
    return found


def _record(policy: DeidPolicy, changes: Changes) -> DeidRecord:
    options = sorted(o.value for o in policy.options)
    return DeidRecord(
        profile=policy.profile.value,
        options=options,
        edition=EDITION if policy.profile is Profile.basic else eucaim.EDITION,
        changed=sorted(changes.changed - changes.added),
        removed=sorted(changes.removed),
        added=sorted(changes.added),
    )

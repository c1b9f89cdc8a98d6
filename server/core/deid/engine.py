"""Apply a dataset's policy to one spooled Part-10 file (see policy.py).

``deidentify(src, dst, policy, secret)`` reads ``src``, writes the de-identified
instance to ``dst`` (same transfer syntax; pixel data copied, never decoded) and returns
its ``DeidRecord`` (in ``Deidentified``). The output is a pure function of (input bytes, policy, secret): the
same input gives byte-identical output in every process, so a re-sent instance is
recognised as the same instance.

Raises ``BurnedInSuspected`` when the instance may carry burned-in text and the policy
does not clean it (``PolicyError`` when it asks for cleaning: no OCR step here),
``UnreadableInstance`` when the input is not DICOM.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from pydicom import dcmread
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset

from server.core.deid import basic, burned_in, ctp, eucaim, method, raw, values
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
from server.core.deid.raw import Sent
from server.core.deid.stream import (
    CHUNK,
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
_IDENTIFYING_TAGS = values.identifying_tags()
_MALFORMED = (ValueError, TypeError, UnicodeError, OverflowError, struct.error, KeyError)
# sequences are parsed lazily, while the profile walks them: their parse errors too
_MALFORMED_ITEMS = (*_MALFORMED, OSError, EOFError, NotImplementedError, IndexError)


@dataclass
class Written:
    """The de-identified header as written to ``dst`` (its file meta is the new one) and
    where the pixel element starts in ``dst`` (None: no pixel data): what parsing ``dst``
    up to its pixel data would give, so the index record is built without that parse."""

    ds: Dataset
    pixel_offset: int | None


@dataclass
class Deidentified:
    """What ``deidentify`` made: the record; the sha256 (hex) of ``dst``, computed while
    it was written (None: hash the file); the header as written (None: parse ``dst``)."""

    record: DeidRecord
    sha256: str | None = None
    written: Written | None = None


def deidentify(
    src: Path,
    dst: Path,
    policy: DeidPolicy,
    secret: str,
    on_read: Callable[[Sent], None] | None = None,
    *,
    check_burned_in: bool = True,
    fast: bool = True,
) -> Deidentified:
    """PS3.15 Annex E / LETHE: write the de-identified copy of ``src`` to ``dst``.

    ``on_read`` sees the sent UIDs before anything is changed (the caller reads them
    here instead of parsing the file again); what it raises stops the work, nothing
    written. ``check_burned_in=False``: the header is de-identified although the
    instance is a burned-in suspect (for the quarantine, which holds it for an
    administrator). ``dst`` may be ``src``: the file is then rewritten in place, its
    original header overwritten (no second file is made and none is deleted); when
    that fails the file is left damaged and the caller deletes it.

    The fast path (``raw.py``) takes the common files; anything it does not mirror
    exactly falls back to the general path below, which gives the same bytes
    (``fast=False``: the general path only, for the tests that prove it)."""
    if policy.profile is Profile.none:
        shutil.copyfile(src, dst)
        return Deidentified(DeidRecord(profile="none", options=[], edition=""))
    seen: list[Sent] = []

    def read_once(sent: Sent) -> None:
        if not seen and on_read is not None:
            on_read(sent)
        seen.append(sent)

    if fast and check_burned_in:
        done = _fast(src, dst, policy, secret, read_once)
        if done is not None:
            return done
    if dst != src:
        return _general(src, dst, policy, secret, read_once, check_burned_in)
    tmp = src.with_name(src.name + ".deid")
    done = _general(src, tmp, policy, secret, read_once, check_burned_in)
    os.replace(tmp, src)
    return done


def _fast(
    src: Path, dst: Path, policy: DeidPolicy, secret: str, on_read: Callable[[Sent], None]
) -> Deidentified | None:
    """The raw walk; None when the general path must take the file (nothing written)."""
    with open(src, "r+b" if dst == src else "rb") as fin:
        size = os.fstat(fin.fileno()).st_size
        try:
            head = raw.read_header(fin, size)
            at = head.pixel_offset
            if at is not None and raw.pixel_end(fin, at, head.implicit) != size:
                return None  # elements after the pixel data (or truncated)
            top = raw.open_top(head)
            sent = raw.sent_of(top)
        except Exception:  # anything unusual: the general path decides, errors included
            return None
        on_read(sent)  # outside: what it raises stops the work
        try:
            result = raw.deidentify_header(top, policy, secret)
        except Exception:
            return None
        if dst == src:
            digest = _rewrite(fin, result.header, head.pixel_offset, size)
        else:
            digest = _write_fast(fin, dst, result.header, head.pixel_offset, size)
    return Deidentified(_record(policy, result.changes), digest, _written(result.header, head))


def _written(header: bytes, head: raw.Header) -> Written | None:
    """The written header parsed from memory (what parsing ``dst`` up to its pixel data
    gives: the same bytes); None if pydicom cannot (ingest parses ``dst`` then)."""
    try:
        ds = dcmread(io.BytesIO(header), force=True)
    except Exception:
        return None
    return Written(ds, None if head.pixel_offset is None else len(header))


def _write_fast(
    fin: BinaryIO, dst: Path, header: bytes, pixel_offset: int | None, size: int
) -> str:
    """The new header, then the pixel element copied raw; the sha256 of what was written."""
    sha = hashlib.sha256(header)
    try:
        with open(dst, "wb") as out:
            out.write(header)
            if pixel_offset is not None:
                fin.seek(pixel_offset)
                left = size - pixel_offset
                while left > 0:
                    block = fin.read(min(CHUNK, left))
                    if not block:
                        raise UnreadableInstance("pixel data is shorter than its declared length")
                    sha.update(block)
                    out.write(block)
                    left -= len(block)
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    return sha.hexdigest()


def _rewrite(f: BinaryIO, header: bytes, pixel_offset: int | None, size: int) -> str:
    """The new header in place of the old one, the pixel element moved to follow it;
    the sha256 of the result."""
    sha = hashlib.sha256(header)
    new = len(header)
    if pixel_offset is None:
        n = 0
    else:
        n = size - pixel_offset
        f.seek(pixel_offset)
        left = n
        while left > 0:  # the pixel bytes do not change, they move: hashed first
            block = f.read(min(CHUNK, left))
            if not block:
                raise UnreadableInstance("pixel data is shorter than its declared length")
            sha.update(block)
            left -= len(block)
        if new > pixel_offset:  # moved toward the end: last block first
            end = n
            while end > 0:
                start = max(0, end - CHUNK)
                f.seek(pixel_offset + start)
                block = f.read(end - start)
                f.seek(new + start)
                f.write(block)
                end = start
        elif new < pixel_offset:  # moved toward the start: first block first
            done = 0
            while done < n:
                f.seek(pixel_offset + done)
                block = f.read(min(CHUNK, n - done))
                f.seek(new + done)
                f.write(block)
                done += len(block)
    f.seek(0)
    f.write(header)
    if new + n < size:
        f.truncate(new + n)
    return sha.hexdigest()


def _general(
    src: Path,
    dst: Path,
    policy: DeidPolicy,
    secret: str,
    on_read: Callable[[Sent], None],
    check_burned_in: bool,
) -> Deidentified:
    """The general path: pydicom parses the header, the profile applies to the dataset."""
    changes = Changes()
    with open(src, "rb") as fin:
        source = read(fin)
        on_read(_sent(source.ds))
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
    return Deidentified(_record(policy, changes), digest, written)


def _sent(ds: Dataset) -> Sent:
    """The sent UIDs, decoded aside: the parsed dataset is left exactly as read (a
    decoded element would be re-encoded)."""
    found = []
    for tag in (raw.SOP_CLASS, raw.SOP_INSTANCE, raw.STUDY_UID):
        try:
            elem = ds.get_item(tag) if tag in ds else None
            if isinstance(elem, RawDataElement):
                elem = convert_raw_data_element(elem, encoding=ds._character_set, ds=ds)
            value = str(elem.value or "" if elem is not None else "")
        except Exception:  # a value pydicom cannot decode: the profile refuses it later
            value = ""
        found.append(value.strip().rstrip("\x00")[:64])
    meta = getattr(ds, "file_meta", None)
    readable = bool(ds.preamble) and meta is not None and "TransferSyntaxUID" in meta
    return Sent(found[0], found[1], found[2], readable)


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
        found.extend(values.value_strings(ds[tag].value))
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

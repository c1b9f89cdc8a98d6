"""Search everything a gateway returned for planted values, in every encoding it may take.

A *haystack* is one response (or file) as text: its raw bytes read as Latin-1 (so a
UTF-8, Latin-1 or ISO 2022 byte sequence stays findable), plus what decoding it gives:
multipart parts, DICOM instances parsed by pydicom (deflated and encapsulated syntaxes
included; values decoded with their Specific Character Set), JSON walked with its
``InlineBinary`` values base64-decoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pydicom
from pydicom.dataset import Dataset

from tests.deid.phi_corpus import UID_ROOT, Planted
from tests.deid.profiles import keeps_ages, keeps_dates, may_keep

PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


@dataclass
class Haystacks:
    items: list[tuple[str, str]] = field(default_factory=list)  # (label, text)
    seen: set[str] = field(default_factory=set)

    def add_bytes(self, label: str, data: bytes, content_type: str = "") -> None:
        digest = hashlib.sha1(data).hexdigest()
        if digest in self.seen:  # the same body again (e.g. an identical error answer)
            return
        self.seen.add(digest)
        self.items.append((label, data.decode("latin-1")))
        for text in decoded(data, content_type):
            self.items.append((label + " (decoded)", text))

    def total(self) -> int:
        return sum(len(text) for _, text in self.items)


def decoded(data: bytes, content_type: str) -> Iterator[str]:
    """Text views of a body: multipart parts, DICOM values, JSON strings."""
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("multipart/"):
        for part_type, body in multipart_parts(data, content_type):
            yield from decoded(body, part_type)
    elif "json" in kind:
        try:
            yield "\n".join(json_strings(json.loads(data)))
        except ValueError:
            return
    elif kind == "application/dicom" or data[128:132] == b"DICM":
        text = dicom_text(data)
        if text:
            yield text


def multipart_parts(data: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """The parts of a multipart body (RFC 2046), each with its Content-Type."""
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    if not found:
        return []
    parts = []
    for chunk in data.split(b"--" + found.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.partition(b"\r\n\r\n")
        kind = re.search(rb"(?im)^content-type:\s*([^\r\n]+)", head)
        parts.append((kind.group(1).decode("latin-1") if kind else "", body.removesuffix(b"\r\n")))
    return parts


def json_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            if key == "InlineBinary" and isinstance(value, str):
                try:
                    yield base64.b64decode(value).decode("latin-1")
                except (binascii.Error, ValueError):
                    yield value
            else:
                yield from json_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from json_strings(value)
    elif node is not None:
        yield str(node)


_DECODED: dict[str, str] = {}  # sha1 of a Part-10 body -> its text (parts repeat a lot)


def _dicom_text(data: bytes) -> str:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        return "\n".join(_values(ds))
    except Exception as exc:  # an undecodable part is still searched as raw bytes
        return f"undecodable: {exc}"


def dicom_text(data: bytes) -> str:
    """Every value of a Part-10 instance, decoded (deflate, character sets), pixels excepted."""
    digest = hashlib.sha1(data).hexdigest()
    if digest not in _DECODED:
        _DECODED[digest] = _dicom_text(data)
    return _DECODED[digest]


def _values(ds: Dataset) -> Iterator[str]:
    for elem in ds.iterall():
        if elem.tag in PIXEL_TAGS or elem.VR == "SQ":
            continue
        value = elem.value
        if isinstance(value, bytes):
            yield value.decode("latin-1")
        elif value is not None:
            yield str(value)


@dataclass(frozen=True)
class Leak:
    where: str
    kind: str
    value: str
    context: str

    def __str__(self) -> str:
        return f"{self.kind} {self.value!r} in {self.where}: ...{self.context}..."


def _variants(value: str) -> set[str]:
    """The forms a value takes on the wire: UTF-8 / Latin-1 bytes, JSON and URL escapes."""
    forms = {value, value.encode().decode("latin-1"), json.dumps(value)[1:-1], quote(value)}
    return {f.lower() for f in forms if f}


WORD = re.compile(r"[0-9a-z]{4,}")
MARKER = re.compile(r"phiq[a-z][0-9]?[0-9a-f]{8}")
TIME = re.compile(r"134209\.1[0-9]{5}")
UID_SHAPE = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+){2,}")
# Eight digits (a DA, or the date of a DT: at most 14 digits before its fraction) or ISO; a
# run of 15 or more digits is no date (a hash-made UID component may start with one).
DATE_SHAPE = re.compile(r"(?<![0-9])(?:[0-9]{8}(?![0-9]{7})|[0-9]{4}-[0-9]{2}-[0-9]{2})")


class Needles:
    """Planted strings, found by one pass over a text's ASCII words plus plain searches."""

    def __init__(self, values: Iterable[str]) -> None:
        self.by_word: dict[str, set[str]] = {}
        self.plain: set[str] = set()
        for value in values:
            for form in _variants(value):
                words = WORD.findall(form)
                if form.isascii() and words:
                    self.by_word.setdefault(max(words, key=len), set()).add(form)
                else:
                    self.plain.add(form)

    def find(self, text: str) -> Iterator[tuple[int, str]]:
        for word in set(WORD.findall(text)) & self.by_word.keys():
            for form in self.by_word[word]:
                for match in re.finditer(WORD_LEFT + re.escape(form) + WORD_RIGHT, text):
                    yield match.start(), form
        for form in self.plain:
            at = text.find(form)
            if at >= 0:
                yield at, form


WORD_LEFT, WORD_RIGHT = r"(?<![0-9a-z])", r"(?![0-9a-z])"


def _dates_iso(dates: Iterable[str]) -> set[str]:
    return {f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in dates} | set(dates)


def _shaped(text: str, shape: re.Pattern[str], values: set[str]) -> Iterator[tuple[int, str]]:
    for match in shape.finditer(text):
        found = match.group(0)
        if (
            found in values
            or found[:8] in values
            or (found.startswith(UID_ROOT) and UID_ROOT in values)
        ):
            yield match.start(), found


def find_leaks(
    stacks: Haystacks,
    planted: Planted,
    profile: str,
    options: frozenset[str] = frozenset(),
    limit: int = 200,
) -> list[Leak]:
    """Every planted value a haystack holds that the profile may not keep."""
    phi = Needles(planted.phi | (set() if keeps_ages(profile, options) else planted.ages))
    uids = {UID_ROOT, *planted.uids}
    dates = set() if keeps_dates(profile, options) else _dates_iso(planted.dates)
    if profile == "eucaim":  # dates become the 1st of their month: an original 1st is kept
        dates = {d for d in dates if not d.endswith("01")}
    markers = {
        m.lower() for m, (tag, _) in planted.markers.items() if not may_keep(profile, tag, options)
    }
    leaks: list[Leak] = []
    for where, original in stacks.items:
        text = original.lower()
        found = itertools.chain(
            (("phi", at, v) for at, v in phi.find(text)),
            (("uid", at, v) for at, v in _shaped(text, UID_SHAPE, uids)),
            (("date", at, v) for at, v in _shaped(text, DATE_SHAPE, dates)),
            (("marker", at, v) for at, v in _shaped(text, MARKER, markers)),
            (("marker", at, v) for at, v in _shaped(text, TIME, markers)),
        )
        for kind, at, value in found:
            context = original[max(0, at - 40) : at + len(value) + 40]
            leaks.append(Leak(where, kind, value, context))
            if len(leaks) >= limit:
                return leaks
    return leaks


def describe(leaks: list[Leak], planted: Planted, limit: int = 40) -> str:
    """A readable failure message: which attribute each leaked marker came from."""
    lines = []
    for leak in leaks[:limit]:
        origin = planted.markers.get(leak.value.upper()) or planted.markers.get(leak.value)
        suffix = (
            f" [planted in ({origin[0] >> 16:04X},{origin[0] & 0xFFFF:04X}) at {origin[1]}]"
            if origin
            else ""
        )
        lines.append(str(leak) + suffix)
    return f"{len(leaks)} leak(s):\n" + "\n".join(lines)

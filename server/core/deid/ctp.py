"""RSNA CTP's anonymizer functions, re-implemented from their published definitions.

EUCAIM's LETHE pipeline runs CTP's DicomAnonymizerTool; a gateway that wants its
pseudonyms to join LETHE output (and the clinical CSVs LETHE hashes) must compute the
same strings. Facts used (read in CTP's ``AnonymizerFunctions``/``DICOMAnonymizer`` and
RSNA Util's ``DigestUtil``):

- ``getUSMD5``: MD5 of the UTF-8 bytes, read as an unsigned big-endian integer and
  written in base 10 (no leading zeros, at most 39 digits).
- ``@hash(elem, n)``: the first ``n`` characters of that string.
- ``@hashptid(site, id)``: ``hash("[" + trim(site) + "]" + trim(id))``; a missing id
  hashes the text ``null``. LETHE passes its secret as ``site`` and prepends ``EUCAIM-``.
- ``@hashuid(root, uid, Elem)``: the root gets a trailing ``.``; with a third argument
  CTP evaluates that element's *script* and appends its result (for LETHE: the
  anonymised PatientID) to the uid before hashing; a digit string starting with ``0``
  gets a ``9`` in front; the whole UID is cut to 64 characters.
- ``@modifydate(elem, *, *, d)``: per backslash-separated value, keep year and month and
  set the day; anything after the 8 (or ISO 10) date characters (a DT's time) is kept;
  a value shorter than 8 characters becomes empty, an unparsable one empty.
- ``@hashdate(date, elem)``: ``inc = -(int(last 4 digits of hash(elem)) % 3650)``, 0
  becomes -1, and every date value moves by ``inc`` days (suffix kept as above).

The secret format is LETHE's: a UUIDv7 in 32 lower-case hex digits plus one Luhn
mod-16 check digit over the alphabet ``0-9a-f`` (33 characters).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import time
from collections.abc import Callable

EUCAIM_UID_ROOT = "1.3.6.1.4.1.58108.2023"
EUCAIM_PREFIX = "EUCAIM-"
UID_MAX = 64
_HEX = "0123456789abcdef"
_JAVA_WHITESPACE = "".join(chr(c) for c in range(0x21))


def usmd5(text: str) -> str:
    """CTP ``DigestUtil.getUSMD5``: MD5 of the UTF-8 bytes as an unsigned base-10 integer."""
    digest = hashlib.md5(text.encode("utf-8"), usedforsecurity=False).digest()
    return str(int.from_bytes(digest, "big"))


def ctp_hash(text: str | None, maxlen: int = 0) -> str:
    """CTP ``@hash(elem, maxlen)``: ``usmd5`` cut to ``maxlen`` leading digits (<1 = all)."""
    result = usmd5("null" if text is None else text)
    return result[:maxlen] if maxlen >= 1 else result


def java_trim(text: str) -> str:
    """Java ``String.trim``: strip characters <= U+0020 only (U+00A0 and other Unicode
    spaces are kept, unlike Python's ``str.strip``)."""
    return text.strip(_JAVA_WHITESPACE)


def hash_ptid(site: str | None, patient_id: str | None, maxlen: int = 0) -> str:
    """CTP ``@hashptid(site, id)``: hash of ``"[" + trim(site) + "]" + trim(id)``."""
    site_text = "" if site is None else java_trim(site)
    pid = "null" if patient_id is None else java_trim(patient_id)
    return ctp_hash(f"[{site_text}]{pid}", maxlen)


def hash_patient_id(secret: str, patient_id: str | None) -> str:
    """LETHE's PatientID: ``EUCAIM-`` + ``@hashptid(secret, PatientID)``."""
    return EUCAIM_PREFIX + hash_ptid(secret, patient_id)


def hash_patient_name(secret: str, patient_id: str | None) -> str:
    """LETHE's PatientName: ``EUCAIM-<hashptid of the PatientID>^Anonymous``."""
    return hash_patient_id(secret, patient_id) + "^Anonymous"


def hash_uid_raw(prefix: str, text: str) -> str:
    """CTP ``AnonymizerFunctions.hashUID(prefix, text)``."""
    root = java_trim(prefix)
    if root and not root.endswith("."):
        root += "."
    digits = usmd5(text)
    extra = "9" if digits.startswith("0") else ""
    return (root + extra + digits)[:UID_MAX]


def hash_uid(root: str, uid: str, anonymised_patient_id: str = "") -> str:
    """CTP ``@hashuid(root, this, PatientID)`` as LETHE's script evaluates it.

    ``anonymised_patient_id`` is the *result* of the PatientID script (``EUCAIM-...``),
    appended to the original UID before hashing; pass ``""`` for the two-argument form.
    """
    prefix = root if root.endswith(".") else root + "."
    return hash_uid_raw(prefix, uid + anonymised_patient_id)


def _split_date(value: str) -> tuple[_dt.date, int] | None:
    """Parse the leading DA part (YYYYMMDD or YYYY-MM-DD) and return it with its length."""
    iso = "-" in value
    length = 10 if iso else 8
    head = value[:length]
    fmt = "%Y-%m-%d" if iso else "%Y%m%d"
    try:
        return _dt.datetime.strptime(head, fmt).date(), length
    except ValueError:
        return None


def _format_date(day: _dt.date, iso: bool) -> str:
    sep = "-" if iso else ""
    return f"{day.year:04d}{sep}{day.month:02d}{sep}{day.day:02d}"


def _per_value(value: str, change: Callable[[_dt.date], _dt.date]) -> str:
    """Apply ``change`` to every backslash-separated value; CTP's empty-on-error rule."""
    if len(value) < 8:
        return ""
    out = []
    for one in value.split("\\"):
        parsed = _split_date(one)
        if parsed is None:
            return ""
        day, length = parsed
        out.append(_format_date(change(day), "-" in one) + one[length:])
    return "\\".join(out)


def modify_date(value: str, day: int = 1) -> str:
    """CTP ``@modifydate(this, *, *, day)``: keep year and month, set the day of the month."""
    return _per_value(value, lambda d: d.replace(day=day))


def date_shift_days(hash_source: str | None) -> int:
    """CTP ``@hashdate``'s increment: ``-(last 4 digits of hash(source) % 3650)``, never 0."""
    digits = ctp_hash(hash_source)
    inc = -(int(digits[-4:]) % 3650)
    return inc or -1


def shift_date(value: str, days: int) -> str:
    """CTP ``@incrementdate(this, days)`` on every value (suffix after the date kept)."""
    return _per_value(value, lambda d: d + _dt.timedelta(days=days))


def hash_date_shift(value: str, hash_source: str | None) -> str:
    """CTP ``@hashdate(this, Elem)``: move the dates by the per-``hash_source`` increment."""
    return shift_date(value, date_shift_days(hash_source))


def _luhn_checksum(text: str) -> int:
    """Luhn mod-N checksum over the hex alphabet (N = 16), rightmost digit undoubled."""
    n = len(_HEX)
    digits = [_HEX.index(c) for c in reversed(text)]
    total = sum(digits[0::2])
    total += sum(sum(divmod(d * 2, n)) for d in digits[1::2])
    return total % n


def _uuid7_hex(now_ms: int | None = None, rand: bytes | None = None) -> str:
    """A UUID version 7 (RFC 9562) as 32 lower-case hex digits."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    tail = bytearray(os.urandom(10) if rand is None else rand)
    tail[0] = 0x70 | (tail[0] & 0x0F)  # version 7 in the high nibble of byte 6
    tail[2] = 0x80 | (tail[2] & 0x3F)  # RFC 4122 variant in byte 8
    return (ms & (2**48 - 1)).to_bytes(6, "big").hex() + bytes(tail).hex()


def luhn16_check_digit(text: str) -> str:
    """The hex digit that makes ``text + digit`` pass the mod-16 Luhn check."""
    return _HEX[-_luhn_checksum(text + _HEX[0]) % len(_HEX)]


def generate_secret() -> str:
    """A new secret in LETHE's format: UUIDv7 hex + Luhn mod-16 check digit (33 chars)."""
    body = _uuid7_hex()
    return body + luhn16_check_digit(body)


def valid_secret(secret: str) -> bool:
    """LETHE's check: 33 characters of ``0-9a-f`` whose mod-16 Luhn checksum is 0."""
    if len(secret) != 33 or any(c not in _HEX for c in secret):
        return False
    return _luhn_checksum(secret) == 0

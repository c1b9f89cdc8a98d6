"""Value-level replacements shared by the profiles: dummies, keyed pseudonyms, UIDs, dates.

Everything here is a pure function of (value, secret): the same input gives the same
output in every process, which is what keeps references and re-sent instances stable.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import lru_cache

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.uid import UID_dictionary

from server.core.deid import ctp

# D: a non-zero-length dummy consistent with the VR
DUMMY: dict[str, str | bytes | int | float] = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "DS": "0",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMOUS",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "TM": "000000",
    "UC": "ANONYMIZED",
    "UR": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "OB": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "OW": b"\x00\x00",
    "UN": b"\x00\x00",
    "AT": 0,
}

# UI attributes that name a definition, never an instance: never remapped
_DEFINITION_UID = re.compile(r"(ClassUID|TransferSyntaxUID|ClassUIDInFile)$")
_DEFINITION_TAGS = {
    0x0008010C,  # Coding Scheme UID
    0x00080117,  # Context UID
    0x00080118,  # Mapping Resource UID
    0x0008010D,  # Context Group Extension Creator UID
    0x00020100,  # Private Information Creator UID (file meta)
    0x00020012,  # Implementation Class UID
}


# the values a C (or a K on free text) removes from text: this instance's identifiers
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "StationName",
    "PatientBirthDate",
    "StudyID",
)


def keyed(secret: str, purpose: str, value: str) -> bytes:
    """HMAC-SHA256 of ``value`` under the dataset secret, separated by ``purpose``."""
    msg = f"{purpose}\x00{value}".encode()
    return hmac.new(secret.encode("utf-8"), msg, hashlib.sha256).digest()


def keyed_patient_id(secret: str, patient_id: str) -> str:
    """``basic`` PatientID/PatientName: a keyed pseudonym, stable for the same patient."""
    return "ANON-" + keyed(secret, "patient", patient_id.strip()).hex()[:32].upper()


def keyed_uid(secret: str, uid: str) -> str:
    """``basic`` U action: a 2.25 UID from a keyed UUIDv8 of the original (<= 44 chars)."""
    raw = bytearray(keyed(secret, "uid", uid)[:16])
    raw[6] = 0x80 | (raw[6] & 0x0F)  # version 8 (custom) per RFC 9562
    raw[8] = 0x80 | (raw[8] & 0x3F)  # RFC 4122 variant
    return "2.25." + str(int.from_bytes(raw, "big"))


def date_offset_days(secret: str, patient_id: str) -> int:
    """``basic`` Modified Dates: a keyed per-patient shift of 1..3650 days into the past."""
    value = int.from_bytes(keyed(secret, "date-shift", patient_id.strip())[:8], "big")
    return -(value % 3650 + 1)


def shift_dt_or_da(value: str, days: int) -> str:
    """Shift every DA/DT value by ``days`` (time part kept); empty when unparsable."""
    return ctp.shift_date(value, days)


def is_definition_uid(tag: int, value: str) -> bool:
    """SOP classes, transfer syntaxes, coding schemes and registered UIDs stay unchanged."""
    if value in UID_dictionary or tag in _DEFINITION_TAGS:
        return True
    return bool(_DEFINITION_UID.search(keyword_for_tag(tag) or ""))


@lru_cache(maxsize=64)
def _any_word(words: tuple[str, ...]) -> re.Pattern[str]:
    """Finds any of ``words`` anywhere (no word boundaries): a value it does not match
    contains none of them, so no substitution below could change it."""
    return re.compile("|".join(re.escape(w) for w in words), flags=re.IGNORECASE)


def scrub(text: str, words: list[str]) -> str:
    """Clean (C) a free-text value: remove every identifying word of this instance."""
    if words and not _any_word(tuple(words)).search(text):
        return " ".join(text.split())
    out = text
    for word in words:  # whole words only: "St" must not eat the "st" of "chest"
        out = re.sub(rf"(?<!\w){re.escape(word)}(?!\w)", "", out, flags=re.IGNORECASE)
    return " ".join(out.split())


def identifying_tags() -> list[int]:
    """The tags of :data:`IDENTIFYING`, whose values feed :func:`identifying_words`."""
    return [int(tag_for_keyword(k) or 0) for k in IDENTIFYING]


def value_strings(value: object) -> list[str]:
    """An element's value as text: nothing for an empty one, one string per item of a
    multi-valued one."""
    if value is None:
        return []
    if isinstance(value, MultiValue | list):
        return [str(v) for v in value]
    return [str(value)]


def identifying_words(values: list[str]) -> list[str]:
    """The words a C action removes: parts of names, IDs, dates (longest first)."""
    words: set[str] = set()
    for value in values:
        for part in re.split(r"[\^=\\ ,]+", value):
            if len(part.strip()) >= 2:
                words.add(part.strip())
    return sorted(words, key=lambda w: (-len(w), w))

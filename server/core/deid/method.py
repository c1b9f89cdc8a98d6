"""The attributes that say an instance was de-identified, and how (PS3.15 E.1.1).

PatientIdentityRemoved = YES always; DeidentificationMethodCodeSequence lists CID 7050
codes (113100 + the options really applied); DeidentificationMethod names the profile,
the table edition and the deviations, one short value each (LO, <= 64 characters).
Nothing time-dependent is written, so output stays byte-deterministic.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from server.core.deid.actions import Context, set_value
from server.core.deid.annex_e_table import EDITION, OPTION_EDITION
from server.core.deid.policy import BASIC_PROFILE_CODE, CODES, Option

MEANINGS = {
    "113100": "Basic Application Confidentiality Profile",
    "113103": "Clean Graphics Option",
    "113104": "Clean Structured Content Option",
    "113105": "Clean Descriptors Option",
    "113106": "Retain Longitudinal Temporal Information Full Dates Option",
    "113107": "Retain Longitudinal Temporal Information Modified Dates Option",
    "113108": "Retain Patient Characteristics Option",
    "113109": "Retain Device Identity Option",
    "113110": "Retain UIDs Option",
    "113111": "Retain Safe Private Option",
    "113112": "Retain Institution Identity Option",
}

BASIC_TEXT = [
    "PS3.15 Annex E Basic Application Level Confidentiality Profile",
    f"Table E.1-1 {EDITION} (option columns {OPTION_EDITION})",
    "X/Z->Z, X/D Z/D X/Z/D->D; unlisted PN emptied",
    "unlisted ST/LT/UT/UC removed; instance UIDs remapped (keyed)",
    "kept free text loses this instance's names and IDs",
    "no Clean Pixel Data: burned-in suspects refused",
]
EUCAIM_TEXT = [
    "EUCAIM LETHE anon.script (RSNA CTP) compatible",
    "deviation: times kept, not shifted",
    "deviation: every kept date, any depth: day of month -> 01",
    "deviation: LETHE removals follow Annex E Basic (structure kept)",
    "deviation: SeriesDescription, ProtocolName kept",
    "kept free text loses this instance's names and IDs",
    "fix: SOP Class references kept; PatientIdentityRemoved set",
    "no Clean Pixel Data: burned-in suspects refused",
]
EUCAIM_CODES = ["113100", "113107", "113108", "113109"]


def basic_codes(options: frozenset[Option]) -> list[str]:
    return [BASIC_PROFILE_CODE, *sorted(CODES[o] for o in options)]


def _code_item(code: str) -> Dataset:
    item = Dataset()
    item.CodeValue = code
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = MEANINGS[code]
    return item


def write(ds: Dataset, codes: list[str], text: list[str], ctx: Context) -> None:
    """PatientIdentityRemoved, DeidentificationMethod and its code sequence on ``ds``."""
    set_value(ds, 0x00120062, "CS", "YES", ctx)
    set_value(ds, 0x00120063, "LO", list(text), ctx)
    set_value(ds, 0x00120064, "SQ", Sequence([_code_item(c) for c in codes]), ctx)


def longitudinal(ds: Dataset, options: frozenset[Option], ctx: Context) -> None:
    """LongitudinalTemporalInformationModified (0028,0303) per the date option."""
    if Option.retain_long_full_dates in options:
        value = "UNMODIFIED"
    elif Option.retain_long_modified_dates in options:
        value = "MODIFIED"
    else:
        value = "REMOVED"
    set_value(ds, 0x00280303, "CS", value, ctx)

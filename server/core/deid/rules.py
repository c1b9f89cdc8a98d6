"""Which Annex E action applies to an attribute under a ``basic`` policy.

``basic_action(tag, vr, options)`` returns one of K X Z D C U (compound actions already
resolved). How compound actions are resolved without the IOD tables (which say whether
an attribute is Type 1, 2 or 3 in a given IOD): we pick the variant that is valid for
every Type, so the output stays conformant whatever the IOD:

- ``X/Z`` -> Z (an empty value is valid for Type 2 and 3),
- ``X/D``, ``Z/D``, ``X/Z/D`` -> D (a dummy is valid for Type 1, 2 and 3),
- ``X/Z/U*`` -> U for UIDs; sequences are kept and processed item by item (the U applies
  to the UIDs inside), other VRs Z.

Options override the Basic action when the table has an entry in their column; when
two enabled options name the same attribute, K wins over C (retain is what was asked).

Public tags unknown to the data dictionary are removed. Attributes the table does not
list are kept, with these safety nets (deviations toward
less information): person names (PN) become empty; dates and date-times follow the date
columns (removed to D/Z unless a Retain Longitudinal option applies); free-text VRs
ST/LT/UT/UC are removed unless Clean Descriptors cleans them (SR TextValue: also under
Clean Structured Content); every UID that is not a
definition (SOP class, transfer syntax, coding scheme, registered UID) is remapped.
Overlay groups (60xx) go entirely unless Clean Graphics; curves (50xx) likewise.
"""

from __future__ import annotations

from functools import lru_cache

from server.core.deid.actions import is_known
from server.core.deid.annex_e_table import MASKED, RULES
from server.core.deid.policy import Option

_RESOLVE = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D"}
_DATE = {Option.retain_long_full_dates.value: "K", Option.retain_long_modified_dates.value: "C"}
_TIME_VRS = {"DA", "DT", "TM"}
_FREE_TEXT = {"ST", "LT", "UT", "UC"}
TEXT_VALUE = 0x0040A160  # SR TextValue (UT), not listed in Table E.1-1


def table_entry(tag: int) -> tuple[str, dict[str, str]] | None:
    """The Table E.1-1 row for ``tag`` (exact tags first, then repeating groups)."""
    row = RULES.get(tag)
    if row is not None:
        return row
    for base, mask, action, cols in MASKED:
        if tag & mask == base:
            return action, cols
    return None


def _with_options(basic: str, cols: dict[str, str], options: frozenset[Option]) -> str:
    chosen = [cols[o.value] for o in options if o.value in cols]
    if "K" in chosen:
        return "K"
    if chosen:
        return chosen[0]
    return basic


def _resolve(action: str, vr: str) -> str:
    if action == "X/Z/U*":
        if vr == "SQ":
            return "K"
        return "U" if vr == "UI" else "Z"
    return _RESOLVE.get(action, action)


def _unlisted(tag: int, vr: str, options: frozenset[Option]) -> str:
    if tag == TEXT_VALUE and Option.clean_structured_content in options:
        return "C"  # SR text content items: cleaned, not removed, under the option
    if vr == "PN":
        return "Z"
    if vr in _TIME_VRS:
        return _with_options("D" if vr != "TM" else "Z", _DATE, options)
    if vr in _FREE_TEXT:
        return "C" if Option.clean_descriptors in options else "X"
    if vr == "UI":
        return "K" if Option.retain_uids in options else "U"
    return "K"


@lru_cache(maxsize=16384)  # a pure function of its arguments: decided once per tag
def basic_action(tag: int, vr: str, options: frozenset[Option]) -> str:
    """The single action (K X Z D C U) for a public attribute under ``basic``."""
    group = tag >> 16
    if group & 0xFF00 in (0x5000, 0x6000) and Option.clean_graphics not in options:
        return "X"
    row = table_entry(tag)
    if row is None:
        if not is_known(tag):
            return "X"  # not a standard attribute: nothing says what it holds
        return _unlisted(tag, vr, options)
    basic, cols = row
    return _resolve(_with_options(basic, cols, options), vr)

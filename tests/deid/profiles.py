"""Which attributes a de-identification profile keeps by definition (the test's own oracle).

Read from the standard and from LETHE's script, never from the gateway's code:

- ``data/annex_e_2024b.json``: DICOM PS3.15 Table E.1-1 (2024b), machine-readable copy
  published by innolitics/dicom-standard. The Basic Profile protects the attributes it
  lists; an attribute it does not list is not protected, so its value may stay. An
  option column saying ``K`` keeps the attribute when that option is on.
- ``data/lethe_keep.json``: the ``@keep()`` rules, kept groups (0018, 0020, 0028),
  ``@remove()`` rules and other (rewriting) rules of EUCAIM LETHE's ``anon.script``.
  The ``eucaim`` profile follows the script except where it removes an attribute
  (``@remove()``, or an unchecked element outside the kept groups): there the Basic
  Profile's action applies (a documented deviation that keeps references and structure).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"

# Option value (server.core.deid.policy.Option) -> column of Table E.1-1
OPTION_COLUMNS = {
    "retain-longitudinal-full-dates": "rtnLongFullDatesOpt",
    "retain-longitudinal-modified-dates": "rtnLongModifDatesOpt",
    "retain-patient-characteristics": "rtnPatCharsOpt",
    "retain-device-identity": "rtnDevIdOpt",
    "retain-institution-identity": "rtnInstIdOpt",
    "retain-uids": "rtnUIDsOpt",
    "retain-safe-private": "rtnSafePrivOpt",
    "clean-descriptors": "cleanDescOpt",
    "clean-structured-content": "cleanStructContOpt",
    "clean-graphics": "cleanGraphOpt",
}


@cache
def annex_e() -> dict[str, dict[str, str]]:
    body: dict[str, Any] = json.loads((DATA / "annex_e_2024b.json").read_text())
    return body["attributes"]


@cache
def lethe() -> dict[str, Any]:
    return json.loads((DATA / "lethe_keep.json").read_text())


def _annex_e_row(tag: int) -> dict[str, str] | None:
    table = annex_e()
    key = f"{tag:08X}"
    if key in table:
        return table[key]
    group, element = key[:4], key[4:]
    for pattern in (f"{group[:2]}XX{element}", f"{group[:2]}XXXXXX"):
        if pattern in table:
            return table[pattern]
    return None


def basic_may_keep(tag: int, options: frozenset[str] = frozenset()) -> bool:
    """May a value planted in ``tag`` survive the Basic Profile with these options?"""
    if (tag >> 16) % 2 == 1:  # private: X unless Retain Safe Private (safe list only)
        return "retain-safe-private" in options
    row = _annex_e_row(tag)
    if row is None:
        return True  # not listed in Table E.1-1: the profile does not protect it
    return any(row.get(OPTION_COLUMNS[o]) == "K" for o in options if o in OPTION_COLUMNS)


def eucaim_may_keep(tag: int) -> bool:
    """May a value planted in ``tag`` survive the eucaim profile (kept verbatim)?"""
    if (tag >> 16) % 2 == 1:
        return False  # LETHE removes every private group
    script = lethe()
    key = f"{tag:08X}"
    if key in set(script["keep"]):
        return True
    if key in set(script["rewritten"]):
        return False
    if key[:4] in script["keep_groups"] and key not in set(script["removed"]):
        return True
    return basic_may_keep(tag)  # removed by the script: the Basic Profile's action


def may_keep(profile: str, tag: int, options: frozenset[str] = frozenset()) -> bool:
    if profile == "none":
        return True
    if profile == "eucaim":
        return eucaim_may_keep(tag)
    return basic_may_keep(tag, options)


def keeps_dates(profile: str, options: frozenset[str]) -> bool:
    """Does the profile keep original dates verbatim (Retain Longitudinal Full Dates)?"""
    return profile == "none" or "retain-longitudinal-full-dates" in options


def keeps_ages(profile: str, options: frozenset[str]) -> bool:
    return profile in ("none", "eucaim") or "retain-patient-characteristics" in options

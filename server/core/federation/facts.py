"""What a study says about the search's study-level keys: age and year (computed at ingest
for the Elasticsearch index; the SQLite index computes the same in SQL, see
``server/index/federation_sql.py``; the contract suite checks they agree).

The search's "age at diagnosis" and "year of diagnosis" are the age and year at the
patient's FIRST study in the dataset (``first_study``), for every study of that patient:
the earliest StudyDate, a tie broken by the smallest Study Instance UID, studies without a
(valid) date last. Both index backends store that patient-level value on each study at
write time and recompute it for all of the patient's studies when one is added, replaced
or deleted.

Age is in completed years at the study: from PatientAge (0010,1010; ``nnnY``, ``nnnM``,
``nnnW``, ``nnnD``) when present, because de-identification may remove or coarsen the birth
date while keeping the age; otherwise StudyDate minus PatientBirthDate (a birth date
coarsened to the 1st of January or of a month gives an age at most one year too high).
Year is the year of the StudyDate. Missing or malformed values give None (unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DAYS_PER_YEAR = 365  # PatientAge in days or weeks -> completed years (integer division)


def age_years(
    patient_age: str | None, study_date: str | None, birth_date: str | None
) -> int | None:
    from_age = age_from_patient_age(patient_age)
    if from_age is not None:
        return from_age
    return age_from_dates(study_date, birth_date)


def age_from_patient_age(text: str | None) -> int | None:
    """PS3.5 6.2 AS: ``nnnD|W|M|Y`` -> completed years."""
    if not text or len(text) != 4 or not text[:3].isdigit():
        return None
    n, unit = int(text[:3]), text[3]
    if unit == "Y":
        return n
    if unit == "M":
        return n // 12
    if unit == "W":
        return n * 7 // DAYS_PER_YEAR
    if unit == "D":
        return n // DAYS_PER_YEAR
    return None


def age_from_dates(study_date: str | None, birth_date: str | None) -> int | None:
    """Completed years between two DA values ``YYYYMMDD`` (None if either is not one)."""
    if study_date is None or birth_date is None or not _is_da(study_date) or not _is_da(birth_date):
        return None
    years = int(study_date[:4]) - int(birth_date[:4]) - (study_date[4:] < birth_date[4:])
    return years if years >= 0 else None


def study_year(study_date: str | None) -> int | None:
    return int(study_date[:4]) if study_date is not None and _is_da(study_date) else None


def _is_da(value: str | None) -> bool:
    return value is not None and len(value) == 8 and value.isdigit()


def patient_age_of(study_json: dict[str, Any]) -> str | None:
    """PatientAge from a study's DICOM JSON, if present."""
    element = study_json.get("00101010") or {}
    values = element.get("Value") or []
    return str(values[0]).strip() if values else None


@dataclass(frozen=True)
class StudyFacts:
    """One study of a patient, as the first-study choice sees it."""

    study_uid: str
    study_date: str | None
    age: int | None
    year: int | None


def first_order(study_date: str | None, study_uid: str) -> tuple[int, str, str]:
    """Sort key of the first-study choice: dated studies first (earliest date), then UID."""
    if _is_da(study_date):
        return (0, str(study_date), study_uid)
    return (1, "", study_uid)


def first_study(studies: Sequence[StudyFacts]) -> StudyFacts | None:
    """The patient's first study (None if there is none)."""
    return min(studies, key=lambda s: first_order(s.study_date, s.study_uid), default=None)

"""Pseudonyms for the rows of a clinical CSV, the same the dataset's images get (pure).

LETHE's ``hash_clinical`` rules: column 1 is the PatientID; in the studies-metadata
file, column 2 is the StudyInstanceUID. Per profile:

* ``eucaim``: RSNA CTP ``@hashptid`` (``EUCAIM-`` + decimal MD5 of ``[secret]`` + the
  trimmed PatientID; an empty one hashes as ``null``, as LETHE does) and ``@hashuid``
  under ``1.3.6.1.4.1.58108.2023`` with the pseudonymised PatientID appended;
* ``basic``: the engine's keyed pseudonyms (``ANON-`` + HMAC-SHA256 of the trimmed
  PatientID; a ``2.25`` UID keyed on the original, or the original under Retain UIDs).
  The engine keys a patient without a PatientID on the study UID, so such a row can be
  pseudonymised in the studies file only.

``none`` has no pseudonyms: :func:`row_mapper` refuses it.
"""

from __future__ import annotations

from collections.abc import Callable

from server.core.deid import ctp, values
from server.core.deid.policy import DeidPolicy, Option, Profile

Mapper = Callable[[list[str]], list[str]]


class RowError(ValueError):
    """A row that cannot be pseudonymised (the message names why, never a value)."""


def row_mapper(policy: DeidPolicy, secret: str, studies: bool) -> Mapper:
    """The function that pseudonymises one data row (not the header) of a clinical CSV."""
    if policy.profile is Profile.eucaim:
        patient, uid = _eucaim(secret)
    elif policy.profile is Profile.basic:
        patient, uid = _basic(secret, Option.retain_uids in policy.options)
    else:
        raise ValueError(f"the {policy.profile.value} profile makes no pseudonyms")

    def clinical(row: list[str]) -> list[str]:
        return [patient(row[0], None), *row[1:]]

    def study(row: list[str]) -> list[str]:
        if len(row) < 2:
            raise RowError("a studies-metadata row needs PatientID and StudyInstanceUID")
        pseudonym = patient(row[0], row[1])
        return [pseudonym, uid(row[1], pseudonym), *row[2:]]

    return study if studies else clinical


def _eucaim(secret: str) -> tuple[Callable[[str, str | None], str], Callable[[str, str], str]]:
    def patient(pid: str, _: str | None) -> str:
        return ctp.hash_patient_id(secret, pid if pid else "null")

    def uid(original: str, pseudonym: str) -> str:
        return ctp.hash_uid(ctp.EUCAIM_UID_ROOT, original, pseudonym)

    return patient, uid


def _basic(
    secret: str, retain_uids: bool
) -> tuple[Callable[[str, str | None], str], Callable[[str, str], str]]:
    def patient(pid: str, study_uid: str | None) -> str:
        if pid.strip():
            return values.keyed_patient_id(secret, pid)
        if study_uid is None or not study_uid.strip():
            raise RowError("an empty PatientID is keyed on its study (use the studies file)")
        return values.keyed_patient_id(secret, "study:" + study_uid.strip())

    def uid(original: str, _: str) -> str:
        original = original.rstrip("\x00 ")
        return original if retain_uids or not original else values.keyed_uid(secret, original)

    return patient, uid

"""Which datasets answer the federated search, and the answer's collection objects.

A dataset (FHIR ResearchStudy) answers when its status is ``active``, its access rights
are not NON_PUBLIC (RESTRICTED ones answer: federated search counts what cannot be
downloaded) and it has not opted out with the ``dataset-federated-search`` extension set
to false. Its ``id`` in the answer is the ResearchStudy id, which is also the dataset's
identifier in the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.core.federation.vocabulary import GENDER_LABEL

EXT = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition"
OPT_IN_URL = f"{EXT}/dataset-federated-search"
ACCESS_RIGHTS_URL = f"{EXT}/dataset-access-rights"
SNOMED = "http://snomed.info/sct"
AGE_STEP = 5  # the answer's age range is widened to multiples of this (outliers stay hidden)


@dataclass(frozen=True)
class Answering:
    id: str
    name: str
    description: str
    cancer_types: frozenset[str]  # SNOMED CT ids


def extension(resource: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in resource.get("extension", []) if e.get("url") == url), None)


def federated(resource: dict[str, Any]) -> bool:
    """The dataset's switch: absent or true -> it answers (if active and not NON_PUBLIC)."""
    ext = extension(resource, OPT_IN_URL)
    return ext is None or ext.get("valueBoolean") is not False


def answers(resource: dict[str, Any]) -> bool:
    rights = (extension(resource, ACCESS_RIGHTS_URL) or {}).get("valueCode")
    return resource.get("status") == "active" and rights != "NON_PUBLIC" and federated(resource)


def answering(resource: dict[str, Any]) -> Answering:
    codes = {
        str(c.get("code"))
        for cond in resource.get("condition", [])
        for c in cond.get("coding", [])
        if c.get("system") == SNOMED and c.get("code")
    }
    return Answering(
        id=str(resource["id"]),
        name=str(resource.get("title") or resource["id"]),
        description=str(resource.get("description") or ""),
        cancer_types=frozenset(codes),
    )


def age_range(low: int | None, high: int | None) -> dict[str, int]:
    """``{"min", "max"}`` in years, always an object ({0, 0} when unknown), widened to
    multiples of AGE_STEP (the reference returns the integer 0 when the maximum is unknown)."""
    if low is None or high is None:
        return {"min": 0, "max": 0}
    return {"min": low - low % AGE_STEP, "max": high + (-high) % AGE_STEP}


def genders(sexes: set[str | None]) -> list[str]:
    """MIABIS wording (Male, Female, Undifferentiated, Unknown), in that order; any other
    PatientSex value counts as Undifferentiated."""
    labels = {GENDER_LABEL.get(x, "Undifferentiated") for x in sexes}
    return [label for label in ("Male", "Female", "Undifferentiated", "Unknown") if label in labels]

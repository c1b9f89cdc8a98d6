"""Conformance artifacts of the FHIR facade: profiles, search parameters and terminology.

Every JSON file under ``profiles/`` and ``terminology/`` (at the repository root) is one FHIR R4
resource. :func:`load_conformance` reads them all, checks that each parses as its R4 resource type
(``fhir.resources.R4B`` models, which accept R4 4.0.1 content for these resource types), and returns
a :class:`Conformance` holding them by ``(resourceType, id)`` plus the lookups the DICOM to FHIR
mapping needs (BodyPartExamined, laterality, cancer type, modality display).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

__all__ = [
    "BASE_URL",
    "SNOMED_SYSTEM",
    "Conformance",
    "default_conformance",
    "load_conformance",
]

BASE_URL = "https://cancer-imaging-gateway.eu/fhir"
"""Canonical base of every artifact this server publishes."""

SNOMED_SYSTEM = "http://snomed.info/sct"
DICOM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"

ARTIFACT_DIRS = ("profiles", "terminology")

BODY_PART_MAP_URL = f"{BASE_URL}/ConceptMap/bodypart-to-snomed"
LATERALITY_MAP_URL = f"{BASE_URL}/ConceptMap/laterality-to-snomed"
CANCER_TYPE_MAP_URL = f"{BASE_URL}/ConceptMap/cancer-type-to-snomed"
MODALITY_VALUESET_URL = f"{BASE_URL}/ValueSet/dicom-modalities"

Coding = dict[str, str]
Resource = dict[str, Any]


SHARE = "share/cancer-imaging-gateway"


def _default_root() -> Path:
    """Where profiles/ and terminology/ are: GATEWAY_CONFORMANCE_DIR, the source tree
    (editable installs, tests), or ``<prefix>/share/cancer-imaging-gateway`` where a
    normal ``pip install`` puts them (pyproject data-files)."""
    configured = os.environ.get("GATEWAY_CONFORMANCE_DIR")
    candidates = [Path(configured)] if configured else []
    candidates += [Path(__file__).resolve().parents[3], Path(sys.prefix) / SHARE]
    for candidate in candidates:
        if (candidate / "profiles").is_dir() and (candidate / "terminology").is_dir():
            return candidate
    raise ValueError(
        "the FHIR profiles/ and terminology/ folders were not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); set GATEWAY_CONFORMANCE_DIR"
    )


def _coding(system: str, code: str, display: str | None) -> Coding:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _concept_map_codings(resource: Resource | None) -> Iterator[tuple[str, Coding]]:
    """(source code, target Coding) for every mapped element; unmatched elements are skipped."""
    if resource is None:
        return
    for group in resource.get("group", []):
        target_system = group.get("target")
        for element in group.get("element", []):
            source_code = element.get("code")
            for target in element.get("target", []):
                if (
                    source_code
                    and target_system
                    and target.get("code")
                    and target.get("equivalence") not in ("unmatched", "disjoint")
                ):
                    yield (
                        source_code,
                        _coding(target_system, target["code"], target.get("display")),
                    )
                    break


@dataclass(frozen=True)
class Conformance:
    """The server's conformance resources and the terminology lookups built from them."""

    resources: dict[tuple[str, str], Resource]
    _by_url: dict[str, Resource] = field(init=False, repr=False, compare=False)
    _body_sites: dict[str, Coding] = field(init=False, repr=False, compare=False)
    _lateralities: dict[str, Coding] = field(init=False, repr=False, compare=False)
    _cancer_types: dict[str, Coding] = field(init=False, repr=False, compare=False)
    _modalities: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_url = {r["url"]: r for r in self.resources.values() if isinstance(r.get("url"), str)}
        object.__setattr__(self, "_by_url", by_url)

        body_sites = {
            code.upper(): coding
            for code, coding in _concept_map_codings(by_url.get(BODY_PART_MAP_URL))
        }
        object.__setattr__(self, "_body_sites", body_sites)

        lateralities = {
            code.upper(): coding
            for code, coding in _concept_map_codings(by_url.get(LATERALITY_MAP_URL))
        }
        object.__setattr__(self, "_lateralities", lateralities)

        cancer_types: dict[str, Coding] = {}
        for code, coding in _concept_map_codings(by_url.get(CANCER_TYPE_MAP_URL)):
            cancer_types[code.lower()] = coding
            cancer_types[coding["code"]] = coding
        object.__setattr__(self, "_cancer_types", cancer_types)

        modalities: dict[str, str] = {}
        valueset = by_url.get(MODALITY_VALUESET_URL) or {}
        for include in valueset.get("compose", {}).get("include", []):
            for concept in include.get("concept", []):
                if concept.get("code") and concept.get("display"):
                    modalities[concept["code"].upper()] = concept["display"]
        object.__setattr__(self, "_modalities", modalities)

    def get(self, resource_type: str, id: str) -> Resource | None:
        """The resource with this type and id, or None."""
        return self.resources.get((resource_type, id))

    def by_url(self, url: str) -> Resource | None:
        """The resource with this canonical URL (a ``|version`` suffix is ignored), or None."""
        return self._by_url.get(url.split("|", 1)[0])

    def of_type(self, resource_type: str) -> list[Resource]:
        """Every resource of a type, ordered by id."""
        return [
            resource
            for (rtype, _), resource in sorted(self.resources.items())
            if rtype == resource_type
        ]

    def body_site(self, body_part_examined: str) -> Coding | None:
        """SNOMED CT Coding for a DICOM Body Part Examined (0018,0015) value (any case), or None."""
        coding = self._body_sites.get(body_part_examined.strip().upper())
        return dict(coding) if coding else None

    def laterality(self, value: str) -> Coding | None:
        """SNOMED CT Coding for a DICOM (Image) Laterality value R / L / B (any case), or None."""
        coding = self._lateralities.get(value.strip().upper())
        return dict(coding) if coding else None

    def cancer_type(self, code_or_snomed: str) -> Coding | None:
        """SNOMED CT Coding for a cancer type given as our short code (e.g. ``breast``) or as its
        SNOMED CT id (optionally ``http://snomed.info/sct|<id>``); None if unknown."""
        key = code_or_snomed.strip()
        if "|" in key:
            system, key = key.split("|", 1)
            if system and system != SNOMED_SYSTEM:
                return None
        coding = self._cancer_types.get(key) or self._cancer_types.get(key.lower())
        return dict(coding) if coding else None

    def modality_display(self, code: str) -> str | None:
        """DICOM code meaning of a modality code (e.g. ``MR`` -> ``Magnetic Resonance``), or None."""
        return self._modalities.get(code.strip().upper())

    def urls(self) -> list[str]:
        """Canonical URLs of all resources, sorted."""
        return sorted(self._by_url)


def _artifact_files(root: Path) -> Iterable[Path]:
    for name in ARTIFACT_DIRS:
        folder = root / name
        if folder.is_dir():
            yield from sorted(folder.glob("*.json"))


def _load_file(path: Path) -> Resource:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name}: not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: not a JSON object")
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not isinstance(data.get("id"), str):
        raise ValueError(f"{path.name}: resourceType and id are required")
    try:
        model = get_fhir_model_class(resource_type)
        model.model_validate(data)
    except Exception as exc:
        raise ValueError(f"{path.name}: not a valid FHIR R4 {resource_type}: {exc}") from exc
    return data


def load_conformance(root: Path | None = None) -> Conformance:
    """Read and validate every JSON file in ``profiles/`` and ``terminology/`` under ``root``
    (default: the repository root). Raises ValueError naming the file that is invalid, or the
    files that share a (resourceType, id) or a canonical URL."""
    base = root if root is not None else _default_root()
    resources: dict[tuple[str, str], Resource] = {}
    origin: dict[tuple[str, str], Path] = {}
    url_origin: dict[str, Path] = {}
    for path in _artifact_files(base):
        data = _load_file(path)
        key = (data["resourceType"], data["id"])
        if key in resources:
            raise ValueError(
                f"{path.name}: {key[0]}/{key[1]} already defined by {origin[key].name}"
            )
        url = data.get("url")
        if isinstance(url, str):
            if url in url_origin:
                raise ValueError(f"{path.name}: url {url} already used by {url_origin[url].name}")
            url_origin[url] = path
        resources[key] = data
        origin[key] = path
    return Conformance(resources=resources)


@functools.lru_cache(maxsize=1)
def default_conformance() -> Conformance:
    """The repository's conformance resources, loaded once per process."""
    return load_conformance()

"""What a dataset's ResearchStudy says about it for the catalogue (descriptive fields).

The figures the images know (counts, modalities, sexes, ...) come from the index; everything
else comes from here: the ResearchStudy's own elements (title, description, status,
condition, contact, keyword) and the catalogue extensions an administrator sets
(``imaging-gateway catalogue set`` or a FHIR write), each defined in ``profiles/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EXT = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition"
DEID_EXT = f"{EXT}/dataset-deidentification"
LISTED_STATUS = "active"
LISTED_RIGHTS = ("PUBLIC", "RESTRICTED")

# extension name -> (attribute of Description, value key, repeats)
EXTENSIONS: dict[str, tuple[str, str, bool]] = {
    "dataset-publisher-name": ("publisher_name", "valueString", False),
    "dataset-publisher-email": ("publisher_email", "valueString", False),
    "dataset-publisher-url": ("publisher_url", "valueUrl", False),
    "dataset-applicable-legislation": ("legislation", "valueUri", True),
    "dataset-version": ("version", "valueString", False),
    "dataset-interoperability-level": ("interoperability_level", "valueUri", False),
    "dataset-collection-method": ("collection_methods", "valueUri", True),
    "dataset-health-category": ("health_categories", "valueUri", True),
    "dataset-type": ("types", "valueUri", True),
    "dataset-access-url": ("access_url", "valueUrl", False),
    "dataset-license": ("license", "valueUri", False),
    "dataset-provenance": ("provenance", "valueString", True),
}


@dataclass
class Contact:
    name: str | None = None
    email: str | None = None
    url: str | None = None


@dataclass
class Description:
    """The descriptive (non-computed) catalogue fields of one dataset."""

    id: str
    title: str
    status: str
    access_rights: str | None
    description: str | None = None
    conditions: list[dict[str, str]] = field(default_factory=list)  # SNOMED CT codings
    access_conditions: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)
    publisher_name: str | None = None
    publisher_email: str | None = None
    publisher_url: str | None = None
    legislation: list[str] = field(default_factory=list)
    version: str | None = None
    interoperability_level: str | None = None
    collection_methods: list[str] = field(default_factory=list)
    health_categories: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    access_url: str | None = None
    license: str | None = None
    provenance: list[str] = field(default_factory=list)
    deid_profile: str | None = None  # basic | eucaim | none; None = not recorded
    last_updated: str | None = None
    issued: str | None = None  # when the ResearchStudy was first stored

    @property
    def listed(self) -> bool:
        """In the catalogue: active and PUBLIC or RESTRICTED (NON_PUBLIC or unset: absent)."""
        return self.status == LISTED_STATUS and self.access_rights in LISTED_RIGHTS


def describe(resource: dict[str, Any]) -> Description:
    """The catalogue fields of a stored ResearchStudy."""
    desc = Description(
        id=str(resource.get("id", "")),
        title=str(resource.get("title") or resource.get("id", "")),
        status=str(resource.get("status", "")),
        access_rights=None,
        description=resource.get("description") or None,
        last_updated=(resource.get("meta") or {}).get("lastUpdated"),
    )
    for concept in resource.get("condition", []):
        desc.conditions += [c for c in concept.get("coding", []) if c.get("code")]
    for concept in resource.get("keyword", []):
        text = concept.get("text") or next(
            (c.get("display") or c.get("code") for c in concept.get("coding", [])), None
        )
        if text:
            desc.keywords.append(str(text))
    desc.contacts = [_contact(c) for c in resource.get("contact", [])]
    for ext in resource.get("extension", []):
        _apply_extension(desc, ext)
    return desc


def _apply_extension(desc: Description, ext: dict[str, Any]) -> None:
    url = str(ext.get("url", ""))
    name = url.rsplit("/", 1)[-1] if url.startswith(EXT + "/") else ""
    if name == "dataset-access-rights":
        desc.access_rights = ext.get("valueCode")
    elif name == "dataset-access-condition" and ext.get("valueCode"):
        desc.access_conditions.append(ext["valueCode"])
    elif url == DEID_EXT:
        desc.deid_profile = next(
            (s.get("valueCode") for s in ext.get("extension", []) if s.get("url") == "profile"),
            None,
        )
    elif name in EXTENSIONS:
        attr, key, repeats = EXTENSIONS[name]
        value = ext.get(key)
        if value is None:
            return
        if repeats:
            getattr(desc, attr).append(str(value))
        else:
            setattr(desc, attr, str(value))


def _contact(detail: dict[str, Any]) -> Contact:
    contact = Contact(name=detail.get("name"))
    for telecom in detail.get("telecom", []):
        if telecom.get("system") == "email" and not contact.email:
            contact.email = telecom.get("value")
        elif telecom.get("system") == "url" and not contact.url:
            contact.url = telecom.get("value")
    return contact

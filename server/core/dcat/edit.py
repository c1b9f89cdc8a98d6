"""Setting a dataset's descriptive catalogue fields on its ResearchStudy (pure).

Each field given replaces what the ResearchStudy had (repeatable fields: the whole list); an
empty value removes the field. Values are checked here, so a bad one changes nothing:
emails need one ``@`` and no spaces, URLs are absolute http(s), vocabulary values are
absolute IRIs or short forms (``SPEC1000011`` or ``eucaim:SPEC1000011`` for the EUCAIM
hyper-ontology, ``dpv:PseudonymisedData``, a health category code such as ``EHRS``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from server.core.dcat.fields import EXT, EXTENSIONS
from server.core.dcat.vocab import DPV, EUCAIM, HEALTH_CATEGORY
from server.errors import BadRequest

MAX_TEXT = 4000
MAX_VALUES = 50
_EUCAIM_CODE = re.compile(r"^(?:eucaim:)?([A-Z]{2,4}\d{7})$")
_CATEGORY_CODE = re.compile(r"^[A-Z][A-Z_]{1,40}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# field -> kind of value
KINDS = {
    "publisher_name": "text", "publisher_email": "email", "publisher_url": "url",
    "legislation": "iri", "version": "text", "interoperability_level": "concept",
    "collection_methods": "concept", "health_categories": "category", "types": "concept",
    "access_url": "url", "license": "iri", "provenance": "text",
}  # fmt: skip
NATIVE = ("keywords", "contact_name", "contact_email", "contact_url")


def set_fields(resource: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of the ResearchStudy with the given catalogue fields set (see module doc)."""
    unknown = set(changes) - set(KINDS) - set(NATIVE)
    if unknown:
        raise BadRequest(f"unknown catalogue field(s): {', '.join(sorted(unknown))}")
    out = dict(resource)
    extensions = list(out.get("extension", []))
    for attr, value in changes.items():
        if attr in KINDS:
            extensions = _replace_extension(extensions, attr, value)
    out["extension"] = extensions
    if "keywords" in changes:
        words = [_text("keyword", w) for w in _values(changes["keywords"])]
        out["keyword"] = [{"text": w} for w in words if w]
        if not out["keyword"]:
            del out["keyword"]
    if {"contact_name", "contact_email", "contact_url"} & set(changes):
        out = _set_contact(out, changes)
    return out


def _replace_extension(
    extensions: list[dict[str, Any]], attr: str, value: Any
) -> list[dict[str, Any]]:
    name = next(n for n, (a, _, _) in EXTENSIONS.items() if a == attr)
    _, key, repeats = EXTENSIONS[name]
    values = _values(value)
    if not repeats and len(values) > 1:
        raise BadRequest(f"{attr} takes one value")
    checked = [_check(attr, KINDS[attr], v) for v in values if v != ""]
    kept = [e for e in extensions if e.get("url") != f"{EXT}/{name}"]
    return kept + [{"url": f"{EXT}/{name}", key: v} for v in checked]


def _values(value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else list(value or [])
    if len(values) > MAX_VALUES:
        raise BadRequest(f"at most {MAX_VALUES} values per field")
    return [str(v).strip() for v in values]


def _check(attr: str, kind: str, value: str) -> str:
    if kind == "text":
        return _text(attr, value)
    if kind == "email":
        if not _EMAIL.match(value) or len(value) > 320:
            raise BadRequest(f"{attr}: {value!r} is not an email address")
        return value
    if kind == "url":
        return _url(attr, value)
    if kind == "concept" and (m := _EUCAIM_CODE.match(value)):
        return str(EUCAIM[m.group(1)])
    if kind == "concept" and value.startswith("dpv:"):
        return str(DPV[value[4:]])
    if kind == "category" and _CATEGORY_CODE.match(value):
        return str(HEALTH_CATEGORY[value])
    return _iri(attr, value)


def _text(attr: str, value: str) -> str:
    if len(value) > MAX_TEXT or any(ord(c) < 32 and c not in "\t\n" for c in value):
        raise BadRequest(f"{attr}: text too long or with control characters")
    return value


def _url(attr: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in value:
        raise BadRequest(f"{attr}: {value!r} is not an absolute http(s) URL")
    return value


def _iri(attr: str, value: str) -> str:
    parts = urlsplit(value)
    if (
        not parts.scheme
        or not (parts.netloc or parts.path)
        or any(c in value for c in ' <>"{}|\\^`')
    ):
        raise BadRequest(f"{attr}: {value!r} is not an absolute IRI (or a known short form)")
    return value


def _set_contact(resource: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The first ResearchStudy.contact (ContactDetail): name, email and url telecoms."""
    current = (resource.get("contact") or [{}])[0]
    name = changes.get("contact_name", current.get("name") or "")
    telecoms = {t.get("system"): t.get("value") for t in current.get("telecom", [])}
    email = changes.get("contact_email", telecoms.get("email") or "")
    url = changes.get("contact_url", telecoms.get("url") or "")
    detail: dict[str, Any] = {}
    if name:
        detail["name"] = _text("contact_name", name)
    telecom = []
    if email:
        telecom.append({"system": "email", "value": _check("contact_email", "email", email)})
    if url:
        telecom.append({"system": "url", "value": _url("contact_url", url)})
    if telecom:
        detail["telecom"] = telecom
    rest = (resource.get("contact") or [])[1:]
    out = {**resource, "contact": ([detail] if detail else []) + rest}
    if not out["contact"]:
        del out["contact"]
    return out

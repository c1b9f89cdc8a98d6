"""Profile validation for ``$validate`` (FHIR R4 Resource-validate; StructureDefinition differentials).

Checks what the gateway's profiles constrain: the base FHIR R4 model (via
fhir.resources), minimum cardinalities, fixed/pattern values, and codes bound to
our ValueSets (``required`` → error, ``extensible``/``preferred`` → warning).
Slices are checked by their minimum only.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from server.core.fhir.conformance import Conformance

Issue = tuple[str, str, str]  # severity, code, diagnostics
PROFILES = {
    "ImagingStudy": "https://cancer-imaging-gateway.eu/fhir/StructureDefinition/gateway-imagingstudy",
    "ResearchStudy": "https://cancer-imaging-gateway.eu/fhir/StructureDefinition/dataset-researchstudy",
}


def validate_resource(resource: dict[str, Any], conformance: Conformance) -> list[Issue]:
    """All issues found; an empty list means the resource conforms."""
    rtype = resource.get("resourceType", "")
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError):
        return [("error", "not-supported", f"unknown resourceType {rtype!r}")]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [
            ("error", "structure", f"{'.'.join(map(str, e['loc']))}: {e['msg']}")
            for e in exc.errors()
        ]
    issues = _base_codes(resource)
    for extension in resource.get("extension", []):  # our extensions: their own definitions
        definition = conformance.by_url(str(extension.get("url", "")))
        elements = (definition or {}).get("differential", {}).get("element", [])
        urls = _slice_urls(elements)
        for element in elements:
            issues += _check_element(extension, element, conformance, urls)
    profile = conformance.by_url(PROFILES[rtype]) if rtype in PROFILES else None
    elements = (profile or {}).get("differential", {}).get("element", [])
    urls = _slice_urls(elements)
    for element in elements:
        issues += _check_element(resource, element, conformance, urls)
    return issues


def _slice_urls(elements: list[dict[str, Any]]) -> dict[str, str]:
    """Element id of each extension slice -> the url its members carry (sliced by url)."""
    urls: dict[str, str] = {}
    for element in elements:
        eid = element.get("id", "")
        if eid.endswith(".url") and "fixedUri" in element and ":" in eid:
            urls[eid[: -len(".url")]] = element["fixedUri"]
        elif element.get("sliceName") and element.get("type"):
            profiles = element["type"][0].get("profile") or []
            if profiles and eid not in urls:
                urls[eid] = profiles[0]
    return urls


def _segments(element_id: str, urls: dict[str, str]) -> list[tuple[str, str | None]]:
    """``Extension.extension:profile.value[x]`` -> [("extension", "profile"), ("value[x]", None)]:
    each step of the path, with the url its items must carry when it is an extension slice."""
    parts = element_id.split(".")
    out: list[tuple[str, str | None]] = []
    for n, part in enumerate(parts[1:], start=1):
        name, _, _ = part.partition(":")
        url = urls.get(".".join(parts[: n + 1])) if name.endswith("xtension") else None
        out.append((name, url))
    return out


def _base_codes(resource: dict[str, Any]) -> list[Issue]:
    """Top-level codes bound (required) to a FHIR R4 value set, e.g. ``status``."""
    model = get_fhir_model_class(resource["resourceType"])
    issues: list[Issue] = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        allowed = extra.get("enum_values")
        value = resource.get(info.alias or name)
        if isinstance(allowed, list) and isinstance(value, str) and value not in allowed:
            path = f"{resource['resourceType']}.{info.alias or name}"
            issues.append(("error", "code-invalid", f"{path}: {value!r} is not one of {allowed}"))
    return issues


def _values(node: Any, path: list[str] | list[tuple[str, str | None]]) -> list[Any]:
    """Every value at a path (lists flattened; ``value[x]`` matches any valueX; a step
    given as (name, url) keeps the extensions with that url only)."""
    items = node if isinstance(node, list) else [node]
    if not path:
        return [i for i in items if i is not None]
    step = path[0]
    key, url = step if isinstance(step, tuple) else (step, None)
    out: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if key.endswith("[x]"):
            stem = key[:-3]
            matches = [
                v for k, v in item.items() if k.startswith(stem) and k[len(stem) :][:1].isupper()
            ]
        else:
            matches = [item[key]] if key in item else []
        for value in matches:
            if url is not None:
                value = [
                    v
                    for v in (value if isinstance(value, list) else [value])
                    if isinstance(v, dict) and v.get("url") == url
                ]
            out += _values(value, path[1:])
    return out


def _check_element(
    resource: dict[str, Any],
    element: dict[str, Any],
    conf: Conformance,
    urls: dict[str, str] | None = None,
) -> list[Issue]:
    path = _segments(element.get("id") or element["path"], urls or {})
    if not path:
        return []
    parents = _values(resource, path[:-1])
    issues: list[Issue] = _slice_cardinality(resource, element, path)
    issues += _closed_slicing(resource, element, path, urls or {})
    minimum = element.get("min", 0)
    # inside a slice (id "X.identifier:uid.system") the minimum holds for the slice's members only
    if minimum and "sliceName" not in element and ":" not in element.get("id", ""):
        for parent in parents or ([resource] if len(path) == 1 else []):
            if len(_values(parent, path[-1:])) < minimum:
                issues.append(
                    (
                        "error",
                        "required",
                        f"{element['path']}: at least {minimum} required by the profile",
                    )
                )
    values = _values(resource, path)
    for key, expected in element.items():
        if (key.startswith("fixed") or key.startswith("pattern")) and key[
            5 if key.startswith("fixed") else 7 :
        ][:1].isupper():
            for value in values:
                if not _matches(value, expected):
                    issues.append(("error", "value", f"{element['path']}: must be {expected!r}"))
    binding = element.get("binding")
    if binding and binding.get("valueSet"):
        issues += _check_binding(element["path"], values, binding, conf)
    return issues


def _slice_cardinality(
    resource: dict[str, Any], element: dict[str, Any], path: list[tuple[str, str | None]]
) -> list[Issue]:
    """Minimum and maximum of an extension slice (its members are known by their url)."""
    if not element.get("sliceName") or path[-1][1] is None:
        return []
    low, high = element.get("min", 0), element.get("max", "*")
    issues: list[Issue] = []
    for parent in _values(resource, path[:-1]) or ([resource] if len(path) == 1 else []):
        count = len(_values(parent, path[-1:]))
        if count < low or (high != "*" and count > int(high)):
            issues.append(
                (
                    "error",
                    "structure",
                    f"{element['id']}: {count} found, the profile allows {low}..{high}",
                )
            )
    return issues


def _closed_slicing(
    resource: dict[str, Any],
    element: dict[str, Any],
    path: list[tuple[str, str | None]],
    urls: dict[str, str],
) -> list[Issue]:
    """Extensions sliced by url with ``rules: closed`` allow the urls of their slices only."""
    if element.get("slicing", {}).get("rules") != "closed" or not path[-1][0].endswith("xtension"):
        return []
    head = element["id"] + ":"
    allowed = {
        url for eid, url in urls.items() if eid.startswith(head) and "." not in eid[len(head) :]
    }
    return [
        (
            "error",
            "structure",
            f"{element['id']}: {item.get('url')!r} is not a slice of the profile",
        )
        for item in _values(resource, path)
        if isinstance(item, dict) and item.get("url") not in allowed
    ]


def _matches(value: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            _matches(value.get(k), v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches(v, p) for v in value) for p in pattern)
    return bool(value == pattern)


def _check_binding(
    path: str, values: list[Any], binding: dict[str, Any], conf: Conformance
) -> list[Issue]:
    allowed = _value_set_codes(conf, binding["valueSet"].split("|")[0])
    if allowed is None:
        return []
    severity = "error" if binding.get("strength") == "required" else "warning"
    issues: list[Issue] = []
    for value in values:
        codings = _codings(value)
        if codings and not any(c in allowed or (None, c[1]) in allowed for c in codings):
            shown = ", ".join(f"{s or ''}|{c}" for s, c in codings)
            issues.append(
                (severity, "code-invalid", f"{path}: {shown} is not in {binding['valueSet']}")
            )
    return issues


def _codings(value: Any) -> list[tuple[str | None, str]]:
    if isinstance(value, str):
        return [(None, value)]
    if isinstance(value, dict) and "coding" in value:
        return [(c.get("system"), c.get("code")) for c in value["coding"] if c.get("code")]
    if isinstance(value, dict) and "code" in value:
        return [(value.get("system"), value["code"])]
    return []


def _value_set_codes(conf: Conformance, url: str) -> set[tuple[str | None, str]] | None:
    vs = conf.by_url(url)
    if vs is None:
        return None
    codes: set[tuple[str | None, str]] = set()
    for include in vs.get("compose", {}).get("include", []):
        system = include.get("system")
        for concept in include.get("concept", []):
            codes.add((system, concept["code"]))
            codes.add((None, concept["code"]))
        if not include.get("concept") and system:
            cs = next((r for r in conf.of_type("CodeSystem") if r.get("url") == system), None)
            for concept in (cs or {}).get("concept", []):
                codes.add((system, concept["code"]))
                codes.add((None, concept["code"]))
    return codes

"""Scope syntax: SMART v2 resource scopes plus dataset scopes (SMART App Launch 2.0 3.0.2).

==========================  ====================================================
scope                       meaning
==========================  ====================================================
``system/ImagingStudy.rs``  SMART v2: read and search ImagingStudy (and DICOMweb
                            reads, which show the same studies)
``system/*.rs``             read and search every resource type
``system/ImagingStudy.c``   create: DICOMweb STOW (with a ``dataset:<id>:store``)
``dataset:<id>``            use dataset ``id`` under its active agreement
``dataset:<id>:store``      push (STOW) into dataset ``id``
``dataset:<id>:curate``     correct dataset ``id``: replace a stored instance
                            (same SOP Instance UID, new content) with a STOW
                            ``?replace=true``; implies ``:store``
``admin``                   datasets, agreements, clients, audit, deletes
``federation:search``       EUCAIM federated search (protected counts of every
                            dataset that answers it; clients listed in
                            ``GATEWAY_FEDERATION__OAUTH_CLIENTS``)
==========================  ====================================================

A token's scope is requested ∩ allowed; a request naming no dataset scope gets
every dataset the caller's agreements allow (and a pusher every dataset it may
push to or curate). SMART v1 forms (``system/*.read``) are accepted as ``rs``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SMART = re.compile(r"^(system|user|patient)/(\*|[A-Z][A-Za-z]+)\.(c?r?u?d?s?|read|write|\*)$")
FEDERATION_SEARCH = "federation:search"
_DATASET = re.compile(r"^dataset:([A-Za-z0-9\-.]{1,64})(?::(store|curate))?$")


def is_valid(scope: str) -> bool:
    return (
        scope in ("admin", FEDERATION_SEARCH)
        or bool(_SMART.match(scope))
        or bool(_DATASET.match(scope))
    )


def smart_permissions(scope: str) -> tuple[str, set[str]] | None:
    """``system/ImagingStudy.rs`` → ("ImagingStudy", {"r", "s"})."""
    m = _SMART.match(scope)
    if not m:
        return None
    ops = m.group(3)
    if ops == "read":
        ops = "rs"
    elif ops in ("write", "*"):
        ops = "cruds" if ops == "*" else "cud"
    return m.group(2), set(ops)


def allows_resource(scopes: Iterable[str], resource_type: str, op: str) -> bool:
    """True if any SMART scope grants ``op`` (c/r/u/d/s) on ``resource_type``."""
    for scope in scopes:
        found = smart_permissions(scope)
        if found and found[0] in ("*", resource_type) and op in found[1]:
            return True
    return False


def dataset_scope(scope: str) -> tuple[str, str] | None:
    """``dataset:x`` → ("x", ""); ``dataset:x:store`` → ("x", "store"); ``:curate`` alike."""
    m = _DATASET.match(scope)
    return (m.group(1), m.group(2) or "") if m else None


def _dataset_allowed(
    named: tuple[str, str], datasets: set[str], store: set[str], curate: set[str]
) -> bool:
    dataset, kind = named
    if kind == "store":
        return dataset in store
    if kind == "curate":
        return dataset in curate
    return dataset in datasets


def grant(
    requested: list[str],
    allowed_smart: set[str],
    datasets: set[str],
    store: set[str],
    admin: bool,
    curate: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """The scope to put in a token: requested ∩ allowed (RFC 6749 3.3)."""
    out: list[str] = []
    wants_datasets = any(dataset_scope(s) for s in requested)
    for scope in requested:
        named = dataset_scope(scope)
        if (
            (scope == "admin" and admin)
            or (scope == FEDERATION_SEARCH and scope in allowed_smart)
            or (named and _dataset_allowed(named, datasets, store, set(curate)))
            or (smart_permissions(scope) and scope in allowed_smart)
            or (
                (found := smart_permissions(scope))
                and any(
                    (a := smart_permissions(x)) and a[0] in ("*", found[0]) and found[1] <= a[1]
                    for x in allowed_smart
                )
            )
        ):
            out.append(scope)
    if not wants_datasets:
        out += (
            [f"dataset:{d}" for d in sorted(datasets)]
            + [f"dataset:{d}:store" for d in sorted(store)]
            + [f"dataset:{d}:curate" for d in sorted(curate)]
        )
    return list(dict.fromkeys(out))

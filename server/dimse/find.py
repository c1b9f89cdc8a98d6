"""C-FIND SCP (PS3.4 C.4.1): the identifier becomes a QIDO query; the same matching applies.

Patient Root and Study Root, every level. Keys become QIDO parameters (a multi-valued
UID list ``a\\b`` is the list ``a,b``); keys given empty are return keys. A key the
gateway cannot match on, given a value, is refused (0xA900 naming it) rather than
silently matched universally: the same rule as QIDO's 400. PATIENT level searches
studies and answers one response per patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.multival import MultiValue

from server.core.attributes import MATCHING_BY_TAG, MODALITIES_IN_STUDY, Level
from server.core.qido import QidoQuery, parse_query
from server.dimse.identifiers import encode_row
from server.dimse.session import (
    IDENTIFIER_DOES_NOT_MATCH,
    REFUSED_NOT_AUTHORISED,
    SUCCESS,
    audit,
    caller_of,
    patient_root,
)
from server.errors import GatewayError, InvalidQuery, ServiceUnavailable
from server.security.model import Action

if TYPE_CHECKING:
    from server.app import Gateway

PENDING, CANCEL = 0xFF00, 0xFE00
EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
RETRIEVE_URL = "00081190"
LEVELS = {
    "PATIENT": Level.STUDY,
    "STUDY": Level.STUDY,
    "SERIES": Level.SERIES,
    "IMAGE": Level.INSTANCE,
}
_SKIP = {0x00080052, 0x00080005, 0x00080054}  # QueryRetrieveLevel, charset, RetrieveAETitle
_PATIENT_COUNT = 0x00201200  # NumberOfPatientRelatedStudies
OUT_OF_RESOURCES = 0xA700  # C-FIND: Refused: Out of Resources (PS3.4 C.4.1.1.4)


class IdentifierRefused(GatewayError):
    """The identifier asks for something the SCP does not do (0xA900 + ErrorComment)."""


@dataclass(frozen=True)
class FindRequest:
    level_name: str
    query: QidoQuery
    requested: tuple[int, ...]  # tags the identifier names, in order


def parse_identifier(identifier: Dataset, patient_model: bool, max_limit: int) -> FindRequest:
    """PS3.4 C.4.1.2: the identifier as a QIDO query at its level (IdentifierRefused if not)."""
    level_name = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level_name not in LEVELS or (level_name == "PATIENT" and not patient_model):
        raise IdentifierRefused(f"QueryRetrieveLevel {level_name or '(none)'} is not supported")
    pairs: list[tuple[str, str]] = []
    includes: list[str] = []
    requested: list[int] = []
    for elem in identifier:
        tag = int(elem.tag)
        if tag in _SKIP or elem.tag.is_private or elem.tag.element == 0:
            continue
        requested.append(tag)
        value = _text(elem)
        name = keyword_for_tag(tag) or f"{tag:08X}"
        if (tag == MODALITIES_IN_STUDY and level_name in ("STUDY", "PATIENT")) or (
            tag in MATCHING_BY_TAG and elem.VR != "SQ"
        ):
            pairs.append((f"{tag:08X}", value))
        elif value:
            raise IdentifierRefused(f"matching on {name} is not supported")
        elif tag != _PATIENT_COUNT:
            includes.append(f"{tag:08X}")  # a return key (computed ones included)
    if level_name == "PATIENT":
        includes += ["00100020", "00100021"]  # one response per PatientID + issuer
    if includes:
        pairs.append(("includefield", ",".join(includes)))
    pairs.append(("limit", str(max_limit)))
    try:
        query = parse_query(LEVELS[level_name], pairs, max_limit=max_limit)
    except InvalidQuery as exc:
        raise IdentifierRefused(exc.message[:64]) from exc
    return FindRequest(level_name, query, tuple(requested))


def _text(elem: Any) -> str:
    """An element's value as QIDO writes it: lists comma-separated, empty for none."""
    if elem.VR == "SQ":
        return "x" if elem.value else ""
    value = elem.value
    if value is None or value == "":
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value).strip()


def search_all(gateway: Gateway, query: QidoQuery, principal: Any) -> Iterator[dict[str, Any]]:
    """Every match within the caller's datasets, page after page (the QIDO service)."""
    offset = 0
    while True:
        page = replace(query, offset=offset)
        rows, has_more = gateway.retrieve.search(page, "", principal)
        yield from rows
        if not has_more or not rows:
            return
        offset += len(rows)


def response(row: dict[str, Any], request: FindRequest, ae_title: str) -> Dataset:
    """The requested keys of one match (PS3.4 C.4.1.3.2: absent values zero-length)."""
    wanted = {f"{t:08X}" for t in request.requested}
    kept = {k: v for k, v in row.items() if k in wanted and "BulkDataURI" not in v}
    ds = Dataset.from_json(kept)
    for tag in request.requested:
        if tag not in ds and keyword_for_tag(tag):
            ds.add_new(tag, dictionary_VR(tag), None)
    ds.QueryRetrieveLevel = request.level_name
    if "SpecificCharacterSet" not in ds and "00080005" in row:
        ds.SpecificCharacterSet = row["00080005"].get("Value", ["ISO_IR 192"])
    ds.RetrieveAETitle = ae_title
    return ds


def patients(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Study rows → one row per patient (PatientID + IssuerOfPatientID), with its study count."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (_first(row, "00100020"), _first(row, "00100021"))
        found = seen.setdefault(key, {k: v for k, v in row.items() if k.startswith("0010")})
        count = found.get("00201200", {"Value": [0]})["Value"][0] + 1
        found["00201200"] = {"vr": "IS", "Value": [count]}
    yield from seen.values()


def _first(row: dict[str, Any], tag: str) -> str:
    values = row.get(tag, {}).get("Value") or [""]
    return str(values[0])


def handle_find(event: Any, gateway: Gateway) -> Iterator[tuple[Any, Dataset | None]]:
    """EVT_C_FIND: pending responses, one per match, then success (PS3.4 C.4.1.3)."""
    caller = caller_of(gateway, event)
    text = describe(event.identifier)
    if caller is None:
        audit(gateway, event, None, action="search", method="C-FIND",
              status=REFUSED_NOT_AUTHORISED, query=text)  # fmt: skip
        yield failure(REFUSED_NOT_AUTHORISED, "calling AE is not registered"), None
        return
    searched = caller.principal.datasets_for(Action.SEARCH)
    datasets = tuple(sorted(searched)) if searched is not None else ()
    try:
        request = parse_identifier(
            event.identifier, patient_root(event), gateway.settings.qido.max_limit
        )
        rows = search_all(gateway, request.query, caller.principal)
        if request.level_name == "PATIENT":
            rows = patients(rows)
        ae_title = gateway.settings.dimse.ae_title
        syntax = str(event.context.transfer_syntax)
        direct = syntax in (EXPLICIT_LE, IMPLICIT_LE)  # what the SCP accepts for queries
        for row in rows:
            if event.is_cancelled:
                yield CANCEL, None
                return
            encoded = None
            if direct:
                encoded = encode_row(row, request.requested, request.level_name, ae_title,
                                     implicit=syntax == IMPLICIT_LE)  # fmt: skip
            yield PENDING, encoded if encoded is not None else response(row, request, ae_title)
    except ServiceUnavailable as exc:  # the index cannot answer: not the peer's fault
        audit(gateway, event, caller, action="search", method="C-FIND",
              status=OUT_OF_RESOURCES, query=text)  # fmt: skip
        yield failure(OUT_OF_RESOURCES, exc.message), None
        return
    except GatewayError as exc:
        audit(gateway, event, caller, action="search", method="C-FIND",
              status=IDENTIFIER_DOES_NOT_MATCH, query=text)  # fmt: skip
        yield failure(IDENTIFIER_DOES_NOT_MATCH, exc.message), None
        return
    audit(gateway, event, caller, action="search", method="C-FIND", status=SUCCESS,
          datasets=datasets, query=text)  # fmt: skip
    yield SUCCESS, None


def describe(identifier: Dataset | None) -> str:
    """The identifier as ``Keyword=value&...`` for the audit's query entity."""
    if identifier is None:
        return ""
    parts = []
    for elem in identifier:
        if elem.VR != "SQ" and not elem.tag.is_private:
            parts.append(f"{elem.keyword or elem.tag}={_text(elem)}")
    return "&".join(parts)[:2000]


def failure(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status

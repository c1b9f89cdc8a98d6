"""FHIR R4 writes for stored resources: create, update, delete, conditional create, batch/transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from server.core.fhir.bundle import response_entry
from server.core.fhir.outcome import operation_outcome
from server.core.fhir.params import WRITABLE
from server.core.fhir.search import SearchRequest, parse_search
from server.errors import (
    BadRequest,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    Unprocessable,
    status_for,
)
from server.index.fhir_store import FhirStore, Writer
from server.security.enforce import require_admin
from server.security.model import Principal
from server.services.fhir import CONFORMANCE_TYPES, FhirReadService

# The command line acts as the operator: full rights, like an administrator's token.
ADMIN = Principal(anonymous=False, admin=True, unrestricted=True)


@dataclass
class WriteResult:
    resource: dict[str, Any] | None
    status: int  # 200 updated / found, 201 created, 204 deleted


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object with a resourceType (400 otherwise)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise BadRequest("the body is not a FHIR resource (no resourceType)")
    return data


def parse_resource(body: bytes, expected: str | None = None) -> dict[str, Any]:
    """A request body as a FHIR R4 resource: 400 if not JSON or the wrong type, 422 if invalid."""
    data = parse_json_object(body)
    if expected and data["resourceType"] != expected:
        raise BadRequest(f"resourceType {data['resourceType']} does not match the URL's {expected}")
    check_model(data)
    return data


def check_model(data: dict[str, Any]) -> None:
    """Validate against the FHIR R4 model (fhir.resources R4B, identical for these types)."""
    try:
        model = get_fhir_model_class(data["resourceType"])
    except KeyError as exc:
        raise BadRequest(f"unknown resourceType {data['resourceType']!r}") from exc
    try:
        model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise Unprocessable(f"invalid {data['resourceType']}: {where}: {first.get('msg')}") from exc
    check_codes(data)


# FHIR R4 required bindings the model classes do not enforce (status codes).
REQUIRED_CODES = {
    ("ResearchStudy", "status"): {"active", "administratively-completed", "approved", "closed-to-accrual",
                                  "closed-to-accrual-and-intervention", "completed", "disapproved",
                                  "in-review", "temporarily-closed-to-accrual",
                                  "temporarily-closed-to-accrual-and-intervention", "withdrawn"},
    ("ResearchSubject", "status"): {"candidate", "eligible", "follow-up", "ineligible", "not-registered",
                                    "off-study", "on-study", "on-study-intervention", "on-study-observation",
                                    "pending-on-study", "potential-candidate", "screening", "withdrawn"},
    ("Group", "type"): {"person", "animal", "practitioner", "device", "medication", "substance"},
}  # fmt: skip


def check_codes(data: dict[str, Any]) -> None:
    for (rtype, element), allowed in REQUIRED_CODES.items():
        value = data.get(element)
        if data.get("resourceType") == rtype and value is not None and value not in allowed:
            raise Unprocessable(f"{rtype}.{element} {value!r} is not in its required value set")


def writable(rtype: str) -> None:
    if rtype in WRITABLE:
        return
    if rtype in ("ImagingStudy", "Patient", "Endpoint", *CONFORMANCE_TYPES):
        raise MethodNotAllowed(
            f"{rtype} is read-only here (derived from the DICOM data or published)"
        )
    raise NotFound(f"resource type {rtype} is not supported")


def etag_version(if_match: str | None) -> int | None:
    """``W/"3"`` or ``"3"`` → 3 (FHIR R4 3.1.0.4.3)."""
    if not if_match:
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise PreconditionFailed(f"If-Match {if_match!r} is not a version ETag")
    return int(text)


class FhirWriteService:
    def __init__(self, store: FhirStore, reader: FhirReadService) -> None:
        self.store = store
        self.reader = reader
        # Called after every write (agreements and public datasets are cached elsewhere).
        self.on_change: Callable[[str], object] = lambda rtype: None
        # Called with every resource about to be stored, inside the write's transaction:
        # answers what to store (a dataset's de-identification policy is settled here).
        self.prepare: Callable[[Writer, dict[str, Any]], dict[str, Any]] = lambda w, r: r

    def create(
        self,
        rtype: str,
        body: bytes,
        if_none_exist: str | None = None,
        principal: Principal = ADMIN,
    ) -> WriteResult:
        """FHIR R4 3.1.0.8 create; with If-None-Exist a conditional create (3.1.0.8.1)."""
        require_admin(principal)
        writable(rtype)
        resource = parse_resource(body, rtype)
        result = self.store.transaction(lambda w: self._create(w, resource, if_none_exist))
        self.on_change(rtype)
        return result

    def _create(
        self, w: Writer, resource: dict[str, Any], if_none_exist: str | None
    ) -> WriteResult:
        if if_none_exist:
            found = self._conditional_matches(resource["resourceType"], if_none_exist)
            if len(found) > 1:
                raise PreconditionFailed(f"If-None-Exist matches {len(found)} resources")
            if found:
                return WriteResult(found[0], 200)
        stored, _ = w.put(self.prepare(w, {**resource, "id": str(uuid.uuid4())}))
        return WriteResult(stored, 201)

    def _conditional_matches(self, rtype: str, query: str) -> list[dict[str, Any]]:
        pairs = parse_qsl(query.split("?", 1)[-1], keep_blank_values=True)
        req = parse_search(rtype, pairs, strict=True)
        return self.store.search(
            SearchRequest(**{**req.__dict__, "count": 2, "total": "none"})
        ).resources

    def update(
        self,
        rtype: str,
        rid: str,
        body: bytes,
        if_match: str | None = None,
        principal: Principal = ADMIN,
    ) -> WriteResult:
        """FHIR R4 3.1.0.4 update (creates when the id is new: update-as-create)."""
        require_admin(principal)
        writable(rtype)
        resource = parse_resource(body, rtype)
        if resource.get("id") != rid:
            raise BadRequest(
                f"the resource id {resource.get('id')!r} does not match the URL's {rid!r}"
            )
        version = etag_version(if_match)
        stored, created = self.store.transaction(
            lambda w: w.put(self.prepare(w, resource), if_match=version)
        )
        self.on_change(rtype)
        return WriteResult(stored, 201 if created else 200)

    def delete(self, rtype: str, rid: str, principal: Principal = ADMIN) -> WriteResult:
        """FHIR R4 3.1.0.7 delete (versions stay in history)."""
        require_admin(principal)
        writable(rtype)
        resource, deleted = self.store.read(rtype, rid)
        if resource is None and not deleted:
            raise NotFound(f"{rtype}/{rid} is not known")
        self.store.delete(rtype, rid)
        self.on_change(rtype)
        return WriteResult(None, 204)

    def bundle(
        self, body: bytes, base: str, dicomweb_root: str, principal: Principal = ADMIN
    ) -> dict[str, Any]:
        """FHIR R4 3.1.0.12 batch / transaction (administrators: they write datasets)."""
        require_admin(principal)
        data = parse_json_object(body)
        if data["resourceType"] != "Bundle":
            raise BadRequest("POST to the base needs a Bundle")
        # Entries are checked one by one (a batch answers per entry); the Bundle itself here.
        check_model(
            {
                **data,
                "entry": [
                    {k: v for k, v in e.items() if k != "resource"} for e in data.get("entry", [])
                ],
            }
        )
        kind = data.get("type")
        if kind not in ("batch", "transaction"):
            raise BadRequest("POST to the base accepts a Bundle of type batch or transaction")
        entries = data.get("entry", [])
        if kind == "transaction":
            done = self.store.transaction(lambda w: self._transaction(w, entries, base))
            self.on_change("Bundle")
            return done
        response = {"resourceType": "Bundle", "type": "batch-response",
                "entry": [self._batch_entry(e, base, dicomweb_root) for e in entries]}  # fmt: skip
        self.on_change("Bundle")
        return response

    def _transaction(self, w: Writer, entries: list[dict[str, Any]], base: str) -> dict[str, Any]:
        ids = {e["fullUrl"]: f"{e['resource']['resourceType']}/{uuid.uuid4()}"
               for e in entries if e.get("request", {}).get("method") == "POST" and str(e.get("fullUrl", "")).startswith("urn:uuid:")}  # fmt: skip
        out = []
        for n, entry in enumerate(entries):
            try:
                out.append(
                    self._apply(w, _resolve(entry, ids), ids.get(entry.get("fullUrl", "")), base)
                )
            except GatewayError as exc:
                raise type(exc)(f"transaction entry {n}: {exc.message}") from exc
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": out}

    def _apply(
        self, w: Writer, entry: dict[str, Any], new_ref: str | None, base: str
    ) -> dict[str, Any]:
        request = entry.get("request") or {}
        method, url = request.get("method"), str(request.get("url", "")).strip("/")
        rtype, _, rid = url.partition("?")[0].partition("/")
        writable(rtype)
        if method == "DELETE":
            w.delete(rtype, rid)
            return {"response": {"status": "204 No Content"}}
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != rtype:
            raise BadRequest(f"{method} {url} needs a {rtype} resource")
        check_model(resource)
        if method == "POST":
            if request.get("ifNoneExist"):
                found = self._conditional_matches(rtype, request["ifNoneExist"])
                if found:
                    return response_entry(base, found[0], "200 OK")
            new_id = new_ref.split("/")[1] if new_ref else str(uuid.uuid4())
            stored, _ = w.put(self.prepare(w, {**resource, "id": new_id}))
            return response_entry(base, stored, "201 Created")
        if method == "PUT":
            if resource.get("id") != rid:
                raise BadRequest(f"PUT {url}: the resource id does not match")
            version = etag_version(request.get("ifMatch"))
            stored, created = w.put(self.prepare(w, resource), if_match=version)
            return response_entry(base, stored, "201 Created" if created else "200 OK")
        raise BadRequest(f"transaction entries may POST, PUT or DELETE, not {method}")

    def _batch_entry(self, entry: dict[str, Any], base: str, root: str) -> dict[str, Any]:
        request = entry.get("request") or {}
        try:
            if request.get("method") == "GET":
                url = str(request.get("url", "")).strip("/")
                rtype, _, rid = url.partition("/")
                return response_entry(base, self.reader.read(rtype, rid, root, ADMIN), "200 OK")
            return self.store.transaction(lambda w: self._apply(w, entry, None, base))
        except GatewayError as exc:
            status = status_for(exc)
            return {
                "response": {
                    "status": str(status),
                    "outcome": operation_outcome([("error", "processing", exc.message)]),
                }
            }


def _resolve(entry: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """Replace ``urn:uuid:`` references to entries of the same transaction by their new ids."""
    if not ids:
        return entry
    text = orjson.dumps(entry).decode()
    for placeholder, ref in ids.items():
        text = text.replace(f'"reference":"{placeholder}"', f'"reference":"{ref}"')
    return dict(orjson.loads(text))

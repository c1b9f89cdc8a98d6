"""Every kind of resource and Bundle the gateway serves passes the HL7 FHIR validator.

A gateway with authorisation on, datasets (one part of another), studies, a cohort,
research subjects, an agreement and an audit trail; then reads, searches with
``_include``/``_revinclude``/``_summary``/``_elements``, paging, history, vread,
batch and transaction answers, conformance resources, ``$validate`` outcomes and
error answers are all collected and validated offline (tests/fhir/validator): no
error-level issue is allowed in any of them.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from server.security.audit_event import ACTIONS
from tests.fhir.validator import ROOT, HL7Validator, hl7_validator
from tests.live import LiveServer
from tests.security.conftest import add_client, auth_env, bearer, cli_ok, store_study, token

FHIR_JSON = "application/fhir+json"
PROFILE = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition/dataset-researchstudy"
TYPES = ("ImagingStudy", "Patient", "Endpoint", "ResearchStudy", "ResearchSubject", "Group",
         "Contract", "AuditEvent", "StructureDefinition", "SearchParameter", "CodeSystem",
         "ValueSet", "ConceptMap")  # fmt: skip
ADMIN_TYPES = ("Group", "Contract", "AuditEvent", "")
SUMMARIES = ("true", "text", "data", "count", "false")


@dataclass
class Served:
    """The FHIR answers collected from a live gateway, by the request that produced them."""

    live: LiveServer
    admin: str
    researcher: str  # download agreements for every dataset
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def request(self, method: str, path: str, *, expect: int | None = None, **kw: Any) -> Any:
        caller = (
            self.admin if path.split("/")[0] in ADMIN_TYPES or method != "GET" else self.researcher
        )
        headers = {"Accept": FHIR_JSON, **bearer(caller), **kw.pop("headers", {})}
        if "json" in kw:
            headers["Content-Type"] = FHIR_JSON
        answer = httpx.request(
            method, f"{self.live.url}/fhir/{path}", headers=headers, timeout=60, **kw
        )
        if expect is not None:
            assert answer.status_code == expect, (method, path, answer.status_code, answer.text)
        assert answer.status_code < 500, (method, path, answer.text)
        if answer.content:
            body = answer.json()
            assert answer.headers["content-type"].startswith(FHIR_JSON), (path, answer.headers)
            key = f"{method} {path} {kw.get('params') or ''} -> {answer.status_code} #{len(self.answers)}"
            self.answers[key] = body
            return body
        return None

    def get(self, path: str, expect: int | None = 200, **params: str) -> Any:
        return self.request("GET", path, expect=expect, params=params or None)


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    live = LiveServer(tmp_path_factory.mktemp("served") / "data", extra_env=auth_env())
    cli_ok(live, "dataset", "create", "breast-a", "--title", "Breast A", "--cancer-type", "breast",
           "--access-condition", "download")  # fmt: skip
    cli_ok(live, "dataset", "create", "lung-b", "--title", "Lung B", "--cancer-type", "lung")
    pusher = add_client(live, "router", "--store", "breast-a", "--store", "lung-b")
    admin = add_client(live, "operator", "--admin")
    researcher = add_client(live, "researcher", "--organization", "org-x")
    for n, dataset in enumerate(("breast-a", "lung-b")):
        cli_ok(live, "daa", "create", f"daa-{n}", "--dataset", dataset, "--condition", "download",
               "--organization", "org-x")  # fmt: skip
    live.start()
    try:
        push = token(live, pusher)
        studies = [store_study(live, "breast-a", push), store_study(live, "breast-a", push),
                   store_study(live, "lung-b", push)]  # fmt: skip
        s = Served(live, token(live, admin), token(live, researcher))
        s.request("PUT", "ResearchStudy/breast-sub", expect=201, json={
            "resourceType": "ResearchStudy", "id": "breast-sub", "meta": {"profile": [PROFILE]},
            "title": "Breast A, part", "status": "active",
            "condition": [{"coding": [{"system": "http://snomed.info/sct", "code": "254837009"}]}],
            "partOf": [{"reference": "ResearchStudy/breast-a"}]})  # fmt: skip
        patient = studies[0].patient_ref
        s.request("POST", "ResearchSubject", expect=201, json={
            "resourceType": "ResearchSubject", "status": "on-study",
            "study": {"reference": "ResearchStudy/breast-a"},
            "individual": {"reference": f"Patient/{patient}"}})  # fmt: skip
        s.request("POST", "Group", expect=201, json={
            "resourceType": "Group", "type": "person", "actual": True,
            "member": [{"entity": {"reference": f"Patient/{patient}"}}]})  # fmt: skip
        _collect(s)
        yield s
    finally:
        live.stop()


def _collect(s: Served) -> None:
    s.get("metadata")
    for rtype in TYPES:
        found = s.get(rtype)
        # StructureDefinitions are slow to validate (snapshots): fewer variants of the same code
        for summary in SUMMARIES if rtype != "StructureDefinition" else ("true", "count"):
            s.get(rtype, _summary=summary)
        s.get(rtype, _elements="id")
        s.get(rtype, _count="1")
        for rid in _ids(found)[:3]:
            s.get(f"{rtype}/{rid}")
            if rtype in ("ResearchStudy", "ResearchSubject", "Group", "Contract"):
                s.get(f"{rtype}/{rid}/_history")
                s.get(f"{rtype}/{rid}/_history/1")
        if rtype in ("ResearchStudy", "ResearchSubject", "Group", "Contract"):
            s.get(f"{rtype}/_history")
    _searches(s)
    _writes(s)
    _errors(s)
    _bulk_export(s)


def _bulk_export(s: Served) -> None:
    """A bulk export's kick-off outcome and every resource of its NDJSON files."""
    s.request("GET", "$export", expect=400)  # no Prefer: respond-async
    s.request("GET", "$export", expect=202, headers={"Prefer": "respond-async"})
    location = httpx.get(f"{s.live.url}/fhir/$export", headers={"Prefer": "respond-async",
                         **bearer(s.researcher)}).headers["content-location"]  # fmt: skip
    for _ in range(300):
        status = httpx.get(location, headers=bearer(s.researcher), timeout=30)
        if status.status_code == 200:
            break
        time.sleep(0.1)
    for item in status.json()["output"]:
        lines = httpx.get(item["url"], headers=bearer(s.researcher), timeout=60).text
        for n, line in enumerate(lines.splitlines()):
            s.answers[f"GET $export-file/{item['type']}/{n} -> 200 #{len(s.answers)}"] = (
                orjson.loads(line)
            )


def _searches(s: Served) -> None:
    s.get("ResearchStudy", _include="ResearchStudy:partof")
    s.get("ResearchStudy", _id="breast-sub", _include="ResearchStudy:partof")
    s.get("ResearchStudy", _revinclude="ResearchSubject:study")
    s.get("ResearchStudy", _revinclude="ImagingStudy:dataset")
    s.get("ResearchStudy", **{"cancer-type": "254837009", "_elements": "title"})
    s.get("ImagingStudy", _include="ImagingStudy:patient")
    s.get("ImagingStudy", _include="ImagingStudy:endpoint")
    s.get("ImagingStudy", _include="ImagingStudy:dataset", _summary="true")
    s.get("ImagingStudy", _elements="started,series")
    s.get("ResearchSubject", _include="ResearchSubject:individual")
    s.get("ResearchSubject", _include="ResearchSubject:study")
    s.get("Group", _include="Group:member")
    s.get("AuditEvent", _count="5", outcome="4")
    for event in _ids(s.get("AuditEvent", _count="3")):
        s.get(f"AuditEvent/{event}")
    s.request("GET", "ImagingStudy", params={"bogus": "1"}, headers={"Prefer": "handling=lenient"})


def _writes(s: Served) -> None:
    subject = {"resourceType": "ResearchSubject", "status": "candidate",
               "study": {"reference": "ResearchStudy/lung-b"},
               "individual": {"reference": "Patient/unknown"}}  # fmt: skip
    s.request("POST", "", expect=200, json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:4a0a36a2-3f5e-4bb0-9e0b-8d3c9d0f0d11", "resource": subject,
         "request": {"method": "POST", "url": "ResearchSubject"}},
        {"resource": {"resourceType": "Group", "id": "cohort-t", "type": "person", "actual": True},
         "request": {"method": "PUT", "url": "Group/cohort-t"}}]})  # fmt: skip
    s.request("POST", "", expect=200, json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "ResearchStudy/breast-a"}},
        {"request": {"method": "GET", "url": "ResearchStudy/nope"}},
        {"resource": subject, "request": {"method": "POST", "url": "ResearchSubject"}}]})  # fmt: skip
    for rtype in ("ImagingStudy", "ResearchStudy"):
        for resource in s.get(rtype).get("entry", [])[:2]:
            s.request("POST", f"{rtype}/$validate", json=resource["resource"])
    s.request(
        "POST", "ResearchStudy/$validate", json={"resourceType": "ResearchStudy", "status": "nope"}
    )


def _errors(s: Served) -> None:
    s.get("ImagingStudy/1.2.3.404", expect=404)
    s.get("ResearchStudy/missing", expect=404)
    s.get("NoSuchType", expect=404)
    s.request("GET", "ImagingStudy", expect=400, params={"bogus": "1"},
              headers={"Prefer": "handling=strict"})  # fmt: skip
    s.get("ImagingStudy", expect=400, started="yesterday")
    s.request(
        "PUT",
        "ResearchStudy/bad",
        expect=400,
        content=b"{not json",
        headers={"Content-Type": FHIR_JSON},
    )
    s.request("GET", "ResearchStudy", expect=401, headers={"Authorization": "Bearer forged"})


def _resources(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield body
    for entry in body.get("entry", []):
        for inner in (entry.get("resource"), entry.get("response", {}).get("outcome")):
            if inner:
                yield from _resources(inner)


CONFORMANCE = ("StructureDefinition", "SearchParameter", "CodeSystem", "ValueSet", "ConceptMap")
_SEEN: Counter[str] = Counter()


def _kind(resource: dict[str, Any]) -> str:
    rtype = str(resource["resourceType"])
    return f"{rtype}:{resource['type']}" if rtype == "Bundle" else rtype


def _validate(served: Served, which: str) -> None:
    """Every answer in group ``which`` validates with no error; counts go to the summary."""
    validator: HL7Validator = hl7_validator()
    answers = {r: b for r, b in served.answers.items() if _group(r) == which}
    assert answers, which
    kinds: Counter[str] = Counter(_kind(r) for body in answers.values() for r in _resources(body))
    _SEEN.update(kinds)
    failures = [f"{request}: {issue}" for request, body in answers.items()
                for issue in validator.errors(body)]  # fmt: skip
    summary = (f"{which}: {len(answers)} answers, {sum(kinds.values())} resources "
               f"({dict(sorted(kinds.items()))}), {len(failures)} errors")  # fmt: skip
    print(summary)
    if report := os.environ.get("FHIR_VALIDATOR_REPORT"):  # a file to read the issues in
        with Path(report).open("a") as out:
            out.write(summary + "\n" + "".join(f"{f}\n" for f in failures))
    assert not failures, summary + "\n" + "\n".join(failures)


def _group(request: str) -> str:
    method, path = request.split(" ", 2)[:2]
    if method != "GET" or " -> 4" in request or " -> 2" not in request:
        return "writes and errors"
    return "conformance" if path.split("/")[0] in CONFORMANCE else "data"


def test_data_resources_and_searches_pass_the_hl7_validator(served: Served) -> None:
    _validate(served, "data")


def test_conformance_resources_pass_the_hl7_validator(served: Served) -> None:
    _validate(served, "conformance")


def test_writes_validate_outcomes_and_errors_pass_the_hl7_validator(served: Served) -> None:
    _validate(served, "writes and errors")


def test_every_kind_was_validated(served: Served) -> None:
    """Runs last: the three tests above saw every kind of resource and Bundle served."""
    if sum(_SEEN.values()) == 0:
        pytest.skip("run with the validation tests")
    assert {"ImagingStudy", "Patient", "Endpoint", "ResearchStudy", "ResearchSubject", "Group",
            "Contract", "AuditEvent", "OperationOutcome", "CapabilityStatement", "ConceptMap",
            "StructureDefinition", "CodeSystem", "ValueSet", "SearchParameter",
            "Bundle:transaction-response", "Bundle:batch-response", "Bundle:history",
            "Bundle:searchset"} <= set(_SEEN), _SEEN  # fmt: skip
    print(f"validated {sum(_SEEN.values())} resources: {dict(sorted(_SEEN.items()))}")


def test_the_access_action_code_system_has_every_action_the_audit_trail_writes() -> None:
    shipped = orjson.loads((ROOT / "terminology" / "CodeSystem-access-action.json").read_bytes())
    assert [c["code"] for c in shipped["concept"]] == list(ACTIONS)
    assert shipped["count"] == len(ACTIONS)

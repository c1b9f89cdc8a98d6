"""The CapabilityStatement is true: every declared search parameter changes the result, and
every declared interaction answers.

For each resource type the CapabilityStatement lists, and each searchParam it declares,
a value is derived from a fixture resource (VALUES below; a declared parameter without an
entry fails the test, so a new parameter needs one) and searched for: the resource must be
found with that value and not with a value that matches nothing. Every declared
interaction (read, vread, search-type, history, create, update, delete, $validate,
batch, transaction) is then exercised and must answer with success.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from tests.live import LiveServer
from tests.security.conftest import (
    AS_SENT,
    add_client,
    auth_env,
    cli_ok,
    make_study,
    stow_into,
    token,
)

FHIR_JSON = "application/fhir+json"
SNOMED = "http://snomed.info/sct"
Getter = Callable[[dict[str, Any]], str | None]


def _first(*path: str | int) -> Getter:
    def get(resource: dict[str, Any]) -> str | None:
        node: Any = resource
        for step in path:
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                return None
        return None if node is None else str(node)

    return get


def _ext_ref(name: str) -> Getter:
    def get(resource: dict[str, Any]) -> str | None:
        for ext in resource.get("extension", []):
            if ext["url"].endswith(f"/{name}"):
                return str(ext.get("valueReference", {}).get("reference") or ext.get("valueCode"))
        return None

    return get


def _day(*path: str | int) -> Getter:
    inner = _first(*path)
    return lambda r: v[:10] if (v := inner(r)) else None


def _audit_agent(resource: dict[str, Any]) -> str | None:
    return str(resource["agent"][0]["who"].get("identifier", {}).get("value") or "") or None


def _audit_entity(resource: dict[str, Any]) -> str | None:
    return next((e["name"] for e in resource.get("entity", []) if e.get("name")), None)


def _audit_action(resource: dict[str, Any]) -> str | None:
    return next((c["code"] for c in resource["subtype"] if c["system"].endswith("access-action")), None)  # fmt: skip


COMMON: dict[str, Getter] = {"_id": _first("id"), "_lastUpdated": _day("meta", "lastUpdated")}
# (resource type, parameter) -> the value of that parameter in a resource (None: absent)
VALUES: dict[str, dict[str, Getter]] = {
    "ImagingStudy": {
        "identifier": _first("identifier", 0, "value"), "patient": _first("subject", "reference"),
        "subject": _first("subject", "reference"), "started": _day("started"),
        "modality": _first("series", 0, "modality", "code"),
        "bodysite": _first("series", 0, "bodySite", "code"), "series": _first("series", 0, "uid"),
        "instance": _first("series", 0, "instance", 0, "uid"),
        "dicom-class": _first("series", 0, "instance", 0, "sopClass", "code"),
        "endpoint": _first("endpoint", 0, "reference"), "status": _first("status"),
        "dataset": _ext_ref("imagingstudy-dataset"),
    },
    "Patient": {"identifier": _first("identifier", 0, "value"), "gender": _first("gender"),
                "birthdate": _first("birthDate")},
    "Endpoint": {"connection-type": _first("connectionType", "code"), "status": _first("status")},
    "ResearchStudy": {
        "identifier": _first("identifier", 0, "value"), "title": _first("title"),
        "status": _first("status"), "category": _first("category", 0, "coding", 0, "code"),
        "focus": _first("focus", 0, "coding", 0, "code"),
        "keyword": _first("keyword", 0, "coding", 0, "code"), "date": lambda r: f"ge{r['period']['start']}" if "period" in r else None,
        "partof": _first("partOf", 0, "reference"), "sponsor": _first("sponsor", "reference"),
        "site": _first("site", 0, "reference"),
        "cancer-type": _first("condition", 0, "coding", 0, "code"),
        "modality": lambda r: next((e["valueCoding"]["code"] for e in r.get("extension", [])
                                    if e["url"].endswith("/dataset-modality")), None),
        "access-condition": _ext_ref("dataset-access-condition"),
    },
    "Group": {"identifier": _first("identifier", 0, "value"),
              "member": _first("member", 0, "entity", "reference"),
              "characteristic": _first("characteristic", 0, "code", "coding", 0, "code"),
              "type": _first("type")},
    "AuditEvent": {"date": _day("recorded"), "agent": _audit_agent, "entity": _audit_entity,
                   "outcome": _first("outcome"), "subtype": _audit_action},
    "Contract": {"identifier": _first("identifier", 0, "value"), "status": _first("status"),
                 "subject": _first("subject", 0, "reference"),
                 "party": _first("term", 0, "offer", "party", 0, "reference", 0, "reference")},
    "ResearchSubject": {
        "identifier": _first("identifier", 0, "value"), "study": _first("study", "reference"),
        "individual": _first("individual", "reference"),
        "patient": _first("individual", "reference"), "status": _first("status"),
    },
}  # fmt: skip
NO_MATCH = {"token": "no-such-code", "string": "zzzz-no-such", "date": "1900-01-01",
            "reference": "no-such-id", "uri": "urn:no-such"}  # fmt: skip


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("capability") / "data", extra_env=auth_env())
    # the test reads studies by the UIDs it sent: stored as sent
    cli_ok(server, "dataset", "create", "breast-a", "--title", "Breast A", "--cancer-type",
           "breast", "--access-condition", "download", *AS_SENT)  # fmt: skip
    cli_ok(server, "dataset", "create", "lung-b", "--title", "Lung B", "--cancer-type", "lung",
           *AS_SENT)  # fmt: skip
    for n, dataset in enumerate(("breast-a", "lung-b")):
        cli_ok(server, "daa", "create", f"daa-{n}", "--dataset", dataset,
               "--condition", "download", "--organization", "org-x")  # fmt: skip
    # an administrator with download agreements: sees every resource type and every dataset
    admin = add_client(server, "operator", "--admin", "--organization", "org-x")
    server.start()
    try:
        _TOKEN.append(token(server, admin))
        studies = []
        for dataset in ("breast-a", "lung-b"):
            study, instances = make_study(dataset, server)
            assert stow_into(server, dataset, _TOKEN[0], instances).status_code == 200
            studies.append(study)
        with _client(server) as client:  # audited reads of a study (entity) by a client (agent)
            assert client.get("ImagingStudy", params={"_id": studies[0].study_uid}).is_success
            metadata = f"{server.url}/dicom-web/studies/{studies[0].study_uid}/metadata"
            auth = {"Authorization": client.headers["Authorization"]}
            assert httpx.get(
                metadata, headers={**auth, "Accept": "application/dicom+json"}
            ).is_success
        _stored(server, studies[0].patient_ref)
        yield server
    finally:
        server.stop()


_TOKEN: list[str] = []


def _client(live: LiveServer) -> httpx.Client:
    headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {_TOKEN[0]}"}
    return httpx.Client(base_url=f"{live.url}/fhir", headers=headers, timeout=60)


def _stored(live: LiveServer, patient: str) -> None:
    """Stored resources with a value for every parameter of their type."""
    coding = lambda code: [{"coding": [{"system": "urn:test", "code": code}]}]  # noqa: E731
    with _client(live) as client:
        for resource in (
            {"resourceType": "ResearchStudy", "id": "rich", "title": "Rich study", "status": "active",
             "identifier": [{"system": "urn:test", "value": "rich-1"}], "category": coding("cat"),
             "focus": coding("foc"), "keyword": coding("kw"), "period": {"start": "2020-03-04"},
             "partOf": [{"reference": "ResearchStudy/breast-a"}],
             "sponsor": {"reference": "Organization/sponsor-1"},
             "site": [{"reference": "Location/site-1"}],
             "condition": [{"coding": [{"system": SNOMED, "code": "254837009"}]}]},
            {"resourceType": "Group", "id": "cohort-1", "type": "person", "actual": True,
             "identifier": [{"system": "urn:test", "value": "cohort-1"}],
             "characteristic": [{"code": coding("age")[0], "valueBoolean": True, "exclude": False}],
             "member": [{"entity": {"reference": f"Patient/{patient}"}}]},
            {"resourceType": "ResearchSubject", "id": "subject-1", "status": "on-study",
             "identifier": [{"system": "urn:test", "value": "subject-1"}],
             "study": {"reference": "ResearchStudy/breast-a"},
             "individual": {"reference": f"Patient/{patient}"}},
        ):  # fmt: skip
            answer = client.put(f"{resource['resourceType']}/{resource['id']}", json=resource,
                                headers={"Content-Type": FHIR_JSON})  # fmt: skip
            assert answer.status_code in (200, 201), answer.text


def _declared(live: LiveServer) -> list[dict[str, Any]]:
    with _client(live) as client:
        statement = client.get("metadata").json()
    return list(statement["rest"][0]["resource"])


def _ids(client: httpx.Client, rtype: str, params: dict[str, str]) -> set[str]:
    answer = client.get(rtype, params={**params, "_count": "1000"},
                        headers={"Prefer": "handling=strict"})  # fmt: skip
    if answer.status_code != 200:
        return {f"HTTP {answer.status_code}: {answer.text[:150]}"}
    return {e["resource"]["id"] for e in answer.json().get("entry", [])
            if e.get("search", {}).get("mode") == "match"}  # fmt: skip


def _probe(client: httpx.Client, rtype: str, get: Getter) -> tuple[dict[str, Any], str] | None:
    """A resource of ``rtype`` with a value for the parameter, and that value."""
    answer = client.get(rtype, params={"_count": "1000"})
    for entry in answer.json().get("entry", []):
        value = get(entry["resource"])
        if value:
            return entry["resource"], value
    return None


def test_every_declared_search_parameter_changes_the_result(live: LiveServer) -> None:
    problems, walked = [], 0
    with _client(live) as client:
        client.get("AuditEvent", params={"_count": "1"})  # some audited traffic exists
        for declared in _declared(live):
            rtype = declared["type"]
            for param in declared.get("searchParam", []):
                name = param["name"]
                if name == "_sort":
                    continue
                get = {**COMMON, **VALUES.get(rtype, {})}.get(name)
                if get is None:
                    problems.append(f"{rtype}?{name}: declared, but the test has no value for it")
                    continue
                found = _probe(client, rtype, get)
                if found is None:
                    problems.append(f"{rtype}?{name}: no fixture resource has a value")
                    continue
                resource, value = found
                with_value = _ids(client, rtype, {name: value})
                without = _ids(client, rtype, {name: NO_MATCH[param["type"]]})
                walked += 1
                if resource["id"] not in with_value or resource["id"] in without:
                    problems.append(f"{rtype}?{name}={value}: found {sorted(with_value)[:5]}, "
                                    f"with no match {sorted(without)[:5]}")  # fmt: skip
    print(f"walked {walked} declared search parameters")
    assert walked > 50
    assert not problems, "\n".join(problems)


def _shift(day: str, steps: int) -> str:
    """The value one unit of its own precision (year, month or day) away."""
    if len(day) == 4:
        return str(int(day) + steps)
    if len(day) == 7:
        months = int(day[:4]) * 12 + int(day[5:]) - 1 + steps
        return f"{months // 12:04d}-{months % 12 + 1:02d}"
    return (date.fromisoformat(day) + timedelta(days=steps)).isoformat()


def test_every_declared_date_parameter_honours_every_prefix(live: LiveServer) -> None:
    """FHIR R4 3.1.1.4 prefixes on a day value, for every date parameter of every type and
    on every index backend: the resource whose value falls on day D is found by eqD, geD,
    leD, gt(D-1), lt(D+1), sa(D-1), eb(D+1) and not by neD, gt(D+1), lt(D-1)."""
    problems, walked = [], 0
    with _client(live) as client:
        client.get("AuditEvent", params={"_count": "1"})
        for declared in _declared(live):
            rtype = declared["type"]
            for param in declared.get("searchParam", []):
                name = param["name"]
                get = {**COMMON, **VALUES.get(rtype, {})}.get(name)
                if param["type"] != "date" or get is None:
                    continue
                found = _probe(client, rtype, get)
                if found is None:
                    continue
                resource, day = found
                if not day[:1].isdigit():  # a period (ResearchStudy.date): not one day
                    continue
                walked += 1
                expect = {f"eq{day}": True, f"ge{day}": True, f"le{day}": True,
                          f"gt{_shift(day, -1)}": True, f"lt{_shift(day, 1)}": True,
                          f"sa{_shift(day, -1)}": True, f"eb{_shift(day, 1)}": True,
                          f"ne{day}": False, f"gt{_shift(day, 1)}": False,
                          f"lt{_shift(day, -1)}": False}  # fmt: skip
                for value, hit in expect.items():
                    got = resource["id"] in _ids(client, rtype, {name: value})
                    if got != hit:
                        problems.append(f"{rtype}?{name}={value}: found={got}, expected {hit}")
    assert walked >= 4
    assert not problems, "\n".join(problems)


def test_dataset_create_cancer_types_are_found_by_every_form(live: LiveServer) -> None:
    """What ``dataset create --cancer-type`` stores is found by the short code and SNOMED CT."""
    with _client(live) as client:
        for form in ("breast", "254837009", f"{SNOMED}|254837009"):
            assert "breast-a" in _ids(client, "ResearchStudy", {"cancer-type": form}), form
            assert "lung-b" not in _ids(client, "ResearchStudy", {"cancer-type": form}), form
        assert _ids(client, "ResearchStudy", {"access-condition": "download"}) >= {"breast-a"}


def _interaction(client: httpx.Client, rtype: str, code: str, rid: str) -> httpx.Response:
    if code == "read":
        return client.get(f"{rtype}/{rid}")
    if code == "vread":
        return client.get(f"{rtype}/{rid}/_history/1")
    if code == "search-type":
        return client.get(rtype)
    if code == "history-instance":
        return client.get(f"{rtype}/{rid}/_history")
    if code == "history-type":
        return client.get(f"{rtype}/_history")
    body = client.get(f"{rtype}/{rid}").json()
    body.pop("meta", None)
    headers = {"Content-Type": FHIR_JSON}
    if code == "create":
        body.pop("id")
        return client.post(rtype, json=body, headers=headers)
    if code == "update":
        return client.put(f"{rtype}/{rid}", json=body, headers=headers)
    assert code == "delete", code
    created = client.post(rtype, json={k: v for k, v in body.items() if k != "id"}, headers=headers)
    return client.delete(f"{rtype}/{created.json()['id']}")


def test_every_declared_interaction_answers(live: LiveServer) -> None:
    problems, done = [], 0
    with _client(live) as client:
        client.get("ImagingStudy")  # some audited traffic exists
        for declared in _declared(live):
            rtype = declared["type"]
            found = client.get(rtype, params={"_count": "1"}).json().get("entry", [])
            if rtype == "ResearchStudy":
                rid = "rich"
            elif found:
                rid = found[0]["resource"]["id"]
            else:
                problems.append(f"{rtype}: nothing to exercise")
                continue
            for interaction in declared["interaction"]:
                answer = _interaction(client, rtype, interaction["code"], rid)
                done += 1
                if not answer.is_success:
                    problems.append(f"{rtype} {interaction['code']}: {answer.status_code} {answer.text[:200]}")  # fmt: skip
            for operation in declared.get("operation", []):
                done += 1
                if operation["name"] == "export":  # Bulk Data kick-off: GET, asynchronous
                    target = "Group/breast-a/$export" if rtype == "Group" else f"{rtype}/$export"
                    answer = client.get(target, headers={"Prefer": "respond-async"})
                    if answer.status_code == 202:
                        client.delete(answer.headers["content-location"])
                    else:
                        problems.append(f"{rtype} $export: {answer.status_code} {answer.text[:200]}")  # fmt: skip
                    continue
                body = client.get(f"{rtype}/{rid}").json()
                answer = client.post(f"{rtype}/${operation['name']}", json=body,
                                     headers={"Content-Type": FHIR_JSON})  # fmt: skip
                if answer.status_code != 200:
                    problems.append(f"{rtype} ${operation['name']}: {answer.status_code}")
        for kind in ("batch", "transaction"):
            answer = client.post("", json={"resourceType": "Bundle", "type": kind, "entry": []},
                                 headers={"Content-Type": FHIR_JSON})  # fmt: skip
            done += 1
            if answer.status_code != 200:
                problems.append(f"{kind}: {answer.status_code} {answer.text[:200]}")
    print(f"exercised {done} declared interactions")
    assert not problems, "\n".join(problems)

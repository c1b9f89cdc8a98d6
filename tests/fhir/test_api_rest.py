"""FHIR REST interactions over raw HTTP: versions, history, conditional create, bundles, errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.group import Group
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.researchstudy import ResearchStudy
from fhir.resources.R4B.researchsubject import ResearchSubject
from fhir.resources.R4B.searchparameter import SearchParameter
from fhir.resources.R4B.structuredefinition import StructureDefinition
from fhir.resources.R4B.valueset import ValueSet

from tests.fhir.conftest import (
    BREAST_CANCER,
    FHIR_JSON,
    LUNG_CANCER,
    SNOMED,
    bundle,
    error_issues,
    fhir_client,
    match_ids,
    matches,
    outcome,
    parse,
    research_study,
    running,
)
from tests.helpers import cohort, part10, stow
from tests.live import LiveServer


class Gateway:
    def __init__(self, live: LiveServer, instances: list[pydicom.Dataset]) -> None:
        self.live = live
        self.instances = instances

    @property
    def study_uid(self) -> str:
        return str(self.instances[0].StudyInstanceUID)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running(tmp_path_factory.mktemp("fhir-rest") / "data") as live:
        instances = cohort(patients=1, series_per_study=2)
        assert stow(live, [part10(ds) for ds in instances]).status_code == 200
        yield Gateway(live, instances)


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with fhir_client(gateway.live) as c:
        yield c


def _unique_title() -> str:
    return f"Dataset {uuid.uuid4().hex}"


def _create(client: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post(body["resourceType"], json=body, headers=headers)


def _count(client: httpx.Client, rtype: str, **params: str) -> int:
    found = bundle(client.get(rtype, params={**params, "_summary": "count"}))
    assert found.total is not None
    return found.total


# --- create / read / update / vread / history / delete ---------------------------------------


def test_resource_lifecycle_keeps_every_version(client: httpx.Client) -> None:
    title = _unique_title()
    created = _create(client, research_study(title))
    study = parse(created, ResearchStudy, 201)
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["location"].endswith(f"/fhir/ResearchStudy/{study.id}/_history/1")
    assert study.meta.versionId == "1"

    read = parse(client.get(f"ResearchStudy/{study.id}"), ResearchStudy)
    assert read.title == title
    assert client.get(f"ResearchStudy/{study.id}").headers["etag"] == 'W/"1"'

    changed = {**research_study(title + " v2"), "id": study.id}
    updated = client.put(f"ResearchStudy/{study.id}", json=changed, headers={"If-Match": 'W/"1"'})
    assert parse(updated, ResearchStudy).meta.versionId == "2"
    assert updated.headers["etag"] == 'W/"2"'

    v1 = parse(client.get(f"ResearchStudy/{study.id}/_history/1"), ResearchStudy)
    v2 = parse(client.get(f"ResearchStudy/{study.id}/_history/2"), ResearchStudy)
    assert (v1.title, v1.meta.versionId) == (title, "1")
    assert (v2.title, v2.meta.versionId) == (title + " v2", "2")

    history = bundle(client.get(f"ResearchStudy/{study.id}/_history"))
    assert history.type == "history"
    assert [e.resource.meta.versionId for e in history.entry] == ["2", "1"]

    stale = client.put(
        f"ResearchStudy/{study.id}",
        json={**changed, "title": "lost update"},
        headers={"If-Match": 'W/"1"'},
    )
    outcome(stale, 412)
    current = client.get(f"ResearchStudy/{study.id}")
    assert parse(current, ResearchStudy).title == title + " v2"
    assert current.headers["etag"] == 'W/"2"'

    deleted = client.delete(f"ResearchStudy/{study.id}")
    assert deleted.status_code == 204
    outcome(client.get(f"ResearchStudy/{study.id}"), 410)
    history = bundle(client.get(f"ResearchStudy/{study.id}/_history"))
    assert len(history.entry) == 3
    assert [e.request.method for e in history.entry] == ["DELETE", "PUT", "POST"]
    assert history.entry[0].resource is None
    assert _count(client, "ResearchStudy", _id=str(study.id)) == 0


def test_type_history_lists_creations_and_updates(client: httpx.Client) -> None:
    a = parse(_create(client, research_study(_unique_title())), ResearchStudy, 201)
    b = parse(_create(client, research_study(_unique_title())), ResearchStudy, 201)
    client.put(f"ResearchStudy/{a.id}", json={**research_study("renamed"), "id": a.id})
    history = bundle(client.get("ResearchStudy/_history", params={"_count": 1000}))
    versions = {(e.resource.id, e.resource.meta.versionId) for e in history.entry if e.resource}
    assert {(a.id, "1"), (a.id, "2"), (b.id, "1")} <= versions


def test_update_of_a_new_id_creates_it(client: httpx.Client) -> None:
    rid = f"ds-{uuid.uuid4().hex[:12]}"
    response = client.put(f"ResearchStudy/{rid}", json={**research_study("new"), "id": rid})
    assert parse(response, ResearchStudy, 201).id == rid


def test_vread_of_an_unknown_version_is_404(client: httpx.Client) -> None:
    study = parse(_create(client, research_study(_unique_title())), ResearchStudy, 201)
    outcome(client.get(f"ResearchStudy/{study.id}/_history/7"), 404)


def test_delete_of_an_unknown_resource_is_404(client: httpx.Client) -> None:
    outcome(client.delete("ResearchStudy/never-created"), 404)


# --- conditional create ------------------------------------------------------------------------


def test_conditional_create_creates_returns_or_refuses(client: httpx.Client) -> None:
    title = _unique_title()
    condition = f"title:exact={title}"
    first = _create(client, research_study(title), **{"If-None-Exist": condition})
    created = parse(first, ResearchStudy, 201)

    again = _create(client, research_study(title), **{"If-None-Exist": condition})
    assert parse(again, ResearchStudy, 200).id == created.id
    assert _count(client, "ResearchStudy", **{"title:exact": title}) == 1

    parse(_create(client, research_study(title)), ResearchStudy, 201)  # unconditional twin
    refused = _create(client, research_study(title), **{"If-None-Exist": condition})
    outcome(refused, 412)
    assert _count(client, "ResearchStudy", **{"title:exact": title}) == 2


# --- transaction / batch ----------------------------------------------------------------------


def _entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    if full_url:
        out["fullUrl"] = full_url
    return out


def _cohort_transaction(title: str, bad: bool = False) -> dict[str, Any]:
    study_urn, group_urn = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    subject = {
        "resourceType": "ResearchSubject",
        "status": 123 if bad else "on-study",
        "study": {"reference": study_urn},
        "individual": {"reference": "Patient/p-1"},
    }
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "name": title,
        "member": [{"entity": {"reference": "Patient/p-1"}}],
        "characteristic": [
            {
                "code": {"text": "dataset"},
                "valueReference": {"reference": study_urn},
                "exclude": False,
            }
        ],
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            _entry(research_study(title), study_urn),
            _entry(group, group_urn),
            _entry(subject),
        ],
    }


def test_transaction_resolves_placeholder_references(client: httpx.Client) -> None:
    title = _unique_title()
    response = client.post("", json=_cohort_transaction(title))
    result = bundle(response)
    assert result.type == "transaction-response"
    statuses = [e.response.status for e in result.entry]
    assert all(s.startswith("201") for s in statuses), statuses
    locations = [e.response.location for e in result.entry]
    study_id = locations[0].split("/")[1]
    group_id = locations[1].split("/")[1]
    subject_id = locations[2].split("/")[1]

    study = parse(client.get(f"ResearchStudy/{study_id}"), ResearchStudy)
    assert study.title == title
    group = parse(client.get(f"Group/{group_id}"), Group)
    assert group.characteristic[0].valueReference.reference == f"ResearchStudy/{study_id}"
    subject = parse(client.get(f"ResearchSubject/{subject_id}"), ResearchSubject)
    assert subject.study.reference == f"ResearchStudy/{study_id}"
    found = bundle(client.get("ResearchSubject", params={"study": f"ResearchStudy/{study_id}"}))
    assert match_ids(found) == [subject_id]


STORED_TYPES = ("ResearchStudy", "Group", "ResearchSubject")


def _counts(client: httpx.Client) -> dict[str, int]:
    return {rtype: _count(client, rtype) for rtype in STORED_TYPES}


def test_transaction_with_an_invalid_entry_stores_nothing(client: httpx.Client) -> None:
    title = _unique_title()
    before = _counts(client)
    response = client.post("", json=_cohort_transaction(title, bad=True))
    assert response.status_code in (400, 422)
    outcome(response, response.status_code)
    assert _count(client, "ResearchStudy", **{"title:exact": title}) == 0
    assert _counts(client) == before


def test_transaction_with_a_forbidden_entry_stores_nothing(client: httpx.Client) -> None:
    title = _unique_title()
    before = _counts(client)
    tx = _cohort_transaction(title)
    tx["entry"].append(
        {
            "resource": {"resourceType": "Patient", "gender": "male"},
            "request": {"method": "POST", "url": "Patient"},
        }
    )
    outcome(client.post("", json=tx), 405)
    assert _count(client, "ResearchStudy", **{"title:exact": title}) == 0
    assert _counts(client) == before


def _batch(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "batch", "entry": list(entries)}


def test_batch_reports_each_entry_status(client: httpx.Client) -> None:
    title = _unique_title()
    mismatched = {**research_study("mismatch"), "id": "one"}
    result = bundle(
        client.post(
            "",
            json=_batch(
                _entry(research_study(title)),
                {
                    "resource": {"resourceType": "Patient"},
                    "request": {"method": "POST", "url": "Patient"},
                },
                {"resource": mismatched, "request": {"method": "PUT", "url": "ResearchStudy/two"}},
                {"request": {"method": "GET", "url": "ResearchStudy/does-not-exist"}},
            ),
        )
    )
    assert result.type == "batch-response"
    statuses = [e.response.status.split()[0] for e in result.entry]
    assert statuses == ["201", "405", "400", "404"]
    for failed in result.entry[1:]:
        assert isinstance(failed.response.outcome, OperationOutcome)
    assert _count(client, "ResearchStudy", **{"title:exact": title}) == 1
    outcome(client.get("ResearchStudy/two"), 404)


def test_batch_with_an_invalid_resource_still_stores_the_valid_entries(
    client: httpx.Client,
) -> None:
    # FHIR R4 3.1.0.12: batch entries are processed independently; one invalid resource
    # gets its own 4xx entry status instead of failing the whole batch.
    title = _unique_title()
    invalid = {**research_study("invalid"), "status": 123}
    response = client.post("", json=_batch(_entry(research_study(title)), _entry(invalid)))
    result = bundle(response)
    statuses = [e.response.status.split()[0] for e in result.entry]
    assert statuses[0] == "201"
    assert statuses[1] in ("400", "422")
    assert _count(client, "ResearchStudy", **{"title:exact": title}) == 1


# --- bad input --------------------------------------------------------------------------------


def _json_headers() -> dict[str, str]:
    return {"Content-Type": FHIR_JSON}


P = pytest.param
BAD_REQUESTS = [
    P("POST", "ResearchStudy", b'{"resourceType": "ResearchStudy", ', None, 400, id="malformed-json"),
    P("POST", "ResearchStudy", b"[1, 2]", None, 400, id="json-not-an-object"),
    P("POST", "ResearchStudy", b"", None, 400, id="empty-body"),
    P("POST", "Group", research_study("wrong type"), None, 400, id="type-differs-from-url"),
    P("POST", "ResearchStudy", {**research_study("x"), "status": 123}, None, 422, id="status-not-a-string"),
    P("POST", "ResearchStudy", {**research_study("x"), "status": "not-a-status"}, None, 422,
      id="status-outside-required-binding"),
    P("POST", "ResearchStudy", {**research_study("x"), "title": ["a"]}, None, 422, id="title-is-a-list"),
    P("PUT", "ResearchStudy/abc", {**research_study("x"), "id": "xyz"}, None, 400, id="body-id-differs"),
    P("PUT", "ResearchStudy/abc", research_study("x"), None, 400, id="body-without-id"),
    P("POST", "ImagingStudy", {"resourceType": "ImagingStudy"}, None, 405, id="create-imagingstudy"),
    P("PUT", "ImagingStudy/1.2.3", {"resourceType": "ImagingStudy", "id": "1.2.3"}, None, 405,
      id="update-imagingstudy"),
    P("DELETE", "ImagingStudy/1.2.3", None, None, 405, id="delete-imagingstudy"),
    P("POST", "Patient", {"resourceType": "Patient"}, None, 405, id="create-patient"),
    P("PUT", "Patient/p-1", {"resourceType": "Patient", "id": "p-1"}, None, 405, id="update-patient"),
    P("DELETE", "Patient/p-1", None, None, 405, id="delete-patient"),
    P("POST", "Observation", {"resourceType": "Observation"}, None, 404, id="create-unknown-type"),
    P("GET", "Observation", None, None, 404, id="search-unknown-type"),
    P("GET", "Observation/1", None, None, 404, id="read-unknown-type"),
    P("GET", "ResearchStudy?_format=xml", None, None, 406, id="format-xml"),
    P("GET", "metadata", None, {"Accept": "application/fhir+xml"}, 406, id="accept-xml-metadata"),
    P("POST", "ResearchStudy", research_study("x"), {"Accept": "application/fhir+xml"}, 406,
      id="accept-xml-create"),
    P("POST", "ResearchStudy", research_study("x"), {"Content-Type": "text/plain"}, 415,
      id="content-type-text"),
    P("POST", "ResearchStudy", research_study("x"), {"Content-Type": "application/xml"}, 415,
      id="content-type-xml"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), BAD_REQUESTS)
def test_bad_requests_get_an_operation_outcome_and_store_nothing(
    client: httpx.Client,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str] | None,
    status: int,
) -> None:
    before = _count(client, "ResearchStudy")
    content = body if isinstance(body, bytes) else None
    payload = body if isinstance(body, dict) else None
    if payload is not None:
        content = json.dumps(payload).encode()
    all_headers = {**_json_headers(), **(headers or {})} if content is not None else headers
    response = client.request(method, path, content=content, headers=all_headers)
    found = outcome(response, status)
    assert error_issues(found), found
    assert _count(client, "ResearchStudy") == before


def test_read_of_an_unknown_imaging_study_is_404(client: httpx.Client) -> None:
    found = outcome(client.get("ImagingStudy/1.2.3.999999"), 404)
    assert found.issue[0].code == "not-found"


# --- $validate --------------------------------------------------------------------------------


def _validate(client: httpx.Client, resource: dict[str, Any]) -> OperationOutcome:
    return parse(client.post("ResearchStudy/$validate", json=resource), OperationOutcome)


def test_validate_reports_a_missing_title(client: httpx.Client) -> None:
    resource = research_study("x")
    del resource["title"]
    issues = error_issues(_validate(client, resource))
    assert any("title" in (i.diagnostics or "") for i in issues)


def test_validate_reports_a_condition_outside_the_cancer_types(client: httpx.Client) -> None:
    resource = research_study("Diabetes cohort", cancer="44054006")  # diabetes mellitus type 2
    issues = error_issues(_validate(client, resource))
    assert any("44054006" in (i.diagnostics or "") for i in issues)


@pytest.mark.parametrize("cancer", [BREAST_CANCER, LUNG_CANCER])
def test_validate_accepts_a_conforming_dataset(client: httpx.Client, cancer: str) -> None:
    assert error_issues(_validate(client, research_study("Conforming", cancer))) == []


def test_validate_stores_nothing(client: httpx.Client) -> None:
    title = _unique_title()
    _validate(client, research_study(title))
    assert _count(client, "ResearchStudy", **{"title:exact": title}) == 0


# --- derived resources ------------------------------------------------------------------------


def test_imaging_study_read_equals_the_search_result(
    client: httpx.Client, gateway: Gateway
) -> None:
    uid = gateway.study_uid
    read = parse(client.get(f"ImagingStudy/{uid}"), ImagingStudy)
    found = bundle(client.get("ImagingStudy", params={"_id": uid}))
    assert match_ids(found) == [uid]
    searched = matches(found)[0]
    assert read.model_dump() == ImagingStudy.model_validate(searched.model_dump()).model_dump()
    assert read.id == uid
    assert read.identifier[0].value == f"urn:oid:{uid}"
    assert read.numberOfSeries == 2
    stored = {str(ds.SOPInstanceUID) for ds in gateway.instances}
    assert {i.uid for s in read.series for i in s.instance} == stored


def test_patient_is_pseudonymous(client: httpx.Client, gateway: Gateway) -> None:
    study = parse(client.get(f"ImagingStudy/{gateway.study_uid}"), ImagingStudy)
    response = client.get(study.subject.reference)
    patient = parse(response, Patient)
    data = response.json()
    assert "name" not in data
    source = gateway.instances[0]
    assert data["birthDate"] == str(source.PatientBirthDate)[:4]
    assert patient.identifier[0].value == str(source.PatientID)
    assert patient.gender == {"M": "male", "F": "female"}[str(source.PatientSex)]


def test_dicomweb_endpoint_address(client: httpx.Client, gateway: Gateway) -> None:
    endpoint = parse(client.get("Endpoint/dicomweb"), Endpoint)
    assert endpoint.address.endswith("/dicom-web")
    assert endpoint.address == gateway.live.dicomweb


# --- conformance resources --------------------------------------------------------------------


def test_imaging_study_profile_is_readable(client: httpx.Client) -> None:
    profile = parse(client.get("StructureDefinition/gateway-imagingstudy"), StructureDefinition)
    assert profile.type == "ImagingStudy"
    assert profile.url.endswith("/StructureDefinition/gateway-imagingstudy")


def test_cancer_types_value_set_is_readable(client: httpx.Client) -> None:
    vs = parse(client.get("ValueSet/cancer-types"), ValueSet)
    codes = {(inc.system, c.code) for inc in vs.compose.include for c in inc.concept or []}
    assert {(SNOMED, BREAST_CANCER), (SNOMED, LUNG_CANCER)} <= codes


def test_search_parameters_are_listed(client: httpx.Client) -> None:
    found = bundle(client.get("SearchParameter"))
    params = [SearchParameter.model_validate(r.model_dump()) for r in matches(found)]
    codes = {p.code for p in params}
    assert {"cancer-type", "dataset"} <= codes
    assert found.total == len(params)


def test_search_parameter_search_by_id_returns_only_that_one(client: httpx.Client) -> None:
    found = bundle(client.get("SearchParameter", params={"_id": "researchstudy-cancer-type"}))
    assert match_ids(found) == ["researchstudy-cancer-type"]


def test_unknown_conformance_resource_is_404(client: httpx.Client) -> None:
    outcome(client.get("ValueSet/no-such-value-set"), 404)


def test_endpoint_search_honours_its_criteria(client: httpx.Client) -> None:
    assert match_ids(bundle(client.get("Endpoint", params={"status": "active"}))) == ["dicomweb"]
    assert match_ids(bundle(client.get("Endpoint", params={"_id": "other"}))) == []


def test_history_bundles_parse(client: httpx.Client) -> None:
    raw = client.get("ResearchStudy/_history").json()
    assert Bundle.model_validate(raw).type == "history"

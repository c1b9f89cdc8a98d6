"""Nothing crosses an agreement through FHIR search: chains, includes, cursors, counts.

Datasets: ``A`` (researcher X has a download agreement), ``B`` (another organisation's;
X has nothing) and ``R`` (X and the counter Y may only process remotely: aggregate
answers). B's data carry values found nowhere else; A's resources point at B's (A is
part of B, a subject in A is a patient imaged only in B), so any hop that is not
narrowed to the caller's datasets shows up as a match.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome

from server.core.fhir.params import PARAMS, ParamType, params_of
from tests.helpers import cohort
from tests.live import LiveServer
from tests.security.conftest import (
    AS_SENT,
    FHIR_JSON,
    add_client,
    auth_env,
    bearer,
    cli_ok,
    expect,
    stow_into,
    token,
)

A, B, R = "leak-a", "leak-b", "leak-r"
EXT = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition"
SNOMED = "http://snomed.info/sct"
CURSOR_LIFETIME = 10
MIN_CELL = 10
# What only B holds (see _b_research_study and the B studies).
B_PATIENT = {"PatientID": "PB-UNIQUE-31", "PatientBirthDate": "19310615", "PatientSex": "O"}
B_SERIES = {"Modality": "NM", "BodyPartExamined": "KNEE"}
B_STUDY = {"StudyDate": "19990203", "AccessionNumber": "ACC-B-77"}


@dataclass
class World:
    live: LiveServer
    x: str  # download on A, remote processing on R
    z: str  # download on A (another client of another organisation)
    y: str  # remote processing on R only
    admin: str
    b_patient: str  # FHIR Patient id of the patient imaged only in B
    b_study: dict[str, Any]  # B's ResearchStudy as stored
    b_uids: set[str]
    a_uids: set[str]

    def get(self, path: str, access_token: str, params: Any = None) -> httpx.Response:
        url = path if path.startswith("http") else f"{self.live.url}/fhir/{path}"
        return httpx.get(url, params=params, headers=bearer(access_token), timeout=60)

    @property
    def hidden(self) -> set[str]:
        return {*self.b_uids, self.b_patient, B_PATIENT["PatientID"], B, "Bravo"}


def _studies(
    live: LiveServer, dataset: str, push: str, n: int, **attrs: str
) -> list[pydicom.Dataset]:
    stored = []
    for _ in range(n):
        instances = cohort(instances_per_series=1)
        for ds in instances:
            for keyword, value in attrs.items():
                setattr(ds, keyword, value)
        answer = stow_into(live, dataset, push, instances)
        assert answer.status_code == 200, answer.text
        stored += instances
    return stored


def _put(live: LiveServer, admin: str, resource: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.put(
        f"{live.url}/fhir/{resource['resourceType']}/{resource['id']}",
        json=resource,
        headers={**bearer(admin), "Content-Type": FHIR_JSON},
        timeout=30,
    )
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


def _b_research_study(current: dict[str, Any]) -> dict[str, Any]:
    def concept(code: str) -> list[dict[str, Any]]:
        return [{"coding": [{"system": "urn:test:leaks", "code": code}]}]

    return {
        **{k: v for k, v in current.items() if k != "meta"},
        "identifier": [{"system": "urn:test:leaks", "value": "B-IDENT-7"}],
        "title": "Bravo hidden cohort",
        "status": "completed",
        "category": concept("cat-b"),
        "focus": concept("focus-b"),
        "keyword": concept("kw-b"),
        "condition": [{"coding": [{"system": SNOMED, "code": "254837009"}]}],
        "period": {"start": "1999-01-01", "end": "1999-12-31"},
        "partOf": [{"reference": "ResearchStudy/zeta-b"}],
        "sponsor": {"reference": "Organization/org-b"},
        "site": [{"reference": "Location/loc-b"}],
        "extension": [
            *current.get("extension", []),
            {"url": f"{EXT}/dataset-access-condition", "valueCode": "x-access-b"},
        ],
    }


def _subject(live: LiveServer, admin: str, dataset: str, patient: str) -> None:
    _put(live, admin, {
        "resourceType": "ResearchSubject", "id": f"subject-{dataset}", "status": "on-study",
        "study": {"reference": f"ResearchStudy/{dataset}"},
        "individual": {"reference": f"Patient/{patient}"},
    })  # fmt: skip


def _patient_of(live: LiveServer, admin: str, pid: str) -> str:
    found = httpx.get(f"{live.url}/fhir/Patient", params={"identifier": pid},
                      headers=bearer(admin), timeout=30).json()  # fmt: skip
    (entry,) = found["entry"]
    return str(entry["resource"]["id"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    live = LiveServer(
        tmp_path_factory.mktemp("leaks") / "data",
        extra_env=auth_env(GATEWAY_PRIVACY__CURSOR_LIFETIME=str(CURSOR_LIFETIME)),
    )
    for dataset, cancer in ((A, "lung"), (B, "lung"), (R, "lung")):
        cli_ok(live, "dataset", "create", dataset, "--title", dataset.upper(),
               "--cancer-type", cancer, *AS_SENT)  # fmt: skip
    pusher = add_client(live, "router", "--store", A, "--store", B, "--store", R)
    x = add_client(live, "researcher-x", "--organization", "org-x")
    z = add_client(live, "researcher-z", "--organization", "org-z")
    y = add_client(live, "counter-y", "--organization", "org-y")
    admin = add_client(live, "operator", "--admin")
    for name, dataset, condition, org in (
        ("daa-x-a", A, "download", "org-x"), ("daa-z-a", A, "download", "org-z"),
        ("daa-x-r", R, "remote-processing", "org-x"), ("daa-y-r", R, "remote-processing", "org-y"),
        ("daa-b", B, "download", "org-b"),
    ):  # fmt: skip
        cli_ok(live, "daa", "create", name, "--dataset", dataset, "--condition", condition,
               "--organization", org)  # fmt: skip
    live.start()
    try:
        push, admin_token = token(live, pusher), token(live, admin)
        a_data = _studies(live, A, push, 3, Modality="CT", BodyPartExamined="CHEST",
                          PatientSex="M", PatientBirthDate="19600101", StudyDate="20200101")  # fmt: skip
        b_data = _studies(live, B, push, 2, **B_PATIENT, **B_SERIES, **B_STUDY)
        _studies(live, R, push, 3, Modality="CT")
        b_patient = _patient_of(live, admin_token, B_PATIENT["PatientID"])
        current = httpx.get(
            f"{live.url}/fhir/ResearchStudy/{B}", headers=bearer(admin_token)
        ).json()
        b_study = _put(live, admin_token, _b_research_study(current))
        a_study = httpx.get(
            f"{live.url}/fhir/ResearchStudy/{A}", headers=bearer(admin_token)
        ).json()
        a_study.pop("meta")
        _put(live, admin_token, {**a_study, "partOf": [{"reference": f"ResearchStudy/{B}"}]})
        _subject(live, admin_token, A, b_patient)  # a subject in A imaged only in B
        _subject(live, admin_token, B, b_patient)
        yield World(
            live=live, x=token(live, x), z=token(live, z), y=token(live, y), admin=admin_token,
            b_patient=b_patient, b_study=b_study,
            b_uids={str(ds.StudyInstanceUID) for ds in b_data},
            a_uids={str(ds.StudyInstanceUID) for ds in a_data},
        )  # fmt: skip
    finally:
        live.stop()


# ---------------------------------------------------------------------- chains


def _probe(w: World, target: str, param: str) -> str | None:
    """A value of ``target``'s ``param`` that only B's data hold (None: the target is not
    dataset data, e.g. the shared Endpoint)."""
    if target == "Patient":
        return {"_id": w.b_patient, "identifier": B_PATIENT["PatientID"], "gender": "other",
                "birthdate": "1931", "_lastUpdated": "gt2000-01-01"}[param]  # fmt: skip
    if target == "ResearchStudy":
        return {
            "_id": B, "_lastUpdated": f"eq{w.b_study['meta']['lastUpdated']}",
            "identifier": "urn:test:leaks|B-IDENT-7", "title": "Bravo", "status": "completed",
            "category": "cat-b", "focus": "focus-b", "keyword": "kw-b", "date": "1999",
            "partof": "ResearchStudy/zeta-b", "sponsor": "Organization/org-b",
            "site": "Location/loc-b", "cancer-type": f"{SNOMED}|254837009", "modality": "NM",
            "access-condition": "x-access-b",
        }[param]  # fmt: skip
    if target in ("Organization", "Location"):
        return {"_id": "org-b" if target == "Organization" else "loc-b",
                "_lastUpdated": "gt2000-01-01"}[param]  # fmt: skip
    return None


def _chains() -> list[tuple[str, str, str, str]]:
    """Every (resource type, reference parameter, target type, target parameter) a caller
    without administration rights may search."""
    out = []
    for rtype, params in PARAMS.items():
        if rtype in ("Group", "Contract", "AuditEvent"):
            continue  # administrators only: they see every dataset anyway
        for p in params.values():
            if p.type is not ParamType.REFERENCE:
                continue
            for target in p.targets:
                out += [(rtype, p.name, target, t) for t in params_of(target)]
    return out


def _match_ids(response: httpx.Response) -> list[str]:
    found = Bundle.model_validate(response.json())
    return [e.resource.id for e in found.entry or [] if e.search and e.search.mode == "match"]


def test_every_chain_is_narrowed_at_every_hop(world: World) -> None:
    """Walks the parameter table: a value found only in B never makes anything match for
    a caller with access to A alone, while the same search matches for an administrator
    (so the probe does reach B's data)."""
    w = world
    walked = 0
    for rtype, ref, target, param in _chains():
        value = _probe(w, target, param)
        if value is None:
            continue
        query = {f"{ref}:{target}.{param}": value}
        mine, admins = w.get(rtype, w.x, query), w.get(rtype, w.admin, query)
        assert mine.status_code < 500 and admins.status_code < 500, (rtype, query, mine.text)
        if mine.status_code == 400:  # refused for everyone alike: nothing learnt
            assert admins.status_code == 400, (rtype, query, admins.text)
            continue
        expect(mine, 200, w.hidden)
        assert _match_ids(mine) == [], (rtype, query, mine.text[:500])
        if target in ("ResearchStudy", "Patient") and param != "_lastUpdated":
            assert _match_ids(admins), ("probe does not reach B", rtype, query)
        walked += 1
    assert walked >= 40, walked


def test_the_reported_chains(world: World) -> None:
    w = world
    for prefix in ("B", "Br", "Bravo"):
        answer = expect(w.get("ResearchStudy", w.x, {"_id": A, "partof.title": prefix}), 200)
        assert _match_ids(answer) == []
    year = B_PATIENT["PatientBirthDate"][:4]
    answer = w.get("ResearchSubject", w.x, {"individual:Patient.birthdate": year})
    assert _match_ids(expect(answer, 200, w.hidden)) == []
    assert _match_ids(w.get("ResearchSubject", w.admin, {"individual:Patient.birthdate": year}))


def test_includes_and_reverse_lookups_stay_inside(world: World) -> None:
    w = world
    for path, params in (
        ("ResearchStudy", {"_id": A, "_include": "ResearchStudy:partof"}),
        ("ResearchSubject", {"_include": "ResearchSubject:individual"}),
        ("ResearchSubject", {"_include": "ResearchSubject:study"}),
        ("ResearchStudy", {"_revinclude": "ImagingStudy:dataset"}),
        ("ResearchStudy", {"_revinclude": "ResearchSubject:study"}),
        ("Patient", {"_revinclude": "ResearchSubject:individual"}),
        ("Patient", {"_revinclude": "ImagingStudy:patient"}),
        ("ImagingStudy", {"_include": "ImagingStudy:patient"}),
        ("ImagingStudy", {"_include": "ImagingStudy:dataset"}),
    ):
        # A's own resources name B (A is part of B; a subject in A is B's patient): the
        # references are A's data; what they point at is not included.
        answer = expect(w.get(path, w.x, params), 200, w.hidden - {B, w.b_patient})
        ids = {(e["resource"]["resourceType"], e["resource"]["id"])
               for e in answer.json().get("entry", [])}  # fmt: skip
        assert ("ResearchStudy", B) not in ids and ("Patient", w.b_patient) not in ids, ids


def test_has_is_refused_clearly(world: World) -> None:
    for params in ({"_has:ResearchSubject:individual:status": "on-study"}, {"_filter": "x"}):
        answer = expect(world.get("Patient", world.x, params), 400, world.hidden)
        OperationOutcome.model_validate(answer.json())


# ---------------------------------------------------------------------- cursors


def _next(response: httpx.Response) -> str | None:
    return next((x["url"] for x in response.json()["link"] if x["relation"] == "next"), None)


def _cursor(url: str) -> str:
    return parse_qs(urlsplit(url).query)["_cursor"][0]


def _with_cursor(url: str, cursor: str) -> str:
    head, _, _query = url.partition("?")
    params = [(k, v) for k, v in parse_qs(urlsplit(url).query).items() if k != "_cursor"]
    flat = "&".join(f"{k}={v[0]}" for k, v in params)
    return f"{head}?{flat}&_cursor={cursor}"


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    OperationOutcome.model_validate(response.json())


def _paged(w: World, rtype: str, caller: str, **params: str) -> str:
    hidden = () if caller == w.admin else w.hidden
    first = expect(w.get(rtype, caller, {"_count": "1", **params}), 200, hidden)
    url = _next(first)
    assert url, first.text[:500]
    return url


@pytest.mark.parametrize("rtype", ["ImagingStudy", "Patient", "ResearchStudy", "AuditEvent"])
def test_cursors_are_opaque_and_bound(world: World, rtype: str) -> None:
    w = world
    caller = w.admin if rtype in ("AuditEvent", "ResearchStudy") else w.x
    url = _paged(w, rtype, caller)
    cursor = _cursor(url)
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    for uid in w.a_uids | w.b_uids:  # no sort key travels in clear
        assert uid.encode() not in raw and uid not in cursor
    assert b"2020" not in raw and b'"n"' not in raw
    assert expect(w.get(url, caller), 200).json()["entry"]
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    _refused(w.get(_with_cursor(url, flipped), caller))
    _refused(w.get(_with_cursor(url, cursor[:20]), caller))
    old = base64.urlsafe_b64encode(b'["n",["2020",1]]').decode().rstrip("=")
    _refused(w.get(_with_cursor(url, old), caller))  # the old unsealed form
    other_query = url.replace("_count=1", "_count=2")
    _refused(w.get(other_query, caller))
    other_type = url.replace(f"/fhir/{rtype}?", "/fhir/Group?" if rtype != "Group" else "")
    _refused(w.get(other_type, w.admin))
    other_caller = w.z if caller == w.x else w.x
    answer = w.get(url, other_caller)
    assert answer.status_code in (400, 403), answer.text[:300]
    if caller == w.x:
        _refused(answer)


def test_next_links_work_with_ignored_parameters_and_post(world: World) -> None:
    w = world
    url = _paged(w, "ImagingStudy", w.x, **{"unknown-param": "1", "_sort": "_id"})
    assert "unknown-param" not in url
    assert expect(w.get(url, w.x), 200, w.hidden).json()["entry"]
    posted = httpx.post(f"{w.live.url}/fhir/ImagingStudy/_search", data={"_count": "1"},
                        headers=bearer(w.x), timeout=30)  # fmt: skip
    assert expect(w.get(_next(posted) or "", w.x), 200, w.hidden).json()["entry"]


def test_cursors_expire(world: World) -> None:
    w = world
    url = _paged(w, "ImagingStudy", w.x)
    time.sleep(CURSOR_LIFETIME + 1.5)
    answer = w.get(url, w.x)
    _refused(answer)
    assert "expired" in answer.text


# ---------------------------------------------------------------------- counts


def _total(response: httpx.Response) -> int:
    body = response.json()
    assert "entry" not in body, body
    assert [x["relation"] for x in body["link"]] == ["self"], body["link"]
    return int(body["total"])


def test_count_only_answers_carry_no_row_and_no_link(world: World) -> None:
    w = world
    for rtype in ("ImagingStudy", "Patient", "ResearchStudy", "ResearchSubject"):
        for caller in (w.x, w.y, w.admin):
            answer = w.get(rtype, caller, {"_summary": "count", "_count": "1"})
            _total(expect(answer, 200, w.hidden if caller != w.admin else ()))
            # a cursor sent along is not honoured: still no row, no link
            again = w.get(rtype, caller, {"_summary": "count", "_cursor": "x"})
            _total(expect(again, 200, w.hidden if caller != w.admin else ()))


def test_counts_without_row_access_obey_the_minimum_cell_count(world: World) -> None:
    w = world
    in_r = {"dataset": f"ResearchStudy/{R}", "_summary": "count"}
    assert _total(w.get("ImagingStudy", w.admin, in_r)) == 3
    assert _total(w.get("ImagingStudy", w.y, in_r)) == MIN_CELL  # 3 reported as 10
    assert _total(w.get("Patient", w.y, {"_summary": "count"})) == MIN_CELL
    nothing = {**in_r, "modality": "XA"}
    assert _total(w.get("ImagingStudy", w.y, nothing)) == 0  # 0 stays 0
    # the count of one patient's studies is not disclosed
    patient = w.get("Patient", w.admin, {"_count": "1"}).json()["entry"][0]["resource"]["id"]
    one = w.get("ImagingStudy", w.y, {"_summary": "count", "patient": patient})
    assert _total(one) in (0, MIN_CELL)
    # a row search shows the remote-only caller nothing at all
    assert "entry" not in w.get("ImagingStudy", w.y, in_r | {"_summary": "false"}).json()
    # catalogue figures: floored for R (remote only), exact for A (download)
    for caller, dataset, studies in ((w.y, R, MIN_CELL), (w.x, A, 3), (w.admin, R, 3)):
        resource = expect(w.get(f"ResearchStudy/{dataset}", caller), 200).json()
        figures = {
            e["url"].rsplit("/", 1)[-1]: e.get("valueInteger") for e in resource["extension"]
        }
        assert figures["dataset-number-of-studies"] == studies, (dataset, figures)
        assert figures["dataset-number-of-subjects"] == studies, (dataset, figures)

"""FHIR Bulk Data v2.0.0 export over HTTP, with OAuth2 on and real agreements.

Datasets: ``A`` (researcher X downloads), ``S`` (X processes in situ), ``R`` (X and
counter Y may only process remotely) and ``B`` (another organisation's). An export of X
holds exactly A's and S's resources, once each; nothing of B or R; Y is refused.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.researchstudy import ResearchStudy
from fhir.resources.R4B.researchsubject import ResearchSubject

from tests.live import LiveServer
from tests.security.conftest import (
    AS_SENT,
    FHIR_JSON,
    Registered,
    Study,
    add_client,
    auth_env,
    bearer,
    cli_ok,
    store_study,
    token,
)

A, S, R, B = "bulk-a", "bulk-i", "bulk-r", "bulk-b"
ASYNC = {"Prefer": "respond-async", "Accept": FHIR_JSON}
MODELS: dict[str, Any] = {"Patient": Patient, "ImagingStudy": ImagingStudy,
                          "ResearchStudy": ResearchStudy, "ResearchSubject": ResearchSubject}  # fmt: skip


@dataclass
class World:
    live: LiveServer
    x: str  # download on A, in-situ on S, remote on R
    z: str  # download on A (another organisation: another caller)
    y: str  # remote processing on R only
    admin: str
    studies: dict[str, list[Study]]
    x_client: Registered

    @property
    def base(self) -> str:
        return f"{self.live.url}/fhir"

    def expected(self, datasets: tuple[str, ...]) -> dict[str, set[str]]:
        stored = [s for d in datasets for s in self.studies[d]]
        return {
            "ResearchStudy": set(datasets),
            "Patient": {s.patient_ref for s in stored},
            "ImagingStudy": {s.study_uid for s in stored},
            "ResearchSubject": {f"subject-{d}" for d in datasets if d in (A, B)},
        }


def _subject(live: LiveServer, admin: str, dataset: str, patient: str) -> None:
    answer = httpx.put(
        f"{live.url}/fhir/ResearchSubject/subject-{dataset}",
        json={"resourceType": "ResearchSubject", "id": f"subject-{dataset}",
              "status": "on-study", "study": {"reference": f"ResearchStudy/{dataset}"},
              "individual": {"reference": f"Patient/{patient}"}},
        headers={**bearer(admin), "Content-Type": FHIR_JSON}, timeout=30,
    )  # fmt: skip
    assert answer.status_code in (200, 201), answer.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("bulk")
    live = LiveServer(
        root / "data",
        extra_env=auth_env(GATEWAY_BULK__RETRY_AFTER_SECONDS="1", GATEWAY_BULK__PROCESS="true"),
    )
    for dataset in (A, S, R, B):
        cli_ok(live, "dataset", "create", dataset, "--title", dataset.upper(),
               "--cancer-type", "lung", *AS_SENT)  # fmt: skip
    pusher = add_client(live, "router", *[a for d in (A, S, R, B) for a in ("--store", d)])
    x = add_client(live, "researcher-x", "--organization", "org-x")
    z = add_client(live, "researcher-z", "--organization", "org-z")
    y = add_client(live, "counter-y", "--organization", "org-y")
    admin = add_client(live, "operator", "--admin")
    for name, dataset, condition, org in (
        ("daa-x-a", A, "download", "org-x"), ("daa-x-i", S, "in-situ-processing", "org-x"),
        ("daa-x-r", R, "remote-processing", "org-x"), ("daa-y-r", R, "remote-processing", "org-y"),
        ("daa-z-a", A, "download", "org-z"), ("daa-b", B, "download", "org-b"),
    ):  # fmt: skip
        cli_ok(live, "daa", "create", name, "--dataset", dataset, "--condition", condition,
               "--organization", org)  # fmt: skip
    live.start()
    try:
        push, admin_token = token(live, pusher), token(live, admin)
        studies = {d: [store_study(live, d, push) for _ in range(n)]
                   for d, n in ((A, 3), (S, 2), (R, 2), (B, 2))}  # fmt: skip
        _subject(live, admin_token, A, studies[A][0].patient_ref)
        _subject(live, admin_token, B, studies[B][0].patient_ref)
        yield World(live, token(live, x), token(live, z), token(live, y), admin_token,
                    studies, x)  # fmt: skip
    finally:
        live.stop()


# ---------------------------------------------------------------------- helpers


def kickoff(
    w: World, path: str, access_token: str, params: Any = None, **headers: str
) -> httpx.Response:
    return httpx.get(f"{w.base}/{path}", params=params,
                     headers={**ASYNC, **headers, **bearer(access_token)}, timeout=30)  # fmt: skip


def completed(w: World, answer: httpx.Response, access_token: str) -> dict[str, Any]:
    """The manifest, after polling the status URL the kick-off gave (202s carry the headers)."""
    assert answer.status_code == 202, answer.text
    location = answer.headers["content-location"]
    assert location.startswith(f"{w.base}/$export-status/")
    for _ in range(200):
        status = httpx.get(location, headers=bearer(access_token), timeout=30)
        if status.status_code == 200:
            assert status.headers["content-type"].startswith("application/json")
            assert "expires" in status.headers
            body: dict[str, Any] = status.json()
            return body
        assert status.status_code == 202, status.text
        assert status.headers["retry-after"].isdigit() and status.headers["x-progress"]
        time.sleep(0.1)
    raise AssertionError("the export did not finish")


def downloaded(manifest: dict[str, Any], access_token: str) -> dict[str, list[dict[str, Any]]]:
    """Every output file, each line parsed as an R4 resource of the file's type."""
    out: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        answer = httpx.get(item["url"], headers=bearer(access_token), timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [json.loads(line) for line in answer.text.splitlines()]
        assert len(lines) == item["count"]
        for resource in lines:
            assert resource["resourceType"] == item["type"]
            MODELS[item["type"]].model_validate(resource)
        out.setdefault(item["type"], []).extend(lines)
    return out


def ids(files: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    return {t: sorted(r["id"] for r in rs) for t, rs in files.items()}


def as_sets(found: dict[str, list[str]], types: tuple[str, ...]) -> dict[str, set[str]]:
    for rtype, listed in found.items():
        assert len(listed) == len(set(listed)), f"{rtype} exported twice"
    return {t: set(found.get(t, [])) for t in types}


def issue(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith(FHIR_JSON)
    found = OperationOutcome.model_validate(answer.json())
    return str(found.issue[0].diagnostics)


TYPES = ("ResearchStudy", "Patient", "ImagingStudy", "ResearchSubject")


# ---------------------------------------------------------------------- contents


def test_system_export_holds_exactly_the_download_and_in_situ_datasets(world: World) -> None:
    manifest = completed(world, kickoff(world, "$export", world.x), world.x)
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].endswith("/fhir/$export") and manifest["error"] == []
    assert manifest["transactionTime"].endswith("Z")
    found = as_sets(ids(downloaded(manifest, world.x)), TYPES)
    assert found == world.expected((A, S))


def test_patient_export_is_the_patient_compartment_of_allowed_datasets(world: World) -> None:
    manifest = completed(world, kickoff(world, "Patient/$export", world.x), world.x)
    found = as_sets(ids(downloaded(manifest, world.x)), TYPES)
    expected = world.expected((A, S))
    assert found == {**expected, "ResearchStudy": set()}


def test_group_export_is_one_datasets_cohort(world: World) -> None:
    manifest = completed(world, kickoff(world, f"Group/{A}/$export", world.x), world.x)
    found = as_sets(ids(downloaded(manifest, world.x)), TYPES)
    assert found == {**world.expected((A,)), "ResearchStudy": set()}


@pytest.mark.parametrize("group", [B, R, "no-such-dataset"])
def test_group_export_of_a_dataset_without_row_access_is_404(world: World, group: str) -> None:
    assert "not known" in issue(kickoff(world, f"Group/{group}/$export", world.x), 404)


def test_type_elements_and_type_filter_narrow_the_export(world: World) -> None:
    params = {"_type": "ImagingStudy", "_elements": "ImagingStudy.modality",
              "_typeFilter": f"ImagingStudy?dataset=ResearchStudy/{S}"}  # fmt: skip
    manifest = completed(world, kickoff(world, "$export", world.x, params), world.x)
    files = downloaded(manifest, world.x)
    assert set(files) == {"ImagingStudy"}
    assert {r["id"] for r in files["ImagingStudy"]} == world.expected((S,))["ImagingStudy"]
    for r in files["ImagingStudy"]:
        assert "series" not in r and r["modality"]
        assert any(t["code"] == "SUBSETTED" for t in r["meta"]["tag"])


def test_since_exports_only_what_changed_after_it(world: World) -> None:
    params = {"_since": "2999-01-01T00:00:00Z"}
    manifest = completed(world, kickoff(world, "$export", world.x, params), world.x)
    assert manifest["output"] == []
    params = {"_since": "2000-01-01T00:00:00+02:00", "_type": "Patient,ImagingStudy"}
    manifest = completed(world, kickoff(world, "$export", world.x, params), world.x)
    found = as_sets(ids(downloaded(manifest, world.x)), ("Patient", "ImagingStudy"))
    expected = world.expected((A, S))
    assert found == {"Patient": expected["Patient"], "ImagingStudy": expected["ImagingStudy"]}


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("params", "headers", "needle"),
    [
        ({}, {"Prefer": "handling=strict"}, "respond-async"),
        ({"_outputFormat": "application/fhir+json"}, {}, "_outputFormat"),
        ({"_type": "Observation"}, {}, "Observation"),
        ({"_since": "2020-01-01"}, {}, "instant"),
        ({"_elements": "Observation.code"}, {}, "_elements"),
        ({"patient": "Patient/1"}, {}, "patient"),
        ({"_count": "10"}, {}, "_count"),
        ({"_typeFilter": "ImagingStudy?_sort=started"}, {}, "_sort"),
        ({"_typeFilter": "ImagingStudy?nonsense=1"}, {}, "nonsense"),
        ({"_typeFilter": "Patient?gender=male"}, {"_type": "ImagingStudy"}, "not exported"),
    ],
)
def test_bad_kickoffs_are_400_with_an_operation_outcome(
    world: World, params: dict[str, str], headers: dict[str, str], needle: str
) -> None:
    if "_type" in headers:
        params = {**params, "_type": headers.pop("_type")}
    prefer = headers.pop("Prefer", "respond-async")
    answer = kickoff(world, "$export", world.x, params, Prefer=prefer)
    assert needle in issue(answer, 400)


def test_lenient_handling_ignores_unsupported_parameters(world: World) -> None:
    answer = kickoff(world, "$export", world.x, {"_type": "Patient,Observation", "foo": "1"},
                     Prefer="respond-async, handling=lenient")  # fmt: skip
    manifest = completed(world, answer, world.x)
    assert {o["type"] for o in manifest["output"]} == {"Patient"}


def post_kickoff(w: World, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(f"{w.base}/{path}", json=body, timeout=30,
                      headers={**ASYNC, "Content-Type": FHIR_JSON, **headers, **bearer(w.x)})  # fmt: skip


def parameters(*pairs: tuple[str, str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters",
            "parameter": [{"name": n, kind: v} for n, kind, v in pairs]}  # fmt: skip


def test_post_kickoff_with_parameters_exports_as_the_get_does(world: World) -> None:
    body = parameters(("_type", "valueString", "ImagingStudy"), ("_type", "valueString", "Patient"),
                      ("_outputFormat", "valueString", "application/fhir+ndjson"),
                      ("_since", "valueInstant", "2000-01-01T00:00:00Z"),
                      ("_typeFilter", "valueString", f"ImagingStudy?dataset=ResearchStudy/{S}"))  # fmt: skip
    manifest = completed(world, post_kickoff(world, "$export", body), world.x)
    assert manifest["request"] == f"{world.base}/$export"  # a POST's URL, without parameters
    found = as_sets(ids(downloaded(manifest, world.x)), ("Patient", "ImagingStudy"))
    expected = world.expected((A, S))
    assert found == {"Patient": expected["Patient"],
                     "ImagingStudy": world.expected((S,))["ImagingStudy"]}  # fmt: skip


def test_post_group_kickoff_exports_the_cohort(world: World) -> None:
    manifest = completed(world, post_kickoff(world, f"Group/{A}/$export", parameters()), world.x)
    found = as_sets(ids(downloaded(manifest, world.x)), TYPES)
    assert found == {**world.expected((A,)), "ResearchStudy": set()}


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "needle"),
    [
        ("$export", {"resourceType": "Bundle"}, {}, 400, "Parameters"),
        (
            "$export",
            parameters(("patient", "valueReference", {"reference": "Patient/1"})),
            {},
            400,
            "patient",
        ),
        ("$export", parameters(("_type", "valueInteger", 3)), {}, 400, "_type"),
        ("$export", parameters(("_type", "valueString", "Observation")), {}, 400, "Observation"),
        ("$export?_type=Patient", parameters(), {}, 400, "Parameters body"),
        ("$export", parameters(), {"Prefer": "handling=strict"}, 400, "respond-async"),
        ("$export", parameters(), {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ],
)
def test_bad_post_kickoffs_are_refused_with_an_operation_outcome(
    world: World, path: str, body: Any, headers: dict[str, str], status: int, needle: str
) -> None:
    before = len(world_jobs(world))
    assert needle in issue(post_kickoff(world, path, body, **headers), status)
    assert len(world_jobs(world)) == before  # a refused kick-off queues nothing


def world_jobs(w: World) -> list[str]:
    db = w.live.data_dir / "bulk.sqlite"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM bulk_job")]
    finally:
        conn.close()


def test_remote_processing_only_caller_is_refused_at_kickoff(world: World) -> None:
    assert "remote-processing" in issue(kickoff(world, "$export", world.y), 403)


def test_kickoff_without_a_token_is_401(world: World) -> None:
    answer = httpx.get(f"{world.base}/$export", headers=ASYNC, timeout=30)
    assert answer.status_code == 401


def test_a_token_without_read_scope_is_403(world: World) -> None:
    narrow = httpx.post(
        f"{world.live.url}/oauth/token",
        data={"grant_type": "client_credentials", "scope": "system/Patient.rs"},
        auth=(world.x_client.client_id, world.x_client.secret or ""), timeout=30,
    ).json()["access_token"]  # fmt: skip
    named = kickoff(world, "$export", narrow, {"_type": "Patient,ImagingStudy"})
    assert "ImagingStudy" in issue(named, 403)
    # without _type: every type the scope allows (Bulk Data 2.0.0 _type)
    manifest = completed(world, kickoff(world, "$export", narrow), narrow)
    assert {o["type"] for o in manifest["output"]} == {"Patient"}


# ---------------------------------------------------------------------- ownership, cancel


def test_status_and_files_are_only_the_exporting_callers(world: World) -> None:
    answer = kickoff(world, f"Group/{A}/$export", world.x)
    manifest = completed(world, answer, world.x)
    location = answer.headers["content-location"]
    url = manifest["output"][0]["url"]
    for other in (world.z, world.admin):
        assert httpx.get(location, headers=bearer(other)).status_code == 404
        assert httpx.get(url, headers=bearer(other)).status_code == 404
        assert httpx.delete(location, headers=bearer(other)).status_code == 404
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=bearer(world.x)).status_code == 200


def test_delete_removes_the_export_and_its_files(world: World) -> None:
    answer = kickoff(world, "$export", world.x)
    manifest = completed(world, answer, world.x)
    location = answer.headers["content-location"]
    job = location.rsplit("/", 1)[-1]
    assert (world.live.data_dir / "bulk" / job).is_dir()
    assert httpx.delete(location, headers=bearer(world.x)).status_code == 202
    assert "no such export" in issue(httpx.get(location, headers=bearer(world.x)), 404)
    assert httpx.get(manifest["output"][0]["url"], headers=bearer(world.x)).status_code == 404
    assert not (world.live.data_dir / "bulk" / job).exists()
    assert httpx.delete(location, headers=bearer(world.x)).status_code == 404


def test_unknown_job_is_404(world: World) -> None:
    issue(httpx.get(f"{world.base}/$export-status/nope", headers=bearer(world.x)), 404)


def test_exports_are_audited(world: World) -> None:
    answer = kickoff(world, f"Group/{A}/$export", world.x)
    manifest = completed(world, answer, world.x)
    downloaded(manifest, world.x)
    job = answer.headers["content-location"].rsplit("/", 1)[-1]
    time.sleep(1.5)  # the audit log writes in batches
    seen: dict[str, int] = {}
    for subtype in ("export", "export-download"):
        found = httpx.get(f"{world.base}/AuditEvent", params={"subtype": subtype, "_count": "1000"},
                          headers=bearer(world.admin), timeout=30).json()  # fmt: skip
        events = [e["resource"] for e in found.get("entry", [])]
        mine = [e for e in events if f"export:{job}" in json.dumps(e)]
        seen[subtype] = len(mine)
    # kick-off, polls (202s and the 200) and the completion; one event per file downloaded
    assert seen["export"] >= 3
    assert seen["export-download"] == len(manifest["output"])

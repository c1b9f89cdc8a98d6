"""EUCAIM federated search over HTTP, as a node's Focus (ENDPOINT_TYPE=omop) and the reference
mediator's clients call it, on a live gateway (SQLite, or Elasticsearch with
``--index-backend elasticsearch``).

Data: datasets created and images imported with the real CLI; counts compared with what
was stored. Focus's shape: pretty-printed ``{"ast": ..., "id": "<uuid>__search__<uuid>"}``
with float numbers and nested OR/AND/OR groups, ``Authorization: Secret <token>``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from server.security.audit import tail
from tests.helpers import instance
from tests.live import LiveServer
from tests.security.conftest import Registered, add_client, bearer, cli_ok, token, token_response

SECRET = "s3cret-for-the-eucaim-search-" + uuid.uuid4().hex[:8]
PATH = "/api/datasets/eucaimSearch"
MR, CT = "RID10312", "RID10321"
MOD, SEX, AGE = "RID10311", "SNOMEDCT263495000", "SNOMEDCT423493009"
# dataset -> (access rights, cancer type, [(patient, sex, age, modality)])
DATASETS: dict[str, tuple[str, str, list[tuple[str, str, str, str]]]] = {
    "d-public": ("PUBLIC", "prostate",
                 [(f"PUB{i:02d}", "M", f"0{50 + i}Y", "MR") for i in range(13)]
                 + [("PUB00", "M", "050Y", "CT"), ("PUB01", "M", "051Y", "CT")]),
    "d-restricted": ("RESTRICTED", "lung", [("RES1", "F", "040Y", "CT"), ("RES1", "F", "041Y", "CT"),
                                            ("RES2", "F", "066Y", "CT"), ("RES2", "F", "067Y", "MR")]),
    "d-hidden": ("NON_PUBLIC", "breast", [(f"HID{i}", "F", "030Y", "MR") for i in range(5)]),
    "d-out": ("RESTRICTED", "colon", [(f"OUT{i}", "O", "070Y", "MR") for i in range(3)]),
}  # fmt: skip


@dataclass
class Node:
    live: LiveServer
    federation_client: Registered
    other_client: Registered

    def search(
        self, ast: dict[str, Any], auth: str | None = f"Secret {SECRET}", **kw: Any
    ) -> httpx.Response:
        body = json.dumps({"ast": ast, "id": f"{uuid.uuid4()}__search__{uuid.uuid4()}"}, indent=2)
        headers = {"Content-Type": "application/json", **({"Authorization": auth} if auth else {})}
        headers.update(kw.pop("headers", {}))
        return httpx.post(
            self.live.url + PATH, content=kw.pop("content", body), headers=headers, timeout=60
        )

    def restart(self, **env: str) -> None:
        self.live.stop()
        self.live.extra_env.update(env)
        self.live.start()


def _write_studies(folder: Path, patients: list[tuple[str, str, str, str]]) -> None:
    folder.mkdir(parents=True)
    for n, (patient, sex, age, modality) in enumerate(patients):
        ds = instance(PatientID=patient, PatientSex=sex, PatientAge=age, Modality=modality,
                      StudyDate="20230102", BodyPartExamined="PROSTATE", Manufacturer="SIEMENS")  # fmt: skip
        ds.save_as(folder / f"{n}.dcm", enforce_file_format=True)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("eucaim")
    live = LiveServer(root / "data", extra_env={
        "GATEWAY_AUTH__ENABLED": "true", "GATEWAY_AUTH__PUBLIC_READ": "false",
        "GATEWAY_FEDERATION__EUCAIM_SEARCH_TOKEN": SECRET, "GATEWAY_FEDERATION__MIN_COUNT": "1",
    })  # fmt: skip
    fed = add_client(live, "federation platform")
    other = add_client(live, "a researcher")
    live.extra_env["GATEWAY_FEDERATION__OAUTH_CLIENTS"] = json.dumps([fed.client_id])
    for dataset, (rights, cancer, patients) in DATASETS.items():
        cli_ok(live, "dataset", "create", dataset, "--title", f"Title of {dataset}",
               "--cancer-type", cancer, "--access-rights", rights, "--description", f"About {dataset}")  # fmt: skip
        _write_studies(root / dataset, patients)
        cli_ok(live, "import", "--dataset", dataset, str(root / dataset))
    cli_ok(live, "federation", "exclude", "d-out")
    live.start()
    yield Node(live, fed, other)
    live.stop()


def lens(*groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Lens's tree: OR of query bars, each an AND of per-criterion ORs."""
    return {"operand": "OR", "children": [
        {"operand": "AND", "children": [{"operand": "OR", "children": [c]} for c in g]} for g in groups]}  # fmt: skip


def by_id(answer: httpx.Response) -> dict[str, dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.text.startswith("{")  # Focus splices its provider fields after the first '{'
    body = answer.json()
    assert list(body) == ["collections"]
    return {c["id"]: c for c in body["collections"]}


def test_focus_request_counts_what_was_stored(node: Node) -> None:
    found = by_id(node.search(lens([{"key": MOD, "type": "EQUALS", "value": MR, "system": ""}])))
    assert set(found) == {"d-public", "d-restricted"}
    assert (found["d-public"]["studies_count"], found["d-public"]["subjects_count"]) == (13, 13)
    assert (found["d-restricted"]["studies_count"], found["d-restricted"]["subjects_count"]) == (
        1,
        1,
    )
    c = found["d-public"]
    assert c == {
        "id": "d-public", "name": "Title of d-public", "studies_count": 13, "subjects_count": 13,
        "age_range": {"min": 50, "max": 65}, "gender": ["Male"], "modality": ["CT", "MR"],
        "body_parts": ["PROSTATE"], "description": "About d-public",
    }  # fmt: skip
    assert all(type(c[k]) is int for k in ("studies_count", "subjects_count"))


def test_float_numbers_and_nested_groups(node: Node) -> None:
    ast = lens([{"key": AGE, "type": "BETWEEN", "value": {"min": 60.0, "max": 67.0}},
                {"key": SEX, "type": "EQUALS", "value": "SNOMEDCT248152002"}])  # fmt: skip
    found = by_id(node.search(ast))
    assert set(found) == {"d-restricted"}
    assert (found["d-restricted"]["studies_count"], found["d-restricted"]["subjects_count"]) == (
        2,
        1,
    )


def test_which_datasets_answer(node: Node) -> None:
    """Active, not NON_PUBLIC (RESTRICTED included), not opted out; id = ResearchStudy id."""
    assert set(by_id(node.search({"operand": "OR", "children": []}))) == {
        "d-public",
        "d-restricted",
    }
    cli_ok(node.live, "federation", "include", "d-out")
    try:
        found = by_id(node.search({"operand": "OR", "children": []}))
        assert set(found) == {"d-public", "d-restricted", "d-out"}
        assert found["d-out"]["gender"] == ["Undifferentiated"]
        status = cli_ok(node.live, "federation", "status")
        assert "d-hidden\tsilent" in status and "d-out\tanswers" in status
    finally:
        cli_ok(node.live, "federation", "exclude", "d-out")
    assert "d-out" not in by_id(node.search({"operand": "OR", "children": []}))
    stored = httpx.get(f"{node.live.url}/fhir/ResearchStudy/d-out",
                       headers=bearer(token(node.live, node.federation_client, "system/*.rs")))  # fmt: skip
    assert stored.status_code in (403, 404)  # the switch never opens the dataset itself


def test_unknown_key_and_value_are_false_and_reported(node: Node) -> None:
    answer = node.search(lens([{"key": "EUCAIM_Hyper-Ontology_V1.0.CLIN1037294", "type": "EQUALS",
                                "value": "CLIN1025818"}]))  # fmt: skip
    assert by_id(answer) == {}
    assert answer.headers["X-Conditions-Evaluated-False"] == "1"
    answer = node.search({"operand": "OR", "children": [
        {"key": MOD, "type": "EQUALS", "value": "RID00000"}, {"key": MOD, "type": "EQUALS", "value": CT}]})  # fmt: skip
    assert set(by_id(answer)) == {"d-public", "d-restricted"}
    assert answer.headers["X-Conditions-Evaluated-False"] == "1"
    log = node.live.log_path.read_text()
    assert "unknown key 'EUCAIM_Hyper-Ontology_V1.0.CLIN1037294'" in log
    assert "unknown value 'RID00000'" in log


@pytest.mark.parametrize(
    ("auth", "status"),
    [(None, 401), ("Secret wrong-secret-of-some-length", 401), (f"Secret {SECRET}x", 401),
     (f"secret {SECRET[:-1]}", 401), ("Basic Zm9vOmJhcg==", 401), ("Bearer not-a-token", 401)],
)  # fmt: skip
def test_wrong_credentials(node: Node, auth: str | None, status: int) -> None:
    answer = node.search({"operand": "OR", "children": []}, auth=auth)
    assert answer.status_code == status
    assert answer.json()["status_code"] == status and answer.json()["error"]
    assert "collections" not in answer.text


def test_oauth_scope(node: Node) -> None:
    granted = token(node.live, node.federation_client, "federation:search")
    assert by_id(node.search({"operand": "OR", "children": []}, auth=f"Bearer {granted}"))
    without = token(node.live, node.federation_client, "system/*.rs")
    assert (
        node.search({"operand": "OR", "children": []}, auth=f"Bearer {without}").status_code == 403
    )
    refused = token_response(node.live, node.other_client, "federation:search")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    meta = httpx.get(f"{node.live.url}/.well-known/oauth-authorization-server").json()
    assert "federation:search" in meta["scopes_supported"]


@pytest.mark.parametrize(
    ("content", "ctype", "status"),
    [("{not json", "application/json", 400), ('{"ast": {}}', "text/plain", 400),
     ("[1]", "application/json", 422), ('{"query": {}}', "application/json", 422),
     ('{"ast": {"operand": "XOR", "children": []}}', "application/json", 422),
     ('{"ast": {"operand": "AND"}}', "application/json", 422),
     ('{"ast": {"operand": "AND", "children": {}}}', "application/json", 422),
     ('{"ast": {"operand": "AND", "children": [{"type": "EQUALS"}]}}', "application/json", 422),
     ('{"ast": ' + '{"operand": "AND", "children": [' * 100 + "]}" * 100 + "}", "application/json", 422)],
)  # fmt: skip
def test_malformed_requests_are_4xx(node: Node, content: str, ctype: str, status: int) -> None:
    answer = node.search({}, content=content, headers={"Content-Type": ctype})
    assert answer.status_code == status, answer.text
    assert answer.json()["status_code"] == status


def test_every_search_is_audited(node: Node) -> None:
    node.search(lens([{"key": MOD, "type": "EQUALS", "value": MR}]))
    node.search({"operand": "OR", "children": []}, auth="Secret nope-nope-nope-nope")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        events = [
            orjson.dumps(e).decode() for _, e in tail(node.live.data_dir / "audit.sqlite", 50)
        ]
        ours = [e for e in events if PATH in e]
        if len(ours) >= 2 and any("eucaim-query:" in e and "d-restricted" in e for e in ours):
            break
        time.sleep(0.1)
    assert any(
        "eucaim-query:" in e and "d-restricted" in e and "eucaim-search-secret" in e for e in ours
    )
    assert any("401" in e and "eucaim-search-secret" in e for e in ours)
    node.search(lens([{"key": "no-such-key", "type": "EQUALS", "value": "x"}]))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        events = [orjson.dumps(e).decode() for _, e in tail(node.live.data_dir / "audit.sqlite", 5)]
        if any("eucaim-conditions-false:1" in e for e in events):
            break
        time.sleep(0.1)
    assert any("eucaim-conditions-false:1" in e for e in events)


def test_route_is_404_without_a_configured_secret(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data", extra_env={"GATEWAY_AUTH__ENABLED": "true"}).start()
    try:
        for auth in (f"Secret {SECRET}", None):
            answer = httpx.post(live.url + PATH, json={"ast": {"operand": "OR", "children": []}},
                                headers={"Authorization": auth} if auth else {})  # fmt: skip
            assert answer.status_code == 404
            assert answer.json() == {**answer.json(), "status_code": 404}
    finally:
        live.stop()


def test_count_protection_settings(node: Node) -> None:
    """Minimum count, rounding, and noise kept across restarts (one gateway, restarted)."""
    mr = lens([{"key": MOD, "type": "EQUALS", "value": MR}])
    everything = {"operand": "OR", "children": []}
    try:
        node.restart(GATEWAY_FEDERATION__MIN_COUNT="10")
        found = by_id(node.search(mr))
        assert (
            found["d-restricted"]["studies_count"],
            found["d-restricted"]["subjects_count"],
        ) == (10, 10)
        assert found["d-public"]["studies_count"] == 13  # above the floor: exact
        assert by_id(node.search(lens([{"key": MOD, "type": "EQUALS", "value": "RID10334"}]))) == {}

        node.restart(GATEWAY_FEDERATION__ROUNDING_STEP="5")
        found = by_id(node.search(everything))
        assert found["d-public"]["studies_count"] == 15  # 15 stored
        assert found["d-public"]["subjects_count"] == 15  # 13 patients: nearest multiple of 5
        assert found["d-restricted"]["studies_count"] == 10  # 4: the floor

        node.restart(GATEWAY_FEDERATION__NOISE="true", GATEWAY_FEDERATION__EPSILON="0.05")
        first = [by_id(node.search(everything))["d-public"] for _ in range(3)]
        assert all(c["studies_count"] % 5 == 0 and c["studies_count"] >= 10 for c in first)
        assert len({(c["studies_count"], c["subjects_count"]) for c in first}) == 1
        noise_rows = _noise_rows(node.live.data_dir)
        assert noise_rows >= 2
        node.restart()
        again = by_id(node.search(everything))["d-public"]
        assert (again["studies_count"], again["subjects_count"]) == (
            first[0]["studies_count"],
            first[0]["subjects_count"],
        )
        assert _noise_rows(node.live.data_dir) == noise_rows  # nothing redrawn
    finally:
        for name in ("MIN_COUNT", "ROUNDING_STEP", "NOISE", "EPSILON"):
            node.live.extra_env.pop(f"GATEWAY_FEDERATION__{name}", None)
        node.restart(GATEWAY_FEDERATION__MIN_COUNT="1")


def _noise_rows(data_dir: Path) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{data_dir / 'federation.sqlite'}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM noise").fetchone()[0])

"""A dataset's de-identification policy over FHIR: default, explicit, fixed, validated, never a secret.

One gateway whose default profile is ``basic`` (as shipped). Every way a ResearchStudy is
written (create, update, update-as-create, batch and transaction entries, re-creation
after a delete) either stores a valid policy on it or is refused and changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.researchstudy import ResearchStudy

from tests.deid.policy_helpers import URL, Recorder, policy_ext, policy_of, secrets_on_disk, study
from tests.live import LiveServer


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(
        tmp_path_factory.mktemp("policy") / "data",
        extra_env={"GATEWAY_DEID__DEFAULT_PROFILE": "basic", "GATEWAY_LOG_LEVEL": "debug"},
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rec(live: LiveServer) -> Recorder:
    return Recorder(live)


def _read(rec: Recorder, rid: str) -> dict[str, Any]:
    answer = rec.client.get(f"ResearchStudy/{rid}")
    assert answer.status_code == 200, answer.text
    ResearchStudy.model_validate(answer.json())
    return dict(answer.json())


def _refused(answer: httpx.Response, status: int, *words: str) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text)
    text = " ".join(
        i.diagnostics or "" for i in OperationOutcome.model_validate(answer.json()).issue
    )
    for word in words:
        assert word in text, text
    return text


def test_created_without_a_policy_gets_the_default_written_on_it(rec: Recorder) -> None:
    made = rec.client.post("ResearchStudy", json=study(None))
    assert made.status_code == 201, made.text
    assert policy_of(made.json()) == {"profile": ["basic"], "burnedIn": ["refuse"]}
    assert policy_of(_read(rec, made.json()["id"])) == policy_of(made.json())
    put = rec.client.put("ResearchStudy/put-new", json=study("put-new"))  # update-as-create
    assert put.status_code == 201, put.text
    assert policy_of(_read(rec, "put-new")) == {"profile": ["basic"], "burnedIn": ["refuse"]}


ROUND_TRIP = {
    "rt-none": policy_ext("none"),
    "rt-basic": policy_ext("basic", "retain-uids", "clean-descriptors", burned_in="quarantine"),
    "rt-eucaim": policy_ext("eucaim", provider="SITE-ÅÄ-1"),
}


def _round_trip_datasets(rec: Recorder) -> None:
    for rid, ext in ROUND_TRIP.items():  # the same policy again is no change
        put = rec.client.put(f"ResearchStudy/{rid}", json=study(rid, ext))
        assert put.status_code in (200, 201), put.text


def test_explicit_policies_round_trip_and_none_is_visible(rec: Recorder) -> None:
    _round_trip_datasets(rec)
    assert policy_of(_read(rec, "rt-none")) == {"profile": ["none"], "burnedIn": ["refuse"]}
    assert policy_of(_read(rec, "rt-basic")) == {
        "profile": ["basic"], "option": ["clean-descriptors", "retain-uids"],
        "burnedIn": ["quarantine"]}  # fmt: skip
    assert policy_of(_read(rec, "rt-eucaim")) == {
        "profile": ["eucaim"], "providerId": ["SITE-ÅÄ-1"], "burnedIn": ["refuse"]}  # fmt: skip
    found = rec.client.get("ResearchStudy", params={"_id": "rt-none"})
    entry = Bundle.model_validate(found.json()).entry
    assert entry and policy_of(entry[0].resource.model_dump(mode="json"))["profile"] == ["none"]


def test_an_update_without_the_extension_keeps_the_stored_policy(rec: Recorder) -> None:
    ext = policy_ext("basic", "retain-patient-characteristics")
    assert rec.client.put("ResearchStudy/keep", json=study("keep", ext)).status_code == 201
    again = rec.client.put("ResearchStudy/keep", json=study("keep", title="renamed"))
    assert again.status_code == 200, again.text
    stored = _read(rec, "keep")
    assert stored["title"] == "renamed"
    assert policy_of(stored)["option"] == ["retain-patient-characteristics"]
    same = rec.client.put("ResearchStudy/keep", json=study("keep", ext, title="same policy"))
    assert same.status_code == 200, same.text  # the same policy restated is no change


CHANGES: dict[str, dict[str, Any]] = {
    "another profile": policy_ext("none"),
    "an option added": policy_ext("basic", "retain-patient-characteristics", "retain-uids"),
    "an option removed": policy_ext("basic"),
    "another burned-in policy": policy_ext(
        "basic", "retain-patient-characteristics", burned_in="clean"
    ),
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_changing_the_policy_is_refused_and_changes_nothing(rec: Recorder, change: str) -> None:
    rid = "fixed-" + change.replace(" ", "-")
    first = policy_ext("basic", "retain-patient-characteristics")
    assert rec.client.put(f"ResearchStudy/{rid}", json=study(rid, first)).status_code == 201
    before = _read(rec, rid)
    changed = study(rid, CHANGES[change], title="changed")
    _refused(
        rec.client.put(f"ResearchStudy/{rid}", json=changed), 409, "rotation means a new dataset"
    )
    assert _read(rec, rid) == before  # same version, same title, same policy
    _refused(_bundle(rec, "transaction", [_put_entry(changed)]), 409, "rotation")
    batch = _bundle(rec, "batch", [_put_entry(changed)])
    assert batch.status_code == 200 and batch.json()["entry"][0]["response"]["status"] == "409"
    assert _read(rec, rid) == before


def test_a_deleted_dataset_id_keeps_its_policy(rec: Recorder) -> None:
    made = rec.client.put("ResearchStudy/reborn", json=study("reborn", policy_ext("none")))
    assert made.status_code == 201
    assert rec.client.delete("ResearchStudy/reborn").status_code in (200, 204)
    _refused(rec.client.put("ResearchStudy/reborn", json=study("reborn", policy_ext("basic"))),
             409, "rotation")  # fmt: skip
    assert rec.client.get("ResearchStudy/reborn").status_code == 410
    back = rec.client.put("ResearchStudy/reborn", json=study("reborn"))
    assert back.status_code == 201 and policy_of(back.json())["profile"] == ["none"]


def _with_ext(ext: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda r: r["extension"].append(ext)


def _edit_sub(url: str, **change: Any) -> Callable[[dict[str, Any]], None]:
    def edit(r: dict[str, Any]) -> None:
        r["extension"].append(policy_ext("basic"))
        r["extension"][-1]["extension"].append({"url": url, **change})

    return edit


INVALID: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown profile": (_with_ext(policy_ext("strict")), "unknown de-identification profile"),
    "unknown option": (_with_ext(policy_ext("basic", "retain-secrets")), "unknown de-identification option"),
    "option with eucaim": (_with_ext(policy_ext("eucaim", "retain-uids", provider="S")), "basic profile only"),
    "option with none": (_with_ext(policy_ext("none", "retain-uids")), "basic profile only"),
    "eucaim without provider": (_with_ext(policy_ext("eucaim")), "provider id"),
    "provider with basic": (_with_ext(policy_ext("basic", provider="S")), "eucaim profile only"),
    "blank provider": (_with_ext(policy_ext("eucaim", provider=" S ")), "provider id"),
    "unknown burned-in": (_with_ext(policy_ext("basic", burned_in="ignore")), "burned-in"),
    "both longitudinal options": (_with_ext(policy_ext(
        "basic", "retain-longitudinal-full-dates", "retain-longitudinal-modified-dates")), "Longitudinal"),
    "option twice": (_with_ext(policy_ext("basic", "retain-uids", "retain-uids")), "more than once"),
    "profile twice": (_edit_sub("profile", valueCode="none"), "more than once"),
    "unknown sub-extension": (_edit_sub("salt", valueString="x"), "unknown sub-extension"),
    "profile as a string": (_edit_sub("burnedIn", valueString="refuse"), "needs a valueCode"),
    "no profile": (_with_ext({"url": policy_ext("basic")["url"],
                              "extension": [{"url": "burnedIn", "valueCode": "refuse"}]}), "profile"),
    "two extensions": (lambda r: r["extension"].extend([policy_ext("basic"), policy_ext("none")]), "not several"),
    "a value instead of sub-extensions": (
        _with_ext({"url": policy_ext("basic")["url"], "valueCode": "basic"}), "not a value"),
}  # fmt: skip


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_invalid_policies_are_422_and_store_nothing(rec: Recorder, case: str) -> None:
    edit, words = INVALID[case]
    body = study("invalid-case")
    edit(body)
    _refused(rec.client.put("ResearchStudy/invalid-case", json=body), 422, words)
    assert rec.client.get("ResearchStudy/invalid-case").status_code == 404
    created = rec.client.post("ResearchStudy", json={k: v for k, v in body.items() if k != "id"})
    _refused(created, 422, words)
    _refused(_bundle(rec, "transaction", [_put_entry(body)]), 422, words)
    assert rec.client.get("ResearchStudy/invalid-case").status_code == 404


# What the profile itself expresses (codes, cardinality, closed slicing); the rules between
# sub-extensions (options with basic only, eucaim needs a provider id) are the write path's.
STRUCTURAL = ("unknown profile", "unknown option", "unknown burned-in", "profile twice",
              "no profile", "unknown sub-extension", "a value instead of sub-extensions")  # fmt: skip


def _ours(rec: Recorder, resource: dict[str, Any]) -> list[str]:
    answer = rec.client.post("ResearchStudy/$validate", json=resource)
    assert answer.status_code == 200, answer.text
    issues = OperationOutcome.model_validate(answer.json()).issue
    return [i.diagnostics or "" for i in issues if i.severity in ("error", "fatal")]


def test_validate_and_the_hl7_validator_agree_with_the_writes(rec: Recorder) -> None:
    """Served policies pass $validate and the HL7 validator; what the profile forbids fails both."""
    from tests.fhir.validator import hl7_validator

    validator = hl7_validator()
    _round_trip_datasets(rec)
    for rid in [*ROUND_TRIP, "put-new"]:
        served = _read(rec, rid) if rid != "put-new" else study("put-new", policy_ext("basic"))
        assert _ours(rec, served) == [], rid
        assert validator.errors(served) == [], rid
    for case in STRUCTURAL:
        body = copy.deepcopy(_read(rec, "rt-none"))
        body["extension"] = [e for e in body["extension"] if e["url"] != URL]
        INVALID[case][0](body)
        assert _ours(rec, body), f"$validate accepts {case}"
        assert validator.errors(body), f"the HL7 validator accepts {case}"


def test_no_secret_in_any_response_or_the_log(live: LiveServer, rec: Recorder) -> None:
    secrets = list(secrets_on_disk(live.data_dir).values())
    assert len(secrets) >= 3  # this module's datasets got theirs on creation or first use
    assert rec.seen and rec.leaked(secrets) == []
    log = live.log_path.read_text(errors="replace")
    assert [s for s in secrets if s in log] == []


def test_secret_files_are_private(live: LiveServer) -> None:
    folder = live.data_dir / "pseudonym-secrets"
    assert folder.stat().st_mode & 0o777 == 0o700
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path


def _put_entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource,
            "request": {"method": "PUT", "url": f"ResearchStudy/{resource['id']}"}}  # fmt: skip


def _bundle(rec: Recorder, kind: str, entries: list[dict[str, Any]]) -> httpx.Response:
    return rec.client.post("", json={"resourceType": "Bundle", "type": kind, "entry": entries})

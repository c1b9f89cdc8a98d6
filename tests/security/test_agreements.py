"""Data-access agreements (FHIR Contract): activity, parties, grants and the agreement cache."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.contract import Contract

from server.index.fhir_store import FhirStore
from server.security.agreements import (
    ACCESS_CONDITION,
    CLIENT_SYSTEM,
    PROFILE,
    AgreementCache,
    contract_parties,
    grants_for,
    is_active,
    load_contracts,
    matches,
    new_contract,
)
from server.security.model import Condition, Grant, Party

REPO = Path(__file__).resolve().parents[2]
ISSUER = "https://login.example.org/realms/research"
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
ALICE = Party(client_id="alice-app", organization="uni-a")
BOB = Party(client_id="bob-app", organization="uni-b")
USER = Party(issuer=ISSUER, subject="user-42")


def contract(
    cid: str = "daa-1",
    datasets: tuple[str, ...] = ("lung-ct",),
    condition: Condition = Condition.DOWNLOAD,
    **kw: Any,
) -> dict[str, Any]:
    kw.setdefault("start", "2026-01-01")
    if not any(k in kw for k in ("organization", "client_id", "issuer")):
        kw["organization"] = "uni-a"
    return new_contract(contract_id=cid, datasets=list(datasets), condition=condition, **kw)


# -- the resource and the profile ----------------------------------------------
def _profile() -> dict[str, Any]:
    path = REPO / "profiles" / "StructureDefinition-daa-contract.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _values(node: Any, path: list[str]) -> list[Any]:
    items = node if isinstance(node, list) else [node]
    if not path:
        return items
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict) and path[0] in item:
            out += _values(item[path[0]], path[1:])
    return out


def _profile_issues(resource: dict[str, Any]) -> list[str]:
    """Minimum/maximum cardinalities and the required access-condition binding of the profile."""
    codes = {
        c["code"]
        for c in json.loads(
            (REPO / "terminology" / "CodeSystem-access-condition.json").read_text()
        )["concept"]
    }
    issues = []
    for element in _profile()["differential"]["element"]:
        path = element["path"].split(".")[1:]
        if not path:
            continue
        for parent in _values(resource, path[:-1]):
            count = len(_values(parent, path[-1:]))
            if count < element.get("min", 0):
                issues.append(f"{element['path']}: fewer than {element['min']}")
            if element.get("max", "*") != "*" and count > int(element["max"]):
                issues.append(f"{element['path']}: more than {element['max']}")
        if element.get("binding", {}).get("strength") == "required":
            for concept in _values(resource, path):
                if not any(
                    c.get("system") == ACCESS_CONDITION and c.get("code") in codes
                    for c in concept.get("coding", [])
                ):
                    issues.append(f"{element['path']}: not in the access-condition value set")
    return issues


def test_profile_states_the_representation() -> None:
    profile = _profile()
    assert profile["type"] == "Contract" and profile["fhirVersion"] == "4.0.1"
    assert profile["url"] == PROFILE
    elements = {e["path"]: e for e in profile["differential"]["element"]}
    for path in ("Contract.status", "Contract.applies", "Contract.subject"):
        assert elements[path]["min"] == 1
    assert elements["Contract.subject"]["type"][0]["targetProfile"] == [
        "http://hl7.org/fhir/StructureDefinition/ResearchStudy"
    ]
    binding = elements["Contract.term.action.type"]["binding"]
    value_set = json.loads((REPO / "terminology" / "ValueSet-access-condition.json").read_text())
    assert binding == {"strength": "required", "valueSet": value_set["url"]}


@pytest.mark.parametrize(
    "party",
    [
        {"organization": "uni-a"},
        {"client_id": "alice-app"},
        {"issuer": ISSUER, "subject": "user-42"},
        {"organization": "uni-a", "client_id": "x", "issuer": ISSUER, "subject": "s"},
    ],
)
@pytest.mark.parametrize("condition", list(Condition))
def test_new_contract_is_valid_r4_and_follows_the_profile(
    party: dict[str, str], condition: Condition
) -> None:
    resource = contract(datasets=("lung-ct", "breast-mg"), condition=condition, end="2027", **party)
    Contract.model_validate(resource)
    assert _profile_issues(resource) == []
    assert resource["meta"]["profile"] == [PROFILE]
    assert resource["status"] == "executed"
    assert resource["applies"] == {"start": "2026-01-01", "end": "2027"}
    assert resource["subject"] == [
        {"reference": "ResearchStudy/lung-ct"},
        {"reference": "ResearchStudy/breast-mg"},
    ]
    action = resource["term"][0]["action"][0]
    assert action["type"]["coding"][0]["code"] == condition.value
    assert action["intent"]["coding"][0]["code"] == "HRESCH"


def test_profile_check_catches_missing_elements() -> None:
    resource = contract()
    del resource["applies"]
    resource["subject"] = []
    resource["term"][0]["action"][0]["type"] = {"coding": [{"code": "peek"}]}
    issues = _profile_issues(resource)
    assert any("Contract.applies" in i for i in issues)
    assert any("Contract.subject" in i for i in issues)
    assert any("Contract.term.action.type" in i for i in issues)


def test_new_contract_defaults_start_to_now() -> None:
    resource = new_contract(
        contract_id="x", datasets=["d"], condition=Condition.REMOTE, client_id="c"
    )
    start = datetime.fromisoformat(resource["applies"]["start"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - start).total_seconds()) < 5
    assert "end" not in resource["applies"]
    assert is_active(resource, datetime.now(UTC))


@pytest.mark.parametrize(
    "kw",
    [
        {"datasets": []},
        {"issuer": ISSUER},
        {"subject": "only-subject"},
        {"start": "2026-13-01"},
        {"start": "2027-01-01", "end": "2026-01-01"},
        {"start": "yesterday"},
    ],
)
def test_new_contract_rejects_agreements_that_grant_nothing(kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {
        "contract_id": "x",
        "datasets": ["d"],
        "condition": Condition.DOWNLOAD,
        "client_id": None if "issuer" in kw or "subject" in kw else "c",
    }
    with pytest.raises(ValueError):
        new_contract(**{**args, **kw})


def test_new_contract_rejects_no_party() -> None:
    with pytest.raises(ValueError):
        new_contract(contract_id="x", datasets=["d"], condition=Condition.DOWNLOAD)


# -- activity ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "active"),
    [
        ("executed", True),
        ("revoked", False),
        ("terminated", False),
        ("cancelled", False),
        ("entered-in-error", False),
        ("disputed", False),
        ("offered", False),
        ("policy", False),
    ],
)
def test_only_executed_is_active(status: str, active: bool) -> None:
    assert is_active({**contract(), "status": status}, NOW) is active


def test_missing_status_or_applies_is_inactive() -> None:
    resource = contract()
    assert not is_active({k: v for k, v in resource.items() if k != "status"}, NOW)
    assert not is_active({k: v for k, v in resource.items() if k != "applies"}, NOW)


@pytest.mark.parametrize(
    ("applies", "active"),
    [
        ({"start": "2026-01-01", "end": "2026-12-31"}, True),
        ({"start": "2026-07-01"}, False),  # before start
        ({"end": "2026-06-14"}, False),  # after end
        ({"end": "2026-06-15"}, True),  # the end date is inclusive
        ({"start": "2026-06-15"}, True),
        ({"start": "2026-06-15T12:00:01Z"}, False),
        ({"start": "2026-06-15T12:00:00Z", "end": "2026-06-15T12:00:00Z"}, True),
        ({"end": "2026-06-15T11:59:59Z"}, False),
        ({"end": "2026-06-15T13:59:59+02:00"}, False),  # 11:59:59 UTC
        ({"end": "2026-06-15T14:00:00+02:00"}, True),
        ({"start": "2026-06"}, True),
        ({"end": "2026-05"}, False),
        ({"end": "2026"}, True),
        ({"start": "2027"}, False),
        ({"end": "2025-12"}, False),
        ({"start": "2026-01-01"}, True),  # open end
        ({"end": "2030-01-01"}, True),  # open start
        ({}, True),  # both open
        ({"start": "not a date"}, False),  # unreadable: grants nothing
    ],
)
def test_period(applies: dict[str, str], active: bool) -> None:
    assert is_active({**contract(), "applies": applies}, NOW) is active


def test_naive_now_is_utc() -> None:
    resource = {**contract(), "applies": {"end": "2026-06-15T12:00:00Z"}}
    assert is_active(resource, datetime(2026, 6, 15, 12, 0))
    assert not is_active(resource, datetime(2026, 6, 15, 12, 0, 1))


# -- parties -------------------------------------------------------------------
def test_contract_parties() -> None:
    resource = contract(organization="uni-a", client_id="alice-app", issuer=ISSUER, subject="u")
    assert contract_parties(resource) == [
        Party(organization="uni-a"),
        Party(client_id="alice-app"),
        Party(issuer=ISSUER, subject="u"),
    ]
    refs = [p["reference"][0] for p in resource["term"][0]["offer"]["party"]]
    assert refs == [
        {"reference": "Organization/uni-a"},
        {"identifier": {"system": CLIENT_SYSTEM, "value": "alice-app"}},
        {"identifier": {"system": ISSUER, "value": "u"}},
    ]


def test_contract_parties_ignores_other_references() -> None:
    resource = contract()
    resource["term"][0]["offer"]["party"].append(
        {"reference": [{"reference": "Practitioner/p1"}, {"display": "someone"}], "role": {}}
    )
    resource["term"][0]["offer"]["party"].append(
        {"reference": [{"reference": "https://other.example/fhir/Organization/uni-b"}]}
    )
    assert contract_parties(resource) == [Party(organization="uni-a"), Party(organization="uni-b")]


@pytest.mark.parametrize(
    ("party", "caller", "expected"),
    [
        (Party(organization="uni-a"), ALICE, True),
        (Party(organization="uni-a"), BOB, False),
        (Party(client_id="alice-app"), ALICE, True),
        (Party(client_id="alice-app"), Party(client_id="alice-app"), True),
        (Party(client_id="alice-app"), BOB, False),
        (Party(issuer=ISSUER, subject="user-42"), USER, True),
        (Party(issuer=ISSUER, subject="user-42"), Party(issuer=ISSUER, subject="user-43"), False),
        (
            Party(issuer=ISSUER, subject="user-42"),
            Party(issuer="https://x", subject="user-42"),
            False,
        ),
        (Party(issuer=ISSUER, subject="user-42"), Party(subject="user-42"), False),
        (Party(), Party(), False),  # nothing named matches nothing
        (Party(organization="uni-a"), Party(client_id="uni-a"), False),
    ],
)
def test_matches(party: Party, caller: Party, expected: bool) -> None:
    assert matches(party, caller) is expected


# -- grants --------------------------------------------------------------------
def test_grants_for_organisation_client_and_user() -> None:
    contracts = [
        contract("org", ("d1",), Condition.REMOTE, organization="uni-a"),
        contract("cli", ("d2",), Condition.IN_SITU, client_id="alice-app", purpose="HTEST"),
        contract("usr", ("d3",), Condition.DOWNLOAD, issuer=ISSUER, subject="user-42"),
    ]
    assert grants_for(ALICE, contracts, NOW) == {
        "d1": Grant("d1", Condition.REMOTE, "org", "HRESCH"),
        "d2": Grant("d2", Condition.IN_SITU, "cli", "HTEST"),
    }
    assert grants_for(USER, contracts, NOW) == {
        "d3": Grant("d3", Condition.DOWNLOAD, "usr", "HRESCH")
    }
    assert grants_for(BOB, contracts, NOW) == {}
    assert grants_for(Party(), contracts, NOW) == {}


def test_every_subject_dataset_is_granted() -> None:
    grants = grants_for(ALICE, [contract(datasets=("d1", "d2", "d3"))], NOW)
    assert sorted(grants) == ["d1", "d2", "d3"]
    assert {g.agreement for g in grants.values()} == {"daa-1"}


def test_several_agreements_keep_the_most_permissive_condition() -> None:
    contracts = [
        contract("a", ("d1", "d2"), Condition.REMOTE),
        contract("b", ("d1",), Condition.DOWNLOAD, client_id="alice-app"),
        contract("c", ("d1", "d2"), Condition.IN_SITU),
    ]
    for order in (contracts, contracts[::-1]):
        grants = grants_for(ALICE, order, NOW)
        assert grants["d1"] == Grant("d1", Condition.DOWNLOAD, "b", "HRESCH")
        assert grants["d2"] == Grant("d2", Condition.IN_SITU, "c", "HRESCH")


def test_equal_conditions_choose_the_same_agreement_whatever_the_order() -> None:
    contracts = [contract("b", ("d1",)), contract("a", ("d1",))]
    assert grants_for(ALICE, contracts, NOW)["d1"].agreement == "a"
    assert grants_for(ALICE, contracts[::-1], NOW)["d1"].agreement == "a"


def test_revoked_and_expired_agreements_contribute_nothing() -> None:
    contracts = [
        contract("open", ("d1",), Condition.REMOTE),
        {**contract("revoked", ("d1", "d2"), Condition.DOWNLOAD), "status": "revoked"},
        contract("expired", ("d1", "d3"), Condition.DOWNLOAD, end="2026-06-14"),
        contract("future", ("d4",), Condition.DOWNLOAD, start="2026-07-01"),
    ]
    assert grants_for(ALICE, contracts, NOW) == {
        "d1": Grant("d1", Condition.REMOTE, "open", "HRESCH")
    }


def test_unreadable_conditions_and_subjects_grant_nothing() -> None:
    resource = contract(datasets=("d1",))
    resource["subject"].append({"reference": "Group/g1"})
    resource["term"][0]["action"].append(
        {"type": {"coding": [{"system": "urn:other", "code": "download"}]}}
    )
    resource["term"][0]["action"][0]["type"]["coding"][0]["code"] = "peek"
    assert grants_for(ALICE, [resource], NOW) == {}


# -- the cache -----------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Source:
    """The agreements a store would hold, counting how often they are read."""

    def __init__(self, contracts: list[dict[str, Any]]) -> None:
        self.contracts = contracts
        self.loads = 0

    def __call__(self) -> list[dict[str, Any]]:
        self.loads += 1
        return list(self.contracts)


def test_cache_serves_within_ttl_and_reloads_after() -> None:
    source, clock = Source([contract("a", ("d1",))]), Clock()
    cache = AgreementCache(source, ttl=2.0, clock=clock)
    assert set(cache.grants(ALICE, NOW)) == {"d1"}
    source.contracts = [{**contract("a", ("d1",)), "status": "revoked"}]
    clock.now += 1.9
    assert set(cache.grants(ALICE, NOW)) == {"d1"}  # still cached
    assert source.loads == 1
    clock.now += 0.1
    assert cache.grants(ALICE, NOW) == {}  # revocation effective after ttl
    assert source.loads == 2


def test_cache_invalidate_forces_a_reload() -> None:
    source, clock = Source([]), Clock()
    cache = AgreementCache(source, ttl=60.0, clock=clock)
    assert cache.grants(ALICE, NOW) == {}
    source.contracts = [contract("a", ("d1",), Condition.IN_SITU)]
    assert cache.grants(ALICE, NOW) == {}
    cache.invalidate()
    assert cache.grants(ALICE, NOW) == {"d1": Grant("d1", Condition.IN_SITU, "a", "HRESCH")}
    assert source.loads == 2


def test_cache_finds_parties_of_every_kind_and_checks_periods_per_lookup() -> None:
    source = Source(
        [
            contract("org", ("d1",), organization="uni-a", end="2026-06-30"),
            contract("cli", ("d2",), client_id="bob-app"),
            contract("usr", ("d3",), issuer=ISSUER, subject="user-42"),
        ]
    )
    cache = AgreementCache(source, ttl=60.0, clock=Clock())
    assert set(cache.grants(ALICE, NOW)) == {"d1"}
    assert set(cache.grants(BOB, NOW)) == {"d2"}
    assert set(cache.grants(USER, NOW)) == {"d3"}
    assert cache.grants(ALICE, datetime(2026, 7, 1, tzinfo=UTC)) == {}  # expired, no reload
    assert source.loads == 1


def test_cache_without_now_uses_the_current_time() -> None:
    resource = new_contract(
        contract_id="a", datasets=["d1"], condition=Condition.DOWNLOAD, client_id="alice-app"
    )
    assert set(AgreementCache(Source([resource])).grants(ALICE)) == {"d1"}


def test_load_contracts_from_the_store(tmp_path: Path) -> None:
    store = FhirStore(tmp_path / "fhir.sqlite")
    try:
        store.put(contract("a", ("d1",)))
        store.put(contract("b", ("d2",)))
        store.put(contract("gone", ("d3",)))
        store.delete("Contract", "gone")
        cache = AgreementCache(lambda: load_contracts(store), ttl=60.0, clock=Clock())
        assert set(cache.grants(ALICE, NOW)) == {"d1", "d2"}
        current, _ = store.read("Contract", "b")
        assert current is not None
        store.put({**current, "status": "revoked"})
        cache.invalidate()
        assert set(cache.grants(ALICE, NOW)) == {"d1"}
        assert sorted(c["id"] for c in load_contracts(store)) == ["a", "b"]
    finally:
        store.close()


# -- the command line ----------------------------------------------------------
def test_daa_command_line_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from server.cli.daa import daa
    from server.cli.datasets import dataset

    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))  # restored afterwards
    data = ["--data-dir", str(tmp_path / "data")]
    runner = CliRunner()
    created = runner.invoke(dataset, ["create", "lung-ct", "--title", "Lung", *data])
    assert created.exit_code == 0, created.output
    args = ["create", "daa-1", "--dataset", "lung-ct", "--condition", "in-situ-processing"]
    result = runner.invoke(daa, [*args, "--client", "alice-app", "--end", "2099-12-31", *data])
    assert result.exit_code == 0, result.output
    assert "created Contract/daa-1" in result.output
    unknown = runner.invoke(daa, [*args[:3], "nope", *args[4:], "--client", "c", *data])
    assert unknown.exit_code != 0 and "nope" in unknown.output
    listed = runner.invoke(daa, ["list", *data])
    assert listed.output.split("\t")[0] == "daa-1"
    assert "executed" in listed.output and "client:alice-app" in listed.output
    revoked = runner.invoke(daa, ["revoke", "daa-1", *data])
    assert revoked.exit_code == 0 and "version 2" in revoked.output, revoked.output
    store = FhirStore(tmp_path / "data" / "fhir.sqlite")
    try:
        contracts = load_contracts(store)
    finally:
        store.close()
    assert [c["status"] for c in contracts] == ["revoked"]
    assert grants_for(Party(client_id="alice-app"), contracts, NOW) == {}

"""The audit trail over HTTP (FHIR AuditEvent, IHE BALP) and its tamper check, and identities
from an external OpenID provider: its tokens used directly, and exchanged (RFC 8693).

The "provider" is a second gateway: its access tokens are JWTs, its RFC 8414 metadata names
its jwks_uri, and its tokens carry ``sub`` = the client id registered there.
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
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.live import LiveServer, free_port
from tests.security.conftest import (
    AS_SENT,
    JWT_TOKEN_TYPE,
    TOKEN_EXCHANGE,
    Registered,
    Study,
    add_client,
    audit_query,
    auth_env,
    bearer,
    challenge,
    claims_of,
    cli_ok,
    expect,
    store_study,
    token,
)

A, C = "breast-shared-a", "breast-hidden-c"
CLIENT_ID_SYSTEM = "https://cancer-imaging-gateway.eu/fhir/sid/client-id"
ACTION_SYSTEM = "https://cancer-imaging-gateway.eu/fhir/CodeSystem/access-action"


@dataclass
class Federation:
    gateway: LiveServer
    provider: LiveServer
    a: Study
    c: Study
    x: Registered
    admin: Registered
    user: Registered  # registered at the provider; agreements name it by issuer + subject
    stranger: Registered  # also at the provider, named by no agreement
    x_token: str

    def admin_token(self) -> str:
        return token(self.gateway, self.admin)

    def provider_token(self, who: Registered | None = None) -> str:
        return token(self.provider, who or self.user)

    def get(self, path: str, access_token: str | None, **params: str) -> httpx.Response:
        return httpx.get(f"{self.gateway.url}{path}", params=params or None,
                         headers=bearer(access_token), timeout=30)  # fmt: skip


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("federation")
    provider = LiveServer(root / "provider", extra_env=auth_env(), port=free_port())
    user = add_client(provider, "researcher-at-provider")
    stranger = add_client(provider, "someone-else-at-provider")
    # the provider is another gateway: its tokens name itself as audience
    issuers = json.dumps([{"issuer": provider.url, "audience": provider.url}])
    gateway = LiveServer(
        root / "gateway", extra_env=auth_env(GATEWAY_AUTH__EXTERNAL_ISSUERS=issuers)
    )
    for dataset in (A, C):
        cli_ok(gateway, "dataset", "create", dataset, "--title", dataset, "--cancer-type", "breast",
               *AS_SENT)  # fmt: skip
    pusher = add_client(gateway, "pacs", "--store", A, "--store", C)
    x = add_client(gateway, "analysis-x", "--organization", "org-x")
    admin = add_client(gateway, "operator", "--admin")
    cli_ok(gateway, "daa", "create", "daa-x-a", "--dataset", A, "--condition", "download",
           "--organization", "org-x")  # fmt: skip
    cli_ok(gateway, "daa", "create", "daa-y-c", "--dataset", C, "--condition", "download",
           "--organization", "org-y")  # fmt: skip
    cli_ok(gateway, "daa", "create", "daa-user-a", "--dataset", A, "--condition", "download",
           "--issuer", provider.url, "--subject", user.client_id)  # fmt: skip
    provider.start()
    try:
        gateway.start()
        push = token(gateway, pusher)
        yield Federation(
            gateway=gateway, provider=provider, a=store_study(gateway, A, push),
            c=store_study(gateway, C, push), x=x, admin=admin, user=user, stranger=stranger,
            x_token=token(gateway, x),
        )  # fmt: skip
    finally:
        gateway.stop()
        provider.stop()


def _instance(s: Study) -> str:
    return f"/dicom-web/studies/{s.study_uid}/series/{s.series_uid}/instances/{s.sop_uid}"


def _events(fed: Federation, **params: str) -> list[AuditEvent]:
    answer = fed.get("/fhir/AuditEvent", fed.admin_token(), _count="500", **params)
    assert answer.status_code == 200, answer.text
    found = Bundle.model_validate(answer.json())
    events = [e.resource for e in found.entry or []]
    assert all(isinstance(e, AuditEvent) for e in events)
    return events  # type: ignore[return-value]


def _request_line(event: AuditEvent) -> str:
    for entity in event.entity or []:
        if entity.what is None and entity.description:
            return str(entity.description)
    return ""


def _client_of(event: AuditEvent) -> str | None:
    for agent in event.agent:
        who = agent.who
        if (
            who is not None
            and who.identifier is not None
            and (who.identifier.system == CLIENT_ID_SYSTEM)
        ):
            return who.identifier.value
    return None


def _action(event: AuditEvent) -> str | None:
    return next((c.code for c in event.subtype or [] if c.system == ACTION_SYSTEM), None)


def _wait_for(fed: Federation, match: Any, **params: str) -> list[AuditEvent]:
    deadline = time.monotonic() + 5
    while True:
        found = [e for e in _events(fed, **params) if match(e)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


# ---------------------------------------------------------------------- audit


def test_accesses_and_refusals_are_audited(fed: Federation) -> None:
    marker = f"AccessionNumber=audit{time.time_ns() % 10**9}"
    ok = fed.get(f"/dicom-web/studies?{marker}", fed.x_token)
    assert ok.status_code == 200
    assert fed.get(_instance(fed.c), fed.x_token).status_code == 404
    assert fed.get(_instance(fed.a), fed.x_token).status_code == 200
    assert fed.get("/fhir/ImagingStudy", None).status_code == 401
    assert fed.get("/fhir/AuditEvent", fed.x_token).status_code == 403

    mine = _wait_for(fed, lambda e: _request_line(e) == "GET /fhir/AuditEvent",
                     agent=fed.x.client_id)  # fmt: skip
    events = _events(fed, agent=fed.x.client_id)
    assert mine and all(_client_of(e) == fed.x.client_id for e in events)
    by_line: dict[str, list[AuditEvent]] = {}
    for event in events:
        by_line.setdefault(_request_line(event), []).append(event)

    search = [e for e in by_line["GET /dicom-web/studies"] if audit_query(e) == marker]
    assert len(search) == 1
    assert search[0].outcome == "0" and _action(search[0]) == "search"
    assert search[0].action == "E"
    policies = {p for agent in search[0].agent for p in agent.policy or []}
    assert policies == {"Contract/daa-x-a"}
    assert search[0].purposeOfEvent and search[0].purposeOfEvent[0].coding[0].code == "HRESCH"

    refused = by_line[f"GET {_instance(fed.c)}"]
    assert [e.outcome for e in refused] == ["4"] and refused[0].outcomeDesc.startswith("HTTP 404")
    allowed = by_line[f"GET {_instance(fed.a)}"]
    assert [e.outcome for e in allowed] == ["0"] and _action(allowed[0]) == "retrieve"
    assert [e.outcome for e in by_line["GET /fhir/AuditEvent"]] == ["4"]

    anonymous = [e for e in _events(fed, outcome="4")
                 if _request_line(e) == "GET /fhir/ImagingStudy" and _client_of(e) is None]  # fmt: skip
    assert anonymous and anonymous[-1].outcomeDesc.startswith("HTTP 401")
    assert anonymous[-1].agent[0].who.display == "anonymous"

    only_refused = _events(fed, agent=fed.x.client_id, outcome="4")
    assert only_refused and {e.outcome for e in only_refused} == {"4"}

    # the token request that issued X's token, classified as what it was
    issued = by_line["POST /oauth/token"]
    assert issued and {e.outcome for e in issued} == {"0"}
    assert {_action(e) for e in issued} == {"token"}, [_action(e) for e in issued]


def test_audit_events_are_for_administrators_only(fed: Federation) -> None:
    challenge(expect(fed.get("/fhir/AuditEvent", fed.x_token), 403), 403)
    challenge(expect(fed.get("/fhir/AuditEvent", None), 401))
    some = fed.get("/fhir/AuditEvent", fed.admin_token(), _count="1")
    assert some.status_code == 200 and len(some.json()["entry"]) == 1


# ---------------------------------------------------------------------- external identities


def test_provider_token_used_directly(fed: Federation) -> None:
    external = fed.provider_token()
    claims = claims_of(external)
    assert claims["iss"] == fed.provider.url and claims["sub"] == fed.user.client_id
    hidden = fed.c.secrets
    studies = expect(fed.get("/dicom-web/studies", external), 200, hidden).json()
    assert [row["0020000D"]["Value"][0] for row in studies] == [fed.a.study_uid]
    expect(fed.get(_instance(fed.a), external), 200, hidden)
    expect(fed.get(_instance(fed.c), external), 404, hidden)
    found = expect(fed.get("/fhir/ResearchStudy", external), 200, hidden).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [A]
    expect(fed.get(f"/fhir/ImagingStudy/{fed.c.study_uid}", external), 404, hidden)
    # an external identity is never an administrator
    challenge(expect(fed.get("/fhir/AuditEvent", external), 403), 403)

    audited = _wait_for(
        fed,
        lambda e: any(
            a.who and a.who.identifier and a.who.identifier.value == fed.user.client_id
            and a.who.identifier.system == fed.provider.url
            for a in e.agent
        ),
        entity=f"study:{fed.a.study_uid}",
    )  # fmt: skip
    assert audited and {e.outcome for e in audited} == {"0"}


def test_provider_user_without_an_agreement_sees_nothing(fed: Federation) -> None:
    external = fed.provider_token(fed.stranger)
    hidden = fed.a.secrets | fed.c.secrets
    assert expect(fed.get("/dicom-web/studies", external), 200, hidden).json() == []
    expect(fed.get(_instance(fed.a), external), 404, hidden)


def test_token_exchange(fed: Federation) -> None:
    external = fed.provider_token()
    answer = httpx.post(f"{fed.gateway.url}/oauth/token", data={
        "grant_type": TOKEN_EXCHANGE, "subject_token": external,
        "subject_token_type": JWT_TOKEN_TYPE})  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer"
    assert f"dataset:{A}" in body["scope"].split() and C not in body["scope"]
    local = body["access_token"]
    claims = claims_of(local)
    assert claims["iss"] == fed.gateway.url and claims["aud"] == fed.gateway.url
    assert claims["ext_iss"] == fed.provider.url and claims["ext_sub"] == fed.user.client_id
    hidden = fed.c.secrets
    studies = expect(fed.get("/dicom-web/studies", local), 200, hidden).json()
    assert [row["0020000D"]["Value"][0] for row in studies] == [fed.a.study_uid]
    expect(fed.get(_instance(fed.a), local), 200, hidden)
    expect(fed.get(_instance(fed.c), local), 404, hidden)

    narrowed = httpx.post(f"{fed.gateway.url}/oauth/token", data={
        "grant_type": TOKEN_EXCHANGE, "subject_token": external,
        "subject_token_type": JWT_TOKEN_TYPE,
        "scope": f"system/*.rs dataset:{A} dataset:{C}"})  # fmt: skip
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == f"system/*.rs dataset:{A}"


@pytest.mark.parametrize("problem", ["local token", "unknown issuer", "no token", "wrong type"])
def test_token_exchange_refusals(fed: Federation, problem: str) -> None:
    subject, kind = fed.provider_token(), JWT_TOKEN_TYPE
    if problem == "local token":  # the gateway's own tokens are not an external identity
        subject = fed.x_token
    elif problem == "unknown issuer":
        subject = _self_issued("http://127.0.0.1:9/unknown", fed.user.client_id)
    elif problem == "no token":
        subject = ""
    elif problem == "wrong type":
        kind = "urn:ietf:params:oauth:token-type:saml2"
    answer = httpx.post(f"{fed.gateway.url}/oauth/token", data={
        "grant_type": TOKEN_EXCHANGE, "subject_token": subject, "subject_token_type": kind})  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] in ("invalid_grant", "invalid_request")
    assert "access_token" not in answer.json()


def _self_issued(issuer: str, subject: str) -> str:
    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    now = int(time.time())
    claims = {"iss": issuer, "sub": subject, "aud": issuer, "iat": now, "nbf": now,
              "exp": now + 300, "jti": f"j{now}", "client_id": subject, "scope": "system/*.rs"}  # fmt: skip
    return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}, claims, key)


def test_tokens_of_unconfigured_issuers_are_401(fed: Federation) -> None:
    hidden = fed.a.secrets | fed.c.secrets
    # the gateway's token at the provider, which trusts no other issuer
    at_provider = httpx.get(f"{fed.provider.url}/dicom-web/studies", headers=bearer(fed.x_token))
    challenge(expect(at_provider, 401, hidden))
    for forged in (
        _self_issued("http://127.0.0.1:9/unknown", fed.user.client_id),
        _self_issued(fed.provider.url, fed.user.client_id),  # right issuer, not its key
    ):
        challenge(expect(fed.get("/dicom-web/studies", forged), 401, hidden))
        challenge(expect(fed.get("/fhir/ImagingStudy", forged), 401, hidden))


# ---------------------------------------------------------------------- tamper check (last)


def test_zip_and_wado_uri_downloads_are_audited_as_retrievals_of_the_study(
    fed: Federation,
) -> None:
    study = f"/dicom-web/studies/{fed.a.study_uid}"
    assert fed.get(f"{study}?accept=application/zip", fed.x_token).status_code == 200
    uri = (f"/wado?requestType=WADO&studyUID={fed.a.study_uid}&seriesUID={fed.a.series_uid}"
           f"&objectUID={fed.a.sop_uid}&contentType=application/dicom")  # fmt: skip
    assert fed.get(uri, fed.x_token).status_code == 200
    assert fed.get(uri.replace(fed.a.study_uid, fed.c.study_uid), fed.x_token).status_code == 404
    _wait_for(fed, lambda e: _request_line(e) == "GET /wado", agent=fed.x.client_id)
    events = _events(fed, agent=fed.x.client_id)
    for line, query in ((f"GET {study}", "accept=application/zip"), ("GET /wado", uri[6:])):
        found = [e for e in events if _request_line(e) == line and audit_query(e) == query]
        assert found, line
        event = found[-1]
        assert event.outcome == "0" and _action(event) == "retrieve"
        assert {p for agent in event.agent for p in agent.policy or []} == {"Contract/daa-x-a"}
        assert fed.a.study_uid in event.model_dump_json()
    refused = [e for e in events if _request_line(e) == "GET /wado" and e.outcome == "4"]
    assert refused and refused[-1].outcomeDesc.startswith("HTTP 404")


# last: it stops the gateway
def test_audit_verify_detects_an_edited_event(fed: Federation) -> None:
    fed.gateway.stop()  # the writer has flushed; nothing appends while the file is checked
    intact = fed.gateway.cli("audit", "verify")
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "ok" in intact.stdout

    path = fed.gateway.data_dir / "audit.sqlite"
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TRIGGER audit_event_no_update")
        seq, raw = conn.execute(
            "SELECT seq, event FROM audit_event WHERE outcome = 4 ORDER BY seq LIMIT 1"
        ).fetchone()
        event = json.loads(raw)
        event["outcome"] = "0"  # hide a refused attempt
        conn.execute(
            "UPDATE audit_event SET event = ? WHERE seq = ?",
            (json.dumps(event, sort_keys=True, separators=(",", ":")).encode(), seq),
        )
        conn.commit()
    finally:
        conn.close()
    tampered = fed.gateway.cli("audit", "verify")
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert "TAMPERED" in tampered.stdout

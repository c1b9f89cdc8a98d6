"""Tokens of an external OpenID provider (audience, typ, lifetime) and RFC 8693 token exchange:
the exchanged token has the subject's rights, whatever the exchanging client's own are.

The provider is a local HTTP server publishing a JWKS, so every claim and header of its tokens
can be chosen. Every combination of access condition for the subject (the user) and for the
exchanging client is tried, on datasets that hold one study each.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign
from joserfc import jws
from joserfc.jwk import ECKey

from tests.live import LiveServer, free_port
from tests.security.conftest import (
    AS_SENT,
    JWT_TOKEN_TYPE,
    TOKEN_EXCHANGE,
    Registered,
    Study,
    add_client,
    auth_env,
    bearer,
    claims_of,
    cli_ok,
    store_study,
    token,
)

AUDIENCE = "https://gateway.example/imaging"
CONDITIONS = ("none", "remote-processing", "in-situ-processing", "download")
USER = "user-42"


class Provider:
    """An OpenID provider: discovery document, JWKS, and tokens signed with its key."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", private=True)
        self.key.ensure_kid()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.url, "jwks_uri": f"{provider.url}/jwks"}
                elif self.path == "/jwks":
                    body = {"keys": [provider.key.as_dict(private=False)]}
                else:
                    self.send_error(404)
                    return
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(self, sub: str = USER, typ: str | None = "at+jwt", **changes: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.url, "aud": AUDIENCE, "sub": sub, "iat": now,
                                  "exp": now + 300, "jti": uuid.uuid4().hex, "scope": "openid"}  # fmt: skip
        for name, value in changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        header = {"alg": "ES256", "kid": self.key.kid} | ({"typ": typ} if typ else {})
        return jws.serialize_compact(header, json.dumps(claims).encode(), self.key)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class World:
    gateway: LiveServer
    provider: Provider
    studies: dict[str, Study]  # the user's condition -> a dataset's study
    clients: dict[str, Registered]  # the client's condition on every dataset -> client
    keyed: Registered
    key: ECKey


def _dataset(user_condition: str) -> str:
    return f"exch-{user_condition}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("exchange")
    provider = Provider()
    issuers = json.dumps([{"issuer": provider.url, "audience": AUDIENCE}])
    gateway = LiveServer(root / "gw", extra_env=auth_env(GATEWAY_AUTH__EXTERNAL_ISSUERS=issuers))
    datasets = [_dataset(c) for c in CONDITIONS]
    for dataset in datasets:
        cli_ok(gateway, "dataset", "create", dataset, "--title", dataset, "--cancer-type", "lung",
               *AS_SENT)  # fmt: skip
    pusher = add_client(gateway, "pacs", *[x for d in datasets for x in ("--store", d)])
    for condition in CONDITIONS[
        1:
    ]:  # the user: condition c on dataset exch-c, nothing on exch-none
        cli_ok(gateway, "daa", "create", f"daa-user-{condition}", "--dataset", _dataset(condition),
               "--condition", condition, "--issuer", provider.url, "--subject", USER)  # fmt: skip
    clients = {"none": add_client(gateway, "client-none")}
    for condition in CONDITIONS[1:]:  # each client: one condition on every dataset
        org = f"org-{condition}"  # half through the client id, half through its organization
        client = add_client(gateway, f"client-{condition}", "--organization", org)
        party = ("--organization", org) if condition == "download" else ("--client", client.client_id)  # fmt: skip
        datasets_options = [x for d in datasets for x in ("--dataset", d)]
        cli_ok(gateway, "daa", "create", f"daa-client-{condition}", *datasets_options,
               "--condition", condition, *party)  # fmt: skip
        clients[condition] = client
    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    jwks_file = root / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    keyed = add_client(gateway, "backend", "--jwks", str(jwks_file))
    gateway.start()
    try:
        push = token(gateway, pusher)
        studies = {c: store_study(gateway, _dataset(c), push) for c in CONDITIONS}
        yield World(gateway, provider, studies, clients, keyed, key)
    finally:
        gateway.stop()
        provider.close()


def _exchange(world: World, subject: str, client: Registered | None) -> httpx.Response:
    form = {"grant_type": TOKEN_EXCHANGE, "subject_token": subject,
            "subject_token_type": JWT_TOKEN_TYPE}  # fmt: skip
    auth = (client.client_id, client.secret or "") if client else None
    return httpx.post(f"{world.gateway.url}/oauth/token", data=form, auth=auth, timeout=30)


def _rights(world: World, access_token: str, study: Study) -> str:
    """What ``access_token`` may do on ``study``'s dataset, as the strongest condition it shows."""
    get = world.gateway.url
    headers = bearer(access_token)
    base = f"{get}/dicom-web/studies/{study.study_uid}"
    instance = f"{base}/series/{study.series_uid}/instances/{study.sop_uid}"
    if httpx.get(instance, headers=headers, timeout=30).status_code == 200:
        return "download"
    if httpx.get(f"{base}/metadata", headers=headers, timeout=30).status_code == 200:
        return "in-situ-processing"
    catalogue = httpx.get(f"{get}/fhir/ResearchStudy/{study.dataset}", headers=headers, timeout=30)
    return "remote-processing" if catalogue.status_code == 200 else "none"


def test_direct_tokens_have_the_users_rights(world: World) -> None:
    user = world.provider.token()
    for condition, study in world.studies.items():
        assert _rights(world, user, study) == condition


@pytest.mark.parametrize("client_condition", ["anonymous", *CONDITIONS])
def test_exchanged_token_has_the_subjects_rights_only(world: World, client_condition: str) -> None:
    client = None if client_condition == "anonymous" else world.clients[client_condition]
    answer = _exchange(world, world.provider.token(), client)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    exchanged = answer.json()["access_token"]
    claims = claims_of(exchanged)
    assert claims["ext_sub"] == USER and "admin" not in claims["scope"].split()
    if client is not None:
        assert claims["act"] == {"sub": client.client_id}
        # the client's own token, for contrast: its agreements apply to it
        own = token(world.gateway, client)
        for study in world.studies.values():
            assert _rights(world, own, study) == client_condition
    for user_condition, study in world.studies.items():
        got = _rights(world, exchanged, study)
        assert got == user_condition, (client_condition, user_condition, got)


def test_exchanged_token_never_stores(world: World) -> None:
    pusher = world.clients["download"]
    exchanged = _exchange(world, world.provider.token(), pusher).json()
    assert all(not s.endswith(":store") for s in exchanged["scope"].split())


@pytest.mark.parametrize(
    ("problem", "typ", "changes"),
    [
        ("wrong audience", "at+jwt", {"aud": "https://other-service.example"}),
        ("no audience", "at+jwt", {"aud": None}),
        ("no typ", None, {}),
        ("ID token typ", "id+jwt", {}),
        ("ID token claims", "JWT", {"nonce": "abc", "aud": AUDIENCE}),
        ("no exp", "at+jwt", {"exp": None}),
        ("no iat", "at+jwt", {"iat": None}),
        ("lives too long", "at+jwt", {"exp": int(time.time()) + 7200}),
        ("expired", "at+jwt", {"iat": int(time.time()) - 900, "exp": int(time.time()) - 600}),
        ("no subject", "at+jwt", {"sub": None}),
    ],
)
def test_external_tokens_that_are_refused(
    world: World, problem: str, typ: str | None, changes: dict[str, Any]
) -> None:
    bad = world.provider.token(typ=typ, **changes)
    direct = httpx.get(f"{world.gateway.url}/dicom-web/studies", headers=bearer(bad), timeout=30)
    assert direct.status_code == 401, (problem, direct.text)
    assert 'error="invalid_token"' in direct.headers["www-authenticate"]
    exchanged = _exchange(world, bad, None)
    assert exchanged.status_code == 400, (problem, exchanged.text)
    assert exchanged.json()["error"] == "invalid_grant" and "access_token" not in exchanged.json()


def test_accepted_typ_values(world: World) -> None:
    for typ in ("at+jwt", "application/at+jwt", "JWT"):
        good = world.provider.token(typ=typ)
        answer = httpx.get(f"{world.gateway.url}/dicom-web/studies", headers=bearer(good))
        assert answer.status_code == 200, (typ, answer.text)


def test_id_token_subject_token_type_is_refused(world: World) -> None:
    form = {"grant_type": TOKEN_EXCHANGE, "subject_token": world.provider.token(),
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token"}  # fmt: skip
    answer = httpx.post(f"{world.gateway.url}/oauth/token", data=form)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


def test_settings_refuse_an_external_issuer_without_audience(tmp_path: Path) -> None:
    issuers = json.dumps([{"issuer": "https://idp.example"}])
    live = LiveServer(tmp_path / "d", extra_env=auth_env(GATEWAY_AUTH__EXTERNAL_ISSUERS=issuers))
    refused = live.cli("check")
    assert refused.returncode != 0 and "audience" in refused.stderr, refused.stderr
    with pytest.raises(RuntimeError, match="audience"):
        live.start(timeout=30)
    live.stop()


# ---------------------------------------------------------------------- private_key_jwt replay


def test_an_expired_assertion_cannot_replay_within_the_leeway(world: World) -> None:
    """RFC 7523 3: the jti is remembered for as long as the assertion is accepted (exp + leeway)."""
    url = f"{world.gateway.url}/oauth/token"
    assertion = private_key_jwt_sign(world.key, world.keyed.client_id, url, alg="ES256",
                                     claims={"exp": int(time.time()) + 2})  # fmt: skip
    form = {"grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}  # fmt: skip
    assert httpx.post(url, data=form).status_code == 200
    time.sleep(3.5)  # expired now, still inside the 30 s leeway
    other = private_key_jwt_sign(world.key, world.keyed.client_id, url, alg="ES256",
                                 claims={"exp": int(time.time()) + 60})  # fmt: skip
    assert httpx.post(url, data={**form, "client_assertion": other}).status_code == 200  # purges
    replay = httpx.post(url, data=form)
    assert replay.status_code == 401, replay.text
    assert "replay" in replay.json()["error_description"]

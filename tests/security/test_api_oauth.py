"""The token endpoint with a real OAuth2 client (authlib): RFC 6749 4.4 client credentials with
client_secret_basic and client_secret_post, RFC 7523 private_key_jwt (SMART Backend Services),
scope negotiation, error responses, discovery (RFC 8414, SMART configuration) and how client
secrets are kept."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from tests.live import LiveServer
from tests.security.conftest import AS_SENT, Registered, add_client, auth_env, cli_ok

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRANTED = "lung-granted"
NOT_GRANTED = "lung-other-org"


class Setup:
    def __init__(self, live: LiveServer, secret: Registered, keyed: Registered, key: ECKey) -> None:
        self.live = live
        self.secret_client = secret
        self.keyed = keyed
        self.key = key

    @property
    def token_url(self) -> str:
        return f"{self.live.url}/oauth/token"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("oauth")
    live = LiveServer(root / "data", extra_env=auth_env())
    for dataset in (GRANTED, NOT_GRANTED):
        cli_ok(
            live,
            "dataset",
            "create",
            dataset,
            "--title",
            dataset,
            "--cancer-type",
            "lung",
            *AS_SENT,
        )
    secret = add_client(live, "analysis", "--organization", "org-research")
    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    jwks_file = root / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    keyed = add_client(live, "backend", "--organization", "org-research", "--jwks", str(jwks_file))
    assert keyed.secret is None
    cli_ok(live, "daa", "create", "daa-granted", "--dataset", GRANTED,
           "--condition", "download", "--organization", "org-research")  # fmt: skip
    cli_ok(live, "daa", "create", "daa-other", "--dataset", NOT_GRANTED,
           "--condition", "download", "--organization", "org-elsewhere")  # fmt: skip
    live.start()
    yield Setup(live, secret, keyed, key)
    live.stop()


def _verified(setup: Setup, access_token: str) -> dict[str, Any]:
    """The token's claims after verifying its signature with the published JWKS."""
    jwks = httpx.get(f"{setup.live.url}/oauth/jwks").json()
    assert jwks["keys"] and all("d" not in k for k in jwks["keys"])  # public parts only
    decoded = jwt.decode(access_token, KeySet.import_key_set(jwks))
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.header["kid"] in {k["kid"] for k in jwks["keys"]}
    return dict(decoded.claims)


def _check_claims(setup: Setup, claims: dict[str, Any], client_id: str, scope: str) -> None:
    now = time.time()
    assert claims["iss"] == setup.live.url
    assert claims["aud"] == setup.live.url
    assert claims["sub"] == client_id
    assert claims["client_id"] == client_id
    assert now - 60 < claims["iat"] <= now + 5
    assert claims["exp"] - claims["iat"] == 300 and claims["exp"] > now
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert claims["scope"] == scope


def _session(setup: Setup, method: str) -> OAuth2Session:
    client = setup.secret_client
    return OAuth2Session(
        client.client_id, client.secret, token_endpoint_auth_method=method, timeout=30
    )


# ---------------------------------------------------------------------- secrets


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_secret_flows_issue_verifiable_tokens(setup: Setup, method: str) -> None:
    with _session(setup, method) as session:
        issued = session.fetch_token(
            setup.token_url, grant_type="client_credentials", scope="system/*.rs"
        )
        assert issued["token_type"] == "Bearer" and issued["expires_in"] == 300
        assert issued["scope"] == f"system/*.rs dataset:{GRANTED}"
        claims = _verified(setup, issued["access_token"])
        _check_claims(setup, claims, setup.secret_client.client_id, issued["scope"])
        # the token works through the same session
        answer = session.get(f"{setup.live.url}/fhir/ResearchStudy")
        assert answer.status_code == 200, answer.text
        ids = {e["resource"]["id"] for e in answer.json().get("entry", [])}
        assert ids == {GRANTED}


def test_a_second_token_has_a_fresh_jti(setup: Setup) -> None:
    with _session(setup, "client_secret_basic") as session:
        first = session.fetch_token(setup.token_url, grant_type="client_credentials")
        second = session.fetch_token(setup.token_url, grant_type="client_credentials")
    assert (
        _verified(setup, first["access_token"])["jti"]
        != (_verified(setup, second["access_token"])["jti"])
    )


def test_token_responses_are_not_cached(setup: Setup) -> None:
    client = setup.secret_client
    assert client.secret is not None
    answer = httpx.post(setup.token_url, data={"grant_type": "client_credentials"},
                        auth=(client.client_id, client.secret))  # fmt: skip
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["content-type"].startswith("application/json")


def test_wrong_secret_is_invalid_client(setup: Setup) -> None:
    client = setup.secret_client
    with (
        OAuth2Session(client.client_id, "not-the-secret", timeout=30) as session,
        pytest.raises(OAuthError) as caught,
    ):
        session.fetch_token(setup.token_url, grant_type="client_credentials")
    assert caught.value.error == "invalid_client"
    for auth, data in (
        ((client.client_id, "not-the-secret"), {}),
        (("c-unknown", "whatever"), {}),
        (None, {"client_id": client.client_id, "client_secret": "nope"}),
        (None, {}),
    ):
        answer = httpx.post(
            setup.token_url, data={"grant_type": "client_credentials", **data}, auth=auth
        )
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "invalid_client"
        assert answer.headers["cache-control"] == "no-store"
        assert "access_token" not in answer.text


@pytest.mark.parametrize("grant", ["password", "implicit", ""])
def test_unsupported_grant_type_is_400(setup: Setup, grant: str) -> None:
    client = setup.secret_client
    assert client.secret is not None
    answer = httpx.post(
        setup.token_url, data={"grant_type": grant}, auth=(client.client_id, client.secret)
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize("grant", ["authorization_code", "refresh_token"])
def test_browser_grants_are_refused_to_machine_clients(setup: Setup, grant: str) -> None:
    """Codes and refresh tokens belong to browser sign-ins (tests/security/test_api_login.py)."""
    client = setup.secret_client
    assert client.secret is not None
    answer = httpx.post(
        setup.token_url,
        data={"grant_type": grant, "code": "x", "refresh_token": "x"},
        auth=(client.client_id, client.secret),
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "unauthorized_client"


# ---------------------------------------------------------------------- scope


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        (None, f"system/*.rs dataset:{GRANTED}"),
        ("system/*.rs", f"system/*.rs dataset:{GRANTED}"),
        (f"system/*.rs dataset:{GRANTED} dataset:{NOT_GRANTED}", f"system/*.rs dataset:{GRANTED}"),
        ("system/ImagingStudy.rs", f"system/ImagingStudy.rs dataset:{GRANTED}"),
        ("system/*.read", f"system/*.read dataset:{GRANTED}"),
        (f"system/*.rs dataset:{GRANTED}:store admin", "system/*.rs"),
        (f"dataset:{GRANTED}", f"dataset:{GRANTED}"),
        # nothing of it grantable, but no dataset named: the datasets the agreements allow
        ("admin", f"dataset:{GRANTED}"),
        ("system/*.cruds", f"dataset:{GRANTED}"),
    ],
)
def test_granted_scope_is_requested_intersected_with_allowed(
    setup: Setup, requested: str | None, granted: str
) -> None:
    with _session(setup, "client_secret_post") as session:
        kwargs = {"scope": requested} if requested is not None else {}
        issued = session.fetch_token(setup.token_url, grant_type="client_credentials", **kwargs)
    assert issued["scope"] == granted
    assert _verified(setup, issued["access_token"])["scope"] == granted


@pytest.mark.parametrize(
    "requested", [f"dataset:{NOT_GRANTED}", f"admin dataset:{NOT_GRANTED}", "nonsense/scope"]
)
def test_nothing_grantable_is_invalid_scope(setup: Setup, requested: str) -> None:
    client = setup.secret_client
    assert client.secret is not None
    answer = httpx.post(setup.token_url, data={"grant_type": "client_credentials",
                        "scope": requested}, auth=(client.client_id, client.secret))  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_scope"


# ---------------------------------------------------------------------- private_key_jwt


def _keyed_session(setup: Setup, **claims: Any) -> OAuth2Session:
    # SMART Backend Services: the assertion may live at most five minutes
    auth = PrivateKeyJWT(setup.token_url, alg="ES256",
                         claims={"exp": int(time.time()) + 240, **claims})  # fmt: skip
    session = OAuth2Session(setup.keyed.client_id, setup.key, token_endpoint_auth_method=auth,
                            timeout=30)  # fmt: skip
    return session


def test_private_key_jwt_issues_a_token(setup: Setup) -> None:
    with _keyed_session(setup) as session:
        issued = session.fetch_token(setup.token_url, grant_type="client_credentials")
    claims = _verified(setup, issued["access_token"])
    _check_claims(setup, claims, setup.keyed.client_id, f"system/*.rs dataset:{GRANTED}")
    answer = httpx.get(
        f"{setup.live.url}/dicom-web/studies",
        headers={"Authorization": f"Bearer {issued['access_token']}"},
    )
    assert answer.status_code == 200, answer.text


def test_private_key_jwt_with_the_registered_name(setup: Setup) -> None:
    """The documented authlib form: register the method, then name it."""
    session = OAuth2Session(setup.keyed.client_id, setup.key,
                            token_endpoint_auth_method="private_key_jwt", timeout=30)  # fmt: skip
    session.register_client_auth_method(
        PrivateKeyJWT(setup.token_url, alg="ES256", claims={"exp": int(time.time()) + 120})
    )
    with session:
        issued = session.fetch_token(setup.token_url, grant_type="client_credentials")
    assert _verified(setup, issued["access_token"])["sub"] == setup.keyed.client_id


def test_replayed_client_assertion_is_refused(setup: Setup) -> None:
    # authlib keeps the jti it adds in the claims it was given: its second request replays it
    with _keyed_session(setup) as session:
        session.fetch_token(setup.token_url, grant_type="client_credentials")
        with pytest.raises(OAuthError) as caught:
            session.fetch_token(setup.token_url, grant_type="client_credentials")
    assert caught.value.error == "invalid_client"
    assert "replay" in caught.value.description

    assertion = private_key_jwt_sign(setup.key, setup.keyed.client_id, setup.token_url,
                                     alg="ES256", expires_in=120)  # fmt: skip
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion}  # fmt: skip
    assert httpx.post(setup.token_url, data=form).status_code == 200
    again = httpx.post(setup.token_url, data=form)
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "problem", ["another key", "wrong audience", "too long lived", "expired", "other client"]
)
def test_bad_client_assertions_are_invalid_client(setup: Setup, problem: str) -> None:
    now = int(time.time())
    key, client_id, audience, claims = setup.key, setup.keyed.client_id, setup.token_url, {}
    if problem == "another key":
        key = ECKey.generate_key("P-256", private=True)
    elif problem == "wrong audience":
        audience = f"{setup.live.url}/elsewhere"
    elif problem == "too long lived":
        claims = {"exp": now + 3600}  # authlib's default lifetime: more than SMART's 5 minutes
    elif problem == "expired":
        claims = {"iat": now - 900, "exp": now - 600}
    elif problem == "other client":
        client_id = setup.secret_client.client_id  # a client without keys
    assertion = private_key_jwt_sign(key, client_id, audience, alg="ES256",
                                     claims=claims or {"exp": now + 120})  # fmt: skip
    answer = httpx.post(setup.token_url, data={
        "grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion})  # fmt: skip
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_client"


def test_keyed_client_has_no_secret(setup: Setup) -> None:
    answer = httpx.post(setup.token_url, data={"grant_type": "client_credentials"},
                        auth=(setup.keyed.client_id, ""))  # fmt: skip
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"


# ---------------------------------------------------------------------- discovery


@pytest.mark.parametrize(
    "path", ["/.well-known/oauth-authorization-server", "/fhir/.well-known/smart-configuration"]
)
def test_discovery_documents(setup: Setup, path: str) -> None:
    answer = httpx.get(f"{setup.live.url}{path}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    meta = answer.json()
    assert meta["issuer"] == setup.live.url
    assert meta["token_endpoint"] == setup.token_url
    assert meta["jwks_uri"] == f"{setup.live.url}/oauth/jwks"
    assert {"client_secret_basic", "client_secret_post", "private_key_jwt"} <= set(
        meta["token_endpoint_auth_methods_supported"]
    )
    assert "ES256" in meta["token_endpoint_auth_signing_alg_values_supported"]
    assert "client_credentials" in meta["grant_types_supported"]
    assert "system/*.rs" in meta["scopes_supported"]
    if "smart" in path:
        assert "client-confidential-asymmetric" in meta["capabilities"]
        assert "permission-v2" in meta["capabilities"]
    assert httpx.get(meta["jwks_uri"]).status_code == 200
    # discovery needs no token even when reads do
    assert httpx.get(f"{setup.live.url}/dicom-web/studies").status_code == 401


# ---------------------------------------------------------------------- secrets at rest


def test_clients_list_never_prints_secrets(setup: Setup) -> None:
    listed = setup.live.cli("clients", "list")
    assert listed.returncode == 0, listed.stderr
    assert setup.secret_client.client_id in listed.stdout
    assert setup.keyed.client_id in listed.stdout
    assert setup.secret_client.secret is not None
    assert setup.secret_client.secret not in listed.stdout + listed.stderr
    assert "scrypt" not in listed.stdout
    lines = {line.split("\t")[0]: line for line in listed.stdout.splitlines()}
    assert "private_key_jwt" in lines[setup.keyed.client_id]
    assert "client_secret" in lines[setup.secret_client.client_id]


def test_secret_is_stored_hashed(setup: Setup) -> None:
    secret = setup.secret_client.secret
    assert secret is not None
    files = sorted(Path(setup.live.data_dir).glob("security.sqlite*"))
    assert files
    for path in files:
        assert secret.encode() not in path.read_bytes(), path.name
    conn = sqlite3.connect(f"file:{setup.live.data_dir / 'security.sqlite'}?mode=ro", uri=True)
    try:
        rows = dict(conn.execute("SELECT client_id, secret_hash FROM client").fetchall())
    finally:
        conn.close()
    stored = rows[setup.secret_client.client_id]
    assert stored.startswith("scrypt$") and secret not in stored
    assert rows[setup.keyed.client_id] is None


def test_removed_client_loses_its_tokens(setup: Setup) -> None:
    temporary = add_client(setup.live, "temporary", "--organization", "org-research")
    assert temporary.secret is not None
    with OAuth2Session(temporary.client_id, temporary.secret, timeout=30) as session:
        session.fetch_token(setup.token_url, grant_type="client_credentials")
        assert session.get(f"{setup.live.url}/dicom-web/studies").status_code == 200
        cli_ok(setup.live, "clients", "remove", temporary.client_id)
        removed = time.monotonic()
        while time.monotonic() < removed + 5:
            answer = session.get(f"{setup.live.url}/dicom-web/studies")
            if answer.status_code != 200:
                break
            time.sleep(0.02)
        assert answer.status_code == 401, answer.text
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]
        assert time.monotonic() - removed < 2.0
        with pytest.raises(OAuthError) as caught:
            session.fetch_token(setup.token_url, grant_type="client_credentials")
        assert caught.value.error == "invalid_client"

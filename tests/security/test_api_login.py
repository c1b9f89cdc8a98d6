"""Browser sign-in over HTTP: authorization code with PKCE (RFC 7636, S256 only), exactly
registered redirect URIs, single-use short-lived codes, rotating refresh tokens whose reuse
ends the session, sign-out (RFC 7009), and tokens that carry what the user's agreements allow
at the time. The user signs in with the development login here (a password-less form,
development only); tests/security/test_api_login_oidc.py signs in at a real OpenID provider.

Every refusal of the token endpoint is the RFC 6749 §5.2 error JSON and leaves the code or the
session as it was (shown by using it afterwards), except the two that must revoke: a code
used twice and a refresh token used twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from server.settings import Settings
from tests.live import LiveServer, free_port
from tests.oidc_provider import Authorization, authorize_url, redeem, refresh, sign_in
from tests.security.conftest import AS_SENT, Study, add_client, bearer, cli_ok, store_study, token

CLIENT = "research-app"
OTHER = "other-app"
REDIRECT = "http://127.0.0.1:9/app/callback"
OTHER_REDIRECT = "http://127.0.0.1:9/other/callback"
DATASET = "login-restricted"
USER = "alice"
CODE_LIFETIME = 5


IN_SITU, REMOTE = "login-in-situ", "login-remote"


@dataclass
class World:
    gateway: LiveServer
    study: Study
    others: dict[str, Study]  # alice's in-situ and remote-processing datasets' studies

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("login")
    clients = [{"client_id": CLIENT, "redirect_uris": [REDIRECT]},
               {"client_id": OTHER, "redirect_uris": [OTHER_REDIRECT]}]  # fmt: skip
    gateway = LiveServer(root / "gw", port=free_port(), extra_env={
        "GATEWAY_ENVIRONMENT": "development",
        "GATEWAY_AUTH__ENABLED": "true",
        "GATEWAY_AUTH__PUBLIC_READ": "false",
        "GATEWAY_AUTH__AGREEMENT_CACHE_SECONDS": "0.2",
        "GATEWAY_AUTH__DEV_LOGIN": "true",
        "GATEWAY_AUTH__BROWSER_CLIENTS": json.dumps(clients),
        "GATEWAY_AUTH__CODE_LIFETIME": str(CODE_LIFETIME),
    })  # fmt: skip
    for dataset in (DATASET, IN_SITU, REMOTE):
        cli_ok(gateway, "dataset", "create", dataset, "--title", dataset, "--cancer-type", "lung", *AS_SENT)  # fmt: skip
    pusher = add_client(gateway, "pacs", "--store", DATASET, "--store", IN_SITU, "--store", REMOTE)
    for name, dataset, condition in (("daa-alice", DATASET, "download"),
                                     ("daa-alice-in-situ", IN_SITU, "in-situ-processing"),
                                     ("daa-alice-remote", REMOTE, "remote-processing")):  # fmt: skip
        cli_ok(gateway, "daa", "create", name, "--dataset", dataset, "--condition", condition,
               "--issuer", f"{gateway.url}/oauth/dev-login", "--subject", USER)  # fmt: skip
    gateway.start()
    try:
        push = token(gateway, pusher)
        studies = {d: store_study(gateway, d, push) for d in (DATASET, IN_SITU, REMOTE)}
        yield World(gateway, studies.pop(DATASET), studies)
    finally:
        gateway.stop()


def _signed_in(world: World, user: str = USER) -> Authorization:
    return sign_in(world.url, CLIENT, REDIRECT, user)


def _tokens(world: World, user: str = USER) -> dict[str, str]:
    answer = redeem(world.url, _signed_in(world, user))
    assert answer.status_code == 200, answer.text
    return answer.json()


def _study_uids(world: World, access_token: str) -> set[str]:
    answer = httpx.get(f"{world.url}/dicom-web/studies", headers=bearer(access_token), timeout=30)
    assert answer.status_code in (200, 204), answer.text
    return {row["0020000D"]["Value"][0] for row in (answer.json() if answer.content else [])}


def _refused(answer: httpx.Response, error: str = "invalid_grant", status: int = 400) -> None:
    """RFC 6749 §5.2: the error JSON, never cached."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description"), str) and body["error_description"]
    assert answer.headers["cache-control"] == "no-store"
    assert "access_token" not in body and "refresh_token" not in body


def _redirect_query(answer: httpx.Response, to: str) -> dict[str, str]:
    assert answer.status_code in (302, 303), (answer.status_code, answer.text[:300])
    location = answer.headers["location"]
    assert location.startswith(to + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


# ---------------------------------------------------------------------- discovery


def test_discovery_documents_advertise_the_code_flow_with_s256_and_refresh(world: World) -> None:
    meta = httpx.get(f"{world.url}/.well-known/oauth-authorization-server", timeout=30).json()
    smart = httpx.get(f"{world.url}/fhir/.well-known/smart-configuration", timeout=30).json()
    for document in (meta, smart):
        assert document["authorization_endpoint"] == f"{world.url}/oauth/authorize"
        assert document["code_challenge_methods_supported"] == ["S256"]
        assert {"authorization_code", "refresh_token"} <= set(document["grant_types_supported"])
        assert document["revocation_endpoint"] == f"{world.url}/oauth/logout"
    assert meta["response_types_supported"] == ["code"]
    assert {"launch-standalone", "client-public"} <= set(smart["capabilities"])


# ---------------------------------------------------------------------- sign-in


def test_a_signed_in_user_sees_the_restricted_study_their_agreement_allows(world: World) -> None:
    assert httpx.get(f"{world.url}/dicom-web/studies", timeout=30).status_code == 401
    tokens = _tokens(world)
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
    assert f"dataset:{DATASET}" in tokens["scope"].split()
    assert world.study.study_uid in _study_uids(world, tokens["access_token"])
    # a user without an agreement signs in too, and sees nothing restricted
    stranger = _tokens(world, "mallory")
    assert f"dataset:{DATASET}" not in stranger["scope"].split()
    assert world.study.study_uid not in _study_uids(world, stranger["access_token"])


def test_the_study_list_of_a_session_follows_each_agreements_condition(world: World) -> None:
    """download and in-situ studies are listed; in-situ ones give metadata, never pixels;
    remote-processing ones are not listed at all (aggregate answers only)."""
    access = _tokens(world)["access_token"]
    listed = _study_uids(world, access)
    in_situ, remote = world.others[IN_SITU], world.others[REMOTE]
    assert {world.study.study_uid, in_situ.study_uid} <= listed
    assert remote.study_uid not in listed
    base = f"{world.url}/dicom-web/studies/{in_situ.study_uid}"
    metadata = httpx.get(f"{base}/metadata", headers=bearer(access), timeout=30)
    assert metadata.status_code == 200 and metadata.json()
    instance = f"{base}/series/{in_situ.series_uid}/instances/{in_situ.sop_uid}"
    assert httpx.get(instance, headers=bearer(access), timeout=30).status_code == 403
    hidden = httpx.get(f"{world.url}/dicom-web/studies/{remote.study_uid}/metadata", headers=bearer(access), timeout=30)  # fmt: skip
    assert hidden.status_code == 404


def test_the_redirect_back_carries_the_state_and_the_issuer(world: World) -> None:
    auth = _signed_in(world)
    assert auth.iss == world.url  # RFC 9207


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
def test_authorize_refuses_requests_without_an_s256_challenge(
    world: World, change: dict[str, str], error: str
) -> None:
    url, state, _ = authorize_url(world.url, CLIENT, REDIRECT)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    query.update(change)
    query = {k: v for k, v in query.items() if v}
    answer = httpx.get(f"{world.url}/oauth/authorize", params=query, timeout=30)
    back = _redirect_query(answer, REDIRECT)
    assert back["error"] == error and back["state"] == state and "code" not in back


@pytest.mark.parametrize(
    ("client_id", "redirect_uri"),
    [
        (CLIENT, REDIRECT + "/"),  # not exactly the registered URI
        (CLIENT, REDIRECT + "?next=x"),
        (CLIENT, OTHER_REDIRECT),  # another client's URI
        ("unknown-app", REDIRECT),
    ],
)
def test_authorize_never_redirects_to_an_unregistered_uri(
    world: World, client_id: str, redirect_uri: str
) -> None:
    url, _, _ = authorize_url(world.url, client_id, redirect_uri)
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 400
    assert "location" not in answer.headers


# ---------------------------------------------------------------------- code refusals


def test_a_wrong_code_verifier_is_refused_and_leaves_the_code_usable(world: World) -> None:
    auth = _signed_in(world)
    _refused(redeem(world.url, auth, code_verifier="x" * 43))
    _refused(redeem(world.url, auth, code_verifier=""), "invalid_request")
    _refused(redeem(world.url, auth, code_verifier=auth.verifier[:-1] + "!"))
    assert redeem(world.url, auth).status_code == 200


def test_a_wrong_redirect_uri_is_refused_and_leaves_the_code_usable(world: World) -> None:
    auth = _signed_in(world)
    _refused(redeem(world.url, auth, redirect_uri=REDIRECT + "/"))
    _refused(redeem(world.url, auth, redirect_uri=OTHER_REDIRECT))
    assert redeem(world.url, auth).status_code == 200


def test_a_code_is_bound_to_its_client(world: World) -> None:
    auth = _signed_in(world)
    _refused(redeem(world.url, auth, client_id=OTHER, redirect_uri=OTHER_REDIRECT))
    _refused(redeem(world.url, auth, client_id="unknown-app"), "invalid_client", 401)
    assert redeem(world.url, auth).status_code == 200


def test_an_unknown_code_is_refused(world: World) -> None:
    auth = _signed_in(world)
    _refused(redeem(world.url, auth, code=auth.code[:-2] + "xx"))
    assert redeem(world.url, auth).status_code == 200


def test_a_reused_code_is_refused_and_revokes_the_tokens_it_gave(world: World) -> None:
    auth = _signed_in(world)
    first = redeem(world.url, auth)
    assert first.status_code == 200
    _refused(redeem(world.url, auth))
    # RFC 6749 §4.1.2: the tokens issued for the code are revoked
    _refused(refresh(world.url, CLIENT, first.json()["refresh_token"]))
    answer = httpx.get(f"{world.url}/dicom-web/studies", headers=bearer(first.json()["access_token"]), timeout=30)  # fmt: skip
    assert answer.status_code == 401


def test_an_expired_code_is_refused(world: World) -> None:
    auth = _signed_in(world)
    time.sleep(CODE_LIFETIME + 1.5)
    _refused(redeem(world.url, auth))


# ---------------------------------------------------------------------- sessions


def test_refresh_rotates_and_reusing_a_replaced_refresh_token_ends_the_session(
    world: World,
) -> None:
    tokens = _tokens(world)
    second = refresh(world.url, CLIENT, tokens["refresh_token"])
    assert second.status_code == 200, second.text
    renewed = second.json()
    assert renewed["refresh_token"] != tokens["refresh_token"]
    assert world.study.study_uid in _study_uids(world, renewed["access_token"])
    _refused(refresh(world.url, OTHER, renewed["refresh_token"]))  # another client: no change
    third = refresh(world.url, CLIENT, renewed["refresh_token"])
    assert third.status_code == 200, third.text
    # the first refresh token again: stolen, so the whole family ends
    _refused(refresh(world.url, CLIENT, tokens["refresh_token"]))
    _refused(refresh(world.url, CLIENT, third.json()["refresh_token"]))
    time.sleep(0.5)  # the agreement cache period bounds how long a cached principal lives
    answer = httpx.get(f"{world.url}/dicom-web/studies", headers=bearer(third.json()["access_token"]), timeout=30)  # fmt: skip
    assert answer.status_code == 401


def test_logout_ends_the_session_and_its_access_tokens(world: World) -> None:
    tokens = _tokens(world)
    assert world.study.study_uid in _study_uids(world, tokens["access_token"])
    out = httpx.post(f"{world.url}/oauth/logout", data={"token": tokens["refresh_token"], "client_id": CLIENT}, timeout=30)  # fmt: skip
    assert out.status_code == 200
    _refused(refresh(world.url, CLIENT, tokens["refresh_token"]))
    time.sleep(0.5)
    answer = httpx.get(f"{world.url}/dicom-web/studies", headers=bearer(tokens["access_token"]), timeout=30)  # fmt: skip
    assert answer.status_code == 401
    # RFC 7009 §2.2: an unknown token is not an error
    unknown = httpx.post(f"{world.url}/oauth/logout", data={"token": "nothing"}, timeout=30)
    assert unknown.status_code == 200


def test_a_revoked_agreement_ends_access_at_once_and_refresh_drops_the_dataset(
    world: World,
) -> None:
    tokens = _tokens(world, "bob")
    cli_ok(world.gateway, "daa", "create", "daa-bob", "--dataset", DATASET, "--condition", "download",
           "--issuer", f"{world.url}/oauth/dev-login", "--subject", "bob")  # fmt: skip
    time.sleep(0.5)
    assert world.study.study_uid not in _study_uids(
        world, tokens["access_token"]
    )  # scope as issued
    renewed = refresh(world.url, CLIENT, tokens["refresh_token"]).json()
    assert world.study.study_uid in _study_uids(world, renewed["access_token"])  # new agreement
    cli_ok(world.gateway, "daa", "revoke", "daa-bob")
    time.sleep(0.5)
    assert world.study.study_uid not in _study_uids(world, renewed["access_token"])
    again = refresh(world.url, CLIENT, renewed["refresh_token"]).json()
    assert f"dataset:{DATASET}" not in again["scope"].split()


# ---------------------------------------------------------------------- the development login


def test_the_development_login_is_refused_outside_development() -> None:
    with pytest.raises(ValueError, match="DEV_LOGIN"):
        Settings(environment="production", auth={"dev_login": True})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="DEV_LOGIN"):
        Settings(environment="test", auth={"dev_login": True})  # type: ignore[arg-type]


def test_the_development_login_form_refuses_unknown_sign_ins(world: World) -> None:
    answer = httpx.post(f"{world.url}/oauth/dev-login", data={"request": "forged", "username": USER}, timeout=30)  # fmt: skip
    assert answer.status_code == 400 and "location" not in answer.headers


def test_signing_out_sends_the_browser_back_only_to_a_registered_origin(world: World) -> None:
    back = httpx.get(f"{world.url}/oauth/logout", params={"post_logout_redirect_uri": "http://127.0.0.1:9/app/signed-out", "state": "s1"}, timeout=30)  # fmt: skip
    assert back.status_code == 303
    assert back.headers["location"] == "http://127.0.0.1:9/app/signed-out?state=s1"
    for foreign in ("https://evil.example/", "http://127.0.0.1:10/app/", "javascript:alert(1)"):
        page = httpx.get(f"{world.url}/oauth/logout", params={"post_logout_redirect_uri": foreign}, timeout=30)  # fmt: skip
        assert page.status_code == 200 and "location" not in page.headers


def test_a_reload_gets_a_new_code_without_signing_in_again_until_sign_out(world: World) -> None:
    """The authorization server's sign-in (an HttpOnly cookie on /oauth) answers the next
    authorization request of the same browser with a code at once, as OHIF's client expects
    on a page reload; signing out (revocation, or the end-session redirect) ends it."""
    with httpx.Client(timeout=30) as browser:
        forms: list[str] = []
        first = sign_in(world.url, CLIENT, REDIRECT, USER, browser=browser, forms=forms)
        assert len(forms) == 1  # the login form, once
        cookie = browser.cookies.jar
        assert [(c.name, c.path) for c in cookie] == [("gateway_signin", "/oauth")]
        assert all(c.has_nonstandard_attr("HttpOnly") for c in cookie)
        tokens = redeem(world.url, first).json()
        again = sign_in(world.url, CLIENT, REDIRECT, USER, browser=browser, forms=forms)
        assert len(forms) == 1, forms  # no form: the code came back at once
        reloaded = redeem(world.url, again)
        assert reloaded.status_code == 200, reloaded.text
        assert world.study.study_uid in _study_uids(world, reloaded.json()["access_token"])
        # prompt=login asks again
        url, _, _ = authorize_url(world.url, CLIENT, REDIRECT, prompt="login")
        assert browser.get(url).headers["location"].split("?")[0].endswith("/oauth/dev-login")
        # signing out (revoking the session) ends the sign-in: the next request asks again
        out = httpx.post(f"{world.url}/oauth/logout", data={"token": tokens["refresh_token"], "client_id": CLIENT}, timeout=30)  # fmt: skip
        assert out.status_code == 200
        sign_in(world.url, CLIENT, REDIRECT, USER, browser=browser, forms=forms)
        assert len(forms) == 2, forms
        # the end-session redirect ends it as well, and clears the cookie
        browser.get(f"{world.url}/oauth/logout")
        assert not list(browser.cookies.jar)
        sign_in(world.url, CLIENT, REDIRECT, USER, browser=browser, forms=forms)
        assert len(forms) == 3, forms


def test_a_sign_in_cookie_is_refused_once_signed_out_even_if_replayed(world: World) -> None:
    with httpx.Client(timeout=30) as browser:
        sign_in(world.url, CLIENT, REDIRECT, USER, browser=browser)
        secret = browser.cookies["gateway_signin"]
        browser.get(f"{world.url}/oauth/logout")
    url, _, _ = authorize_url(world.url, CLIENT, REDIRECT)
    replay = httpx.get(url, cookies={"gateway_signin": secret}, timeout=30)
    assert replay.headers["location"].split("?")[0].endswith("/oauth/dev-login")

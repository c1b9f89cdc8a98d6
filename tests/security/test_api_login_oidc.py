"""Browser sign-in through a real OpenID provider (panva's oidc-provider, started here): the
gateway, in production settings, is the provider's relying party and issues its own tokens
with the scopes of the user's agreements. The walk follows the redirects and fills in the
provider's login form as a browser would (tests/e2e does it in Chromium with the viewer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.live import LiveServer
from tests.oidc_provider import (
    OpenIdProvider,
    gateway_signing_in_at_a_provider,
    redeem,
    refresh,
    sign_in,
)
from tests.security.conftest import (  # fmt: skip
    AS_SENT,
    Study,
    add_client,
    bearer,
    cli_ok,
    store_study,
    token,
)

CLIENT = "research-app"
REDIRECT = "http://127.0.0.1:9/app/callback"
DATASET = "oidc-restricted"


@dataclass
class World:
    gateway: LiveServer
    provider: OpenIdProvider
    study: Study


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    clients = json.dumps([{"client_id": CLIENT, "redirect_uris": [REDIRECT]}])
    root = tmp_path_factory.mktemp("oidc")
    with gateway_signing_in_at_a_provider(root, GATEWAY_AUTH__BROWSER_CLIENTS=clients) as (gateway, provider):  # fmt: skip
        cli_ok(gateway, "dataset", "create", DATASET, "--title", "Restricted", "--cancer-type", "lung", *AS_SENT)  # fmt: skip
        pusher = add_client(gateway, "pacs", "--store", DATASET)
        cli_ok(gateway, "daa", "create", "daa-alice", "--dataset", DATASET, "--condition", "download",
               "--issuer", provider.issuer, "--subject", "alice")  # fmt: skip
        gateway.start()
        yield World(gateway, provider, store_study(gateway, DATASET, token(gateway, pusher)))


def _studies(world: World, access_token: str) -> set[str]:
    answer = httpx.get(f"{world.gateway.url}/dicom-web/studies", headers=bearer(access_token), timeout=30)  # fmt: skip
    assert answer.status_code in (200, 204), answer.text
    return {row["0020000D"]["Value"][0] for row in (answer.json() if answer.content else [])}


def test_a_user_signed_in_at_the_provider_gets_the_datasets_of_their_agreements(
    world: World,
) -> None:
    url = world.gateway.url
    auth = sign_in(url, CLIENT, REDIRECT, "alice")
    tokens = redeem(url, auth).json()
    assert f"dataset:{DATASET}" in tokens["scope"].split()
    assert world.study.study_uid in _studies(world, tokens["access_token"])
    renewed = refresh(url, CLIENT, tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert world.study.study_uid in _studies(world, renewed.json()["access_token"])
    other = redeem(url, sign_in(url, CLIENT, REDIRECT, "bob")).json()
    assert world.study.study_uid not in _studies(world, other["access_token"])


def test_the_development_login_is_off_in_production(world: World) -> None:
    answer = httpx.get(f"{world.gateway.url}/oauth/dev-login", timeout=30)
    assert answer.status_code == 404


def test_a_callback_without_a_pending_sign_in_is_refused(world: World) -> None:
    answer = httpx.get(f"{world.gateway.url}/oauth/callback", params={"code": "x", "state": "forged"}, timeout=30)  # fmt: skip
    assert answer.status_code == 400 and "location" not in answer.headers


def test_the_gateway_sends_the_provider_state_nonce_and_an_s256_challenge(world: World) -> None:
    from urllib.parse import parse_qs, urlsplit

    from tests.oidc_provider import GATEWAY_CLIENT, authorize_url

    url, _, _ = authorize_url(world.gateway.url, CLIENT, REDIRECT)
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith(world.provider.issuer + "/auth?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["client_id"] == GATEWAY_CLIENT and query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 16
    assert "openid" in query["scope"].split()

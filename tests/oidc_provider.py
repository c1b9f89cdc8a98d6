"""A real OpenID provider for the sign-in tests, and a browser-less walk through a sign-in.

The provider is panva's ``oidc-provider`` (npm, installed by ``tests/e2e/setup.sh``) run by
``tests/e2e/oidc_provider.mjs``: discovery, JWKS, authorization code with PKCE, signed ID
tokens, and its development login form (any user name signs in). The gateway is its one
client.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest

from tests.live import LiveServer, free_port
from tests.security.conftest import auth_env

E2E = Path(__file__).resolve().parent / "e2e"
SCRIPT = E2E / "oidc_provider.mjs"
PACKAGE = E2E / "node_modules" / "oidc-provider" / "package.json"
GATEWAY_CLIENT = "imaging-gateway"  # the gateway, as the provider's one client
GATEWAY_SECRET = "gateway-secret-for-the-provider-0123456789"


def available() -> str | None:
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not PACKAGE.is_file():
        return "oidc-provider is not installed in tests/e2e/node_modules (run tests/e2e/setup.sh)"
    return None


def require() -> None:
    """Skip where the provider cannot run; fail in CI (CI=true), where a skip would hide a gap."""
    missing = available()
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{missing} (CI=true)")
        pytest.skip(missing)


class OpenIdProvider:
    """``oidc-provider`` on a free loopback port; use as a context manager."""

    def __init__(self, client_id: str, client_secret: str, redirect_uris: list[str], log: Path) -> None:  # fmt: skip
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client_id, self.client_secret = client_id, client_secret
        self.redirect_uris = redirect_uris
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> OpenIdProvider:
        spec = {"port": self.port, "clientId": self.client_id, "clientSecret": self.client_secret,
                "redirectUris": self.redirect_uris}  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["node", str(SCRIPT), json.dumps(spec)], cwd=E2E, stdout=subprocess.PIPE,
                stderr=log, env={**os.environ, "NODE_ENV": "test"},
            )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # {"issuer": ...} once listening
        if not line:
            raise RuntimeError(f"oidc-provider did not start: {self.log.read_text()[-2000:]}")
        assert json.loads(line)["issuer"] == self.issuer
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def __enter__(self) -> OpenIdProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def gateway_signing_in_at_a_provider(root: Path, **env: str) -> Iterator[tuple[LiveServer, OpenIdProvider]]:  # fmt: skip
    """A provider started for a gateway in production settings (``auth_env`` + ``env``) that
    signs browsers in there. The gateway is not started yet, so the caller can add datasets
    and agreements with its CLI first; both stop on exit."""
    require()
    port = free_port()
    provider = OpenIdProvider(GATEWAY_CLIENT, GATEWAY_SECRET, [f"http://127.0.0.1:{port}/oauth/callback"],
                              root / "provider.log").start()  # fmt: skip
    gateway = LiveServer(root / "gw", port=port, extra_env=auth_env(
        GATEWAY_AUTH__OIDC__ISSUER=provider.issuer,
        GATEWAY_AUTH__OIDC__CLIENT_ID=GATEWAY_CLIENT,
        GATEWAY_AUTH__OIDC__CLIENT_SECRET=GATEWAY_SECRET,
        **env,
    ))  # fmt: skip
    try:
        yield gateway, provider
    finally:
        gateway.stop()
        provider.stop()


# ---------------------------------------------------------------------- a client's side


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


@dataclass
class Authorization:
    """What a browser client holds after the redirect back: its code and what it sent."""

    code: str
    state: str
    verifier: str
    redirect_uri: str
    client_id: str
    iss: str


def authorize_url(gateway: str, client_id: str, redirect_uri: str, **extra: str) -> tuple[str, str, str]:  # fmt: skip
    """An authorization request URL (PKCE S256); returns (url, state, verifier)."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
              "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
              "scope": "openid", **extra}  # fmt: skip
    return f"{gateway}/oauth/authorize?{urlencode(params)}", state, verifier


def sign_in(
    gateway: str, client_id: str, redirect_uri: str, username: str,
    browser: httpx.Client | None = None, forms: list[str] | None = None,
) -> Authorization:  # fmt: skip
    """Walk a sign-in as a browser would (following redirects, filling the login form) until
    the redirect back to ``redirect_uri``; works with the provider's and the development login.
    ``browser`` keeps its cookies across sign-ins; the URL of each form filled is added to
    ``forms``."""
    url, state, verifier = authorize_url(gateway, client_id, redirect_uri)
    own = httpx.Client(timeout=30) if browser is None else contextlib.nullcontext(browser)
    with own as browser:  # keeps the provider's (and the gateway's) cookies
        for _ in range(20):
            if url.startswith(redirect_uri):
                query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
                assert "code" in query, query
                assert query["state"] == state, query
                return Authorization(query["code"], state, verifier, redirect_uri, client_id, query.get("iss", ""))  # fmt: skip
            answer = browser.get(url)
            if answer.is_redirect:
                url = urljoin(url, answer.headers["location"])
                continue
            assert answer.status_code == 200, (url, answer.status_code, answer.text[:500])
            form = re.search(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', answer.text, re.S)
            assert form, answer.text[:1000]
            if forms is not None:
                forms.append(url)
            fields = {}
            for tag in re.findall(r"<input\b[^>]*>", form[2]):
                name = re.search(r'name="?([\w-]+)', tag)
                value = re.search(r'value="([^"]*)"', tag)
                if name:
                    fields[name[1]] = html.unescape(value[1]) if value else ""
            user_field = "login" if "login" in fields and "username" not in fields else "username"
            fields.update({user_field: username, "password": "any"})
            answer = browser.post(urljoin(url, form[1]), data=fields)
            assert answer.is_redirect, (answer.status_code, answer.text[:1000])
            url = urljoin(url, answer.headers["location"])
    raise AssertionError("the sign-in did not come back to the client")


def redeem(gateway: str, auth: Authorization, **override: str) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": auth.code, "redirect_uri": auth.redirect_uri,
            "client_id": auth.client_id, "code_verifier": auth.verifier, **override}  # fmt: skip
    return httpx.post(f"{gateway}/oauth/token", data=data, timeout=30)


def refresh(gateway: str, client_id: str, refresh_token: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    return httpx.post(f"{gateway}/oauth/token", data=data, timeout=30)

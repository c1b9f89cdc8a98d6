"""External OpenID providers (OIDC Discovery 1.0 §4, RFC 8414): their keys, fetched and cached."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from typing import Any

from joserfc.jwk import KeySet

from server.security.tokens import ExternalPolicy, InvalidToken, verify_external_token
from server.settings import ExternalIssuer

DISCOVERY = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` claim, read without trusting it, to choose which keys verify the token."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(data.get("iss")) if isinstance(data, dict) and data.get("iss") else None
    except (IndexError, ValueError):
        return None


class ExternalIssuers:
    """Tokens of configured providers, verified with keys from their discovery documents."""

    def __init__(self, issuers: list[ExternalIssuer], ttl: float = 300.0) -> None:
        self.issuers = {i.issuer.rstrip("/"): i for i in issuers}
        self.ttl = ttl
        self._keys: dict[str, tuple[float, KeySet]] = {}
        self._lock = threading.Lock()

    def knows(self, issuer: str | None) -> bool:
        return issuer is not None and issuer.rstrip("/") in self.issuers

    def verify(self, token: str) -> tuple[ExternalIssuer, dict[str, Any]]:
        issuer = unverified_issuer(token)
        if not self.knows(issuer):
            raise InvalidToken("wrong issuer")
        config = self.issuers[str(issuer).rstrip("/")]
        policy = ExternalPolicy(
            issuer=config.issuer,
            audience=config.audience,
            types=frozenset(config.token_types),
            max_lifetime_seconds=config.max_lifetime_seconds,
        )
        return config, verify_external_token(token, self._key_set(config), policy)

    def _key_set(self, config: ExternalIssuer) -> KeySet:
        with self._lock:
            cached = self._keys.get(config.issuer)
            if cached and time.monotonic() - cached[0] < self.ttl:
                return cached[1]
        keys = KeySet.import_key_set(_fetch(self._jwks_uri(config)))  # type: ignore[arg-type]
        with self._lock:
            self._keys[config.issuer] = (time.monotonic(), keys)
        return keys

    @staticmethod
    def _jwks_uri(config: ExternalIssuer) -> str:
        if config.jwks_uri:
            return config.jwks_uri
        for path in DISCOVERY:
            try:
                document = _fetch(config.issuer.rstrip("/") + path)
            except OSError:
                continue
            if document.get("jwks_uri"):
                return str(document["jwks_uri"])
        raise InvalidToken("the token's issuer publishes no keys")


def _fetch(url: str) -> dict[str, Any]:
    if not url.startswith(("https://", "http://127.", "http://localhost", "http://[::1]")):
        raise OSError(f"refusing to fetch keys over plain http from {url}")
    with urllib.request.urlopen(url, timeout=5) as response:
        data = json.loads(response.read())
    if not isinstance(data, dict):
        raise OSError(f"{url} did not answer a JSON object")
    return data

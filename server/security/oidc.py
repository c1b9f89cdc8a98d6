"""The gateway as an OpenID Connect relying party (OIDC Core 1.0 section 3.1, authorization
code flow), to authenticate browser users at the configured OpenID provider.

authlib builds the authorization request (with ``state``, ``nonce`` and the gateway's own
PKCE S256 challenge); the code is exchanged at the provider's token endpoint with
client_secret_basic (RFC 6749 section 2.3.1). joserfc (authlib's JOSE library) validates the ID token, OIDC Core
section 3.1.3.7: signature with the provider's JWKS from its discovery document, only
asymmetric algorithms; ``iss``, ``aud`` (and ``azp`` when there are several audiences),
``exp``, ``iat``, ``nonce``, and ``at_hash`` when present.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

ID_TOKEN_ALGS = ["RS256", "ES256", "PS256", "RS384", "ES384", "PS384", "RS512", "ES512"]
_HASH_OF_ALG = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
DISCOVERY_TTL = 300.0
LEEWAY_SECONDS = 30


class LoginFailed(Exception):
    """The provider did not authenticate the user (its error, or an invalid answer)."""


@dataclass(frozen=True)
class Identity:
    """A user as the OpenID provider vouched for them in a validated ID token."""

    issuer: str
    subject: str
    name: str | None
    claims: dict[str, Any]


class RelyingParty:
    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        redirect_uri: str,
        scopes: list[str],
        timeout: float = 10.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.scope = " ".join(dict.fromkeys(["openid", *scopes]))
        self.timeout = timeout
        self._lock = threading.Lock()
        self._discovery: tuple[float, dict[str, Any]] | None = None
        self._jwks: tuple[float, Any] | None = None

    def metadata(self) -> dict[str, Any]:
        """OIDC Discovery 1.0 section 4: the provider's configuration (cached a few minutes)."""
        with self._lock:
            if self._discovery and time.monotonic() - self._discovery[0] < DISCOVERY_TTL:
                return self._discovery[1]
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            answer = httpx.get(url, timeout=self.timeout)
            answer.raise_for_status()
            document = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise LoginFailed(
                f"the OpenID provider's discovery document is unavailable: {exc}"
            ) from exc
        if not isinstance(document, dict) or document.get("issuer", "").rstrip("/") != self.issuer:
            raise LoginFailed("the OpenID provider's discovery document names another issuer")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(name), str):
                raise LoginFailed(f"the OpenID provider's discovery document lacks {name}")
        with self._lock:
            self._discovery = (time.monotonic(), document)
        return document

    def _key_set(self, refresh: bool = False) -> Any:
        with self._lock:
            if not refresh and self._jwks and time.monotonic() - self._jwks[0] < DISCOVERY_TTL:
                return self._jwks[1]
        try:
            answer = httpx.get(self.metadata()["jwks_uri"], timeout=self.timeout)
            answer.raise_for_status()
            keys = KeySet.import_key_set(answer.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            raise LoginFailed(f"the OpenID provider's keys are unavailable: {exc}") from exc
        with self._lock:
            self._jwks = (time.monotonic(), keys)
        return keys

    def authorization_url(self, *, state: str, nonce: str, code_verifier: str) -> str:
        """Where to send the browser: the provider's authorization endpoint with our request."""
        return str(
            prepare_grant_uri(
                self.metadata()["authorization_endpoint"],
                self.client_id,
                "code",
                redirect_uri=self.redirect_uri,
                scope=self.scope,
                state=state,
                nonce=nonce,
                code_challenge=create_s256_code_challenge(code_verifier),
                code_challenge_method="S256",
            )
        )

    def finish(self, *, code: str, nonce: str, code_verifier: str) -> Identity:
        """Exchange the provider's code and validate the ID token it answers with."""
        meta = self.metadata()
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": self.redirect_uri, "code_verifier": code_verifier}  # fmt: skip
        auth = None
        if self.client_secret:  # RFC 6749 2.3.1: both form-urlencoded inside Basic
            auth = (quote(self.client_id, safe=""), quote(self.client_secret, safe=""))
        else:
            form["client_id"] = self.client_id
        try:
            answer = httpx.post(meta["token_endpoint"], data=form, auth=auth, timeout=self.timeout)
            token = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise LoginFailed(f"the OpenID provider's token endpoint failed: {exc}") from exc
        if answer.status_code != 200 or not isinstance(token, dict):
            error = token.get("error") if isinstance(token, dict) else None
            raise LoginFailed(f"the OpenID provider refused the code exchange ({error or answer.status_code})")  # fmt: skip
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise LoginFailed("the OpenID provider answered without an ID token")
        claims = self._validate(id_token, nonce, token.get("access_token"))
        name = claims.get("name") or claims.get("preferred_username") or claims.get("email")
        return Identity(self.issuer, str(claims["sub"]), str(name) if name else None, claims)

    def _validate(self, id_token: str, nonce: str, access_token: object) -> dict[str, Any]:
        for attempt in (False, True):  # once more with fresh keys: the provider may have rotated
            try:
                token = jwt.decode(
                    id_token, self._key_set(refresh=attempt), algorithms=ID_TOKEN_ALGS
                )
            except JoseError as exc:
                if attempt:
                    raise LoginFailed(f"the ID token is not valid: {exc}") from exc
                continue
            except ValueError as exc:  # no key with the token's kid
                if attempt:
                    raise LoginFailed(f"the ID token is not valid: {exc}") from exc
                continue
            break
        claims = dict(token.claims)
        registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise LoginFailed(f"the ID token is not valid: {exc}") from exc
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise LoginFailed("the ID token was issued to another party (azp)")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise LoginFailed("the ID token has no subject")
        if "at_hash" in claims and isinstance(access_token, str):
            alg = str(token.header.get("alg", ""))
            digest = _HASH_OF_ALG[alg[-3:]](access_token.encode()).digest()
            half = base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()
            if not hmac.compare_digest(half, str(claims["at_hash"])):
                raise LoginFailed("the ID token's at_hash does not match the access token")
        return claims

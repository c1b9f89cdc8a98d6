"""RFC 9068 / RFC 7519 section 7.2: issuing and validating JWTs, hardened per RFC 8725.

Three kinds of token pass through here:

* access tokens this gateway issues and later accepts (RFC 9068 profile, ``typ: at+jwt``);
* tokens from a configured external OpenID provider;
* client assertions a client signs to authenticate at the token endpoint
  (RFC 7523 section 3, as SMART Backend Services uses them).

Every path reads the JOSE header before touching a key and refuses any alg outside
``ACCEPTED_ALGS``, so ``none`` and HMAC algorithms (which an attacker could "sign"
with a public key as the secret) never reach signature code. The verifying key is
chosen from the caller's key set only, never from ``jwk``/``jku``/``x5u`` headers.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, Key, KeySet, RSAKey

from server.security.keys import SigningKeys

ACCEPTED_ALGS = ("ES256", "RS256", "ES384", "RS384", "PS256")  # never "none", never HS*
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 section 4
# RFC 9068 section 2.1 names at+jwt; many OpenID providers (Keycloak, Entra ID, Auth0) still
# send their access tokens with typ JWT, so that is accepted from configured providers too.
EXTERNAL_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt", "JWT"})
ID_TOKEN_CLAIMS = ("nonce", "at_hash", "c_hash")  # OIDC Core 2 / 3.1.3.6: only ID tokens
ASSERTION_MAX_LIFETIME_SECONDS = 300  # SMART Backend Services: exp at most 5 minutes ahead
DEFAULT_LEEWAY_SECONDS = 30
MAX_TOKEN_LENGTH = 16_384

# alg -> (kty, curve) the verifying key must have; curve None for RSA
_KEY_FOR_ALG: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "PS256": ("RSA", None),
}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# claims the access token profile sets itself; ``extra`` may not replace them
_REGISTERED = frozenset({"iss", "aud", "sub", "client_id", "iat", "nbf", "exp", "jti", "scope"})


class InvalidToken(Exception):
    """RFC 6750 section 3.1: a token or assertion that must be refused.

    ``message`` is safe to show to the caller; ``description`` is the same text
    restricted to what an ``error_description`` in ``WWW-Authenticate`` may hold;
    ``error`` is the OAuth error code (``invalid_token``, or ``invalid_client``
    for client assertions).
    """

    def __init__(self, message: str, *, error: str = "invalid_token") -> None:
        super().__init__(message)
        self.message = message
        self.error = error

    @property
    def description(self) -> str:
        # RFC 6750 section 3: error_description is %x20-21 / %x23-5B / %x5D-7E
        return "".join(
            c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in self.message
        )


@dataclass(frozen=True)
class TokenSettings:
    """RFC 9068 section 2.2: what the gateway puts in, and demands of, its access tokens."""

    issuer: str
    audience: str
    lifetime_seconds: int = 300
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS


# ---------------------------------------------------------------------- issuing


def issue_access_token(
    keys: SigningKeys,
    settings: TokenSettings,
    *,
    subject: str,
    client_id: str,
    scope: str,
    extra: dict[str, Any] | None = None,
    now: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """RFC 9068 section 2: a signed JWT access token and the claims it carries."""
    if extra:
        clash = sorted(_REGISTERED.intersection(extra))
        if clash:
            raise ValueError(f"extra claims may not replace {', '.join(clash)}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = dict(extra or {})
    claims.update(
        {
            "iss": settings.issuer,
            "aud": settings.audience,
            "sub": subject,
            "client_id": client_id,
            "iat": issued,
            "nbf": issued,
            "exp": issued + settings.lifetime_seconds,
            "jti": uuid.uuid4().hex,
            "scope": " ".join(scope.split()),
        }
    )
    return keys.sign(claims, typ="at+jwt"), claims


# ---------------------------------------------------------------------- verifying


def verify_access_token(
    token: str, key_set: KeySet, settings: TokenSettings, *, now: float | None = None
) -> dict[str, Any]:
    """RFC 9068 section 4 / RFC 7519 section 7.2: the claims of an access token this gateway issued."""
    header, claims = _verify_signature(token, key_set, error="invalid_token")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
        raise InvalidToken("wrong token type")
    current = _now(now)
    _check_issuer(claims, settings.issuer, "invalid_token")
    _check_audience(claims, settings.audience, "invalid_token")
    _check_times(claims, current, settings.leeway_seconds, "invalid_token", require_iat=True)
    for name in ("jti", "sub", "client_id"):
        _require_string(claims, name, "invalid_token")
    if "scope" in claims and not isinstance(claims["scope"], str):
        raise InvalidToken("invalid scope claim")
    return claims


@dataclass(frozen=True)
class ExternalPolicy:
    """What a token from a configured OpenID provider must satisfy besides its signature.

    ``types`` are the accepted JOSE ``typ`` values (compared case-insensitively, with or
    without the ``application/`` prefix, RFC 7515 section 4.1.9); ``""`` stands for a token
    without ``typ``. ``max_lifetime_seconds`` bounds ``exp - iat``.
    """

    issuer: str
    audience: str
    types: frozenset[str] = EXTERNAL_TOKEN_TYPES
    max_lifetime_seconds: int = 3600


def verify_external_token(
    token: str,
    key_set: KeySet,
    policy: ExternalPolicy,
    *,
    now: float | None = None,
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
) -> dict[str, Any]:
    """RFC 9068 section 4 / RFC 7519 section 7.2: an access token of a configured provider.

    Refused: a ``typ`` outside the policy, a token that looks like an OpenID Connect ID token
    (``nonce``, ``at_hash``, ``c_hash``, or a payload ``typ`` of ``ID``: it was issued to a
    relying party, not to this gateway), another audience, no ``exp`` or ``iat``, and a
    lifetime (``exp - iat``) above the policy's maximum.
    """
    header, claims = _verify_signature(token, key_set, error="invalid_token")
    if _media_type(header.get("typ")) not in {_media_type(t or None) for t in policy.types}:
        raise InvalidToken("wrong token type")
    if (
        any(name in claims for name in ID_TOKEN_CLAIMS)
        or str(claims.get("typ", "")).upper() == "ID"
    ):
        raise InvalidToken("an ID token is not an access token")
    current = _now(now)
    _check_issuer(claims, policy.issuer, "invalid_token")
    _check_audience(claims, policy.audience, "invalid_token")
    _check_times(claims, current, leeway_seconds, "invalid_token", require_iat=True)
    if float(claims["exp"]) - float(claims["iat"]) > policy.max_lifetime_seconds:
        raise InvalidToken("token lifetime exceeds the configured maximum")
    _require_string(claims, "jti", "invalid_token")
    _require_string(claims, "sub", "invalid_token")
    return claims


def _media_type(typ: object) -> str:
    """RFC 7515 section 4.1.9: ``typ`` compares case-insensitively; ``application/`` may be left out."""
    if typ is None:
        return ""
    text = str(typ).lower()
    return text.removeprefix("application/")


def verify_client_assertion(
    assertion: str,
    client_key_set: KeySet,
    *,
    client_id: str,
    token_endpoint: str,
    now: float | None = None,
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
) -> dict[str, Any]:
    """RFC 7523 section 3: the claims of a client's signed JWT assertion.

    The caller keeps ``jti`` values until ``exp`` plus ``leeway_seconds`` (as long as this
    function would still accept the assertion) to refuse replays.
    """
    code = "invalid_client"
    _header, claims = _verify_signature(assertion, client_key_set, error=code)
    current = _now(now)
    _check_issuer(claims, client_id, code)
    if claims.get("sub") != client_id:
        raise InvalidToken("wrong subject", error=code)
    _check_audience(claims, token_endpoint, code)
    _check_times(claims, current, leeway_seconds, code, require_iat=False)
    if claims["exp"] > current + ASSERTION_MAX_LIFETIME_SECONDS + leeway_seconds:
        raise InvalidToken("assertion expires too far ahead", error=code)
    _require_string(claims, "jti", code)
    return claims


# ---------------------------------------------------------------------- internals


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


def _verify_signature(
    token: str, key_set: KeySet, *, error: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header first, alg check, key choice, signature; returns (header, claims)."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("malformed token", error=error)
    parts = token.split(".")
    if len(parts) != 3 or not all(_B64URL.fullmatch(part) for part in parts):
        raise InvalidToken("malformed token", error=error)
    header = _json_object(parts[0], error)

    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ACCEPTED_ALGS:
        raise InvalidToken("unsupported alg", error=error)
    if "crit" in header or "b64" in header:  # no JWS extensions are understood here
        raise InvalidToken("malformed token", error=error)

    key = _choose_key(key_set, header, alg, error)
    try:
        verified = jws.deserialize_compact(token, key, algorithms=[alg])
    except BadSignatureError as exc:
        raise InvalidToken("bad signature", error=error) from exc
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidToken("malformed token", error=error) from exc
    if verified.payload is None:
        raise InvalidToken("malformed token", error=error)
    claims = _parse_json(verified.payload, error)
    return header, claims


def _choose_key(key_set: KeySet, header: dict[str, Any], alg: str, error: str) -> Key:
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("malformed token", error=error)
    keys = list(key_set.keys)
    if kid is None:
        # without a kid only a set of one key says which key was meant
        if len(keys) != 1:
            raise InvalidToken("unknown signing key", error=error)
        candidates = keys
    else:
        candidates = [key for key in keys if key.kid == kid]
    for key in candidates:
        if _fits(key, alg):
            return key
    raise InvalidToken("unknown signing key", error=error)


def _fits(key: Key, alg: str) -> bool:
    kty, curve = _KEY_FOR_ALG[alg]
    if key.get("use") not in (None, "sig") or key.get("alg") not in (None, alg):
        return False
    if kty == "EC":
        return isinstance(key, ECKey) and key.curve_name == curve
    return isinstance(key, RSAKey)


def _json_object(segment: str, error: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("malformed token", error=error) from exc
    return _parse_json(raw, error)


def _parse_json(raw: bytes, error: str) -> dict[str, Any]:
    """Strict JSON: an object, no duplicate names, no NaN or Infinity."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, value in pairs:
            if name in result:
                raise ValueError(f"duplicate member {name!r}")
            result[name] = value
        return result

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidToken("malformed token", error=error) from exc
    if not isinstance(value, dict):
        raise InvalidToken("malformed token", error=error)
    return value


def _check_issuer(claims: dict[str, Any], issuer: str, error: str) -> None:
    if claims.get("iss") != issuer:
        raise InvalidToken("wrong issuer", error=error)


def _check_audience(claims: dict[str, Any], audience: str, error: str) -> None:
    aud = claims.get("aud")
    if isinstance(aud, str):
        ok = aud == audience
    elif isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        ok = audience in aud
    else:
        ok = False
    if not ok:
        raise InvalidToken("wrong audience", error=error)


def _number(claims: dict[str, Any], name: str, error: str, *, required: bool) -> float | None:
    if name not in claims:
        if required:
            raise InvalidToken(f"missing {name} claim", error=error)
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken(f"invalid {name} claim", error=error)
    return float(value)


def _check_times(
    claims: dict[str, Any], now: float, leeway: int, error: str, *, require_iat: bool
) -> None:
    exp = _number(claims, "exp", error, required=True)
    assert exp is not None
    if exp <= now - leeway:
        raise InvalidToken("token expired", error=error)
    nbf = _number(claims, "nbf", error, required=False)
    if nbf is not None and nbf > now + leeway:
        raise InvalidToken("token not yet valid", error=error)
    iat = _number(claims, "iat", error, required=require_iat)
    if iat is not None and iat > now + leeway:
        raise InvalidToken("token not yet valid", error=error)


def _require_string(claims: dict[str, Any], name: str, error: str) -> None:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"missing {name} claim", error=error)

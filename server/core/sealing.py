"""Sealed tokens: small JSON payloads under AES-256-GCM (NIST SP 800-38D), bound and expiring.

Every opaque token the gateway hands to a client and later takes back (FHIR paging
cursors, the AuditEvent page position) goes through :func:`seal` / :func:`unseal`:

* the payload is encrypted, so a client learns nothing from a token (no sort keys,
  no study times, no UIDs);
* the token is authenticated, so a changed byte is refused;
* the *binding* (who asked, and which query) is the GCM associated data, so a token
  made for one caller or one query is refused for another;
* an expiry travels inside the ciphertext and is checked on the way back.

Pure functions: the key is passed in (``server.security.keys.InstallationSecret``
derives it from the installation secret).
"""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"
NONCE_BYTES = 12
KEY_BYTES = 32
MAX_TOKEN_CHARS = 4096


class SealError(Exception):
    """A token that is not one this installation sealed for this binding (or has expired)."""


class ExpiredSeal(SealError):
    pass


def seal(key: bytes, binding: bytes, payload: Any, *, expires: float) -> str:
    """An opaque URL-safe token carrying ``payload`` until ``expires`` (epoch seconds)."""
    _check_key(key)
    nonce = os.urandom(NONCE_BYTES)
    plain = orjson.dumps({"p": payload, "e": int(expires)})
    sealed = AESGCM(key).encrypt(nonce, plain, VERSION + binding)
    return base64.urlsafe_b64encode(VERSION + nonce + sealed).decode().rstrip("=")


def unseal(key: bytes, binding: bytes, token: str, *, now: float) -> Any:
    """The payload of ``token``; SealError if it was changed, made for another binding or expired."""
    _check_key(key)
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise SealError("not a sealed token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError) as exc:
        raise SealError("not a sealed token") from exc
    if len(raw) < 1 + NONCE_BYTES + 16 or raw[:1] != VERSION:
        raise SealError("not a sealed token")
    nonce, sealed = raw[1 : 1 + NONCE_BYTES], raw[1 + NONCE_BYTES :]
    try:
        plain = AESGCM(key).decrypt(nonce, sealed, VERSION + binding)
    except InvalidTag as exc:
        raise SealError("token was changed or belongs to another caller or query") from exc
    body = orjson.loads(plain)
    if not isinstance(body, dict) or not isinstance(body.get("e"), int):
        raise SealError("not a sealed token")
    if body["e"] < now:
        raise ExpiredSeal("token has expired")
    return body.get("p")


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"a sealing key has {KEY_BYTES} bytes, not {len(key)}")

"""server.core.sealing: sealed tokens are opaque, authenticated, bound and expiring."""

from __future__ import annotations

import base64

import pytest

from server.core.sealing import ExpiredSeal, SealError, seal, unseal

KEY, OTHER_KEY = bytes(range(32)), bytes(range(1, 33))
BINDING = b'["fhir-search",["iss","client-x",null,false],"ImagingStudy",[["_count","1"]]]'
PAYLOAD = [False, ["2020-01-01T10:00:00.000000", "1.2.826.0.1.3680043.8.498.1"]]


def test_round_trip_and_opacity() -> None:
    token = seal(KEY, BINDING, PAYLOAD, expires=2000)
    assert unseal(KEY, BINDING, token, now=1000) == PAYLOAD
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"2020" not in raw and b"1.2.826" not in raw
    assert seal(KEY, BINDING, PAYLOAD, expires=2000) != token  # a fresh nonce each time


@pytest.mark.parametrize("position", range(0, 60, 3))
def test_every_changed_character_is_refused(position: int) -> None:
    token = seal(KEY, BINDING, PAYLOAD, expires=2000)
    if position >= len(token):
        return
    changed = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
    with pytest.raises(SealError):
        unseal(KEY, BINDING, changed, now=1000)


@pytest.mark.parametrize(
    "key, binding",
    [(OTHER_KEY, BINDING), (KEY, BINDING.replace(b"client-x", b"client-z")),
     (KEY, BINDING.replace(b'"1"', b'"2"')), (KEY, b"")],
)  # fmt: skip
def test_another_key_caller_or_query_is_refused(key: bytes, binding: bytes) -> None:
    token = seal(KEY, BINDING, PAYLOAD, expires=2000)
    with pytest.raises(SealError):
        unseal(key, binding, token, now=1000)


def test_expiry() -> None:
    token = seal(KEY, BINDING, PAYLOAD, expires=2000)
    assert unseal(KEY, BINDING, token, now=2000) == PAYLOAD
    with pytest.raises(ExpiredSeal):
        unseal(KEY, BINDING, token, now=2001)


@pytest.mark.parametrize("token", ["", "x", "!!!!", "A" * 5000, "AQ", "Ag" + "A" * 60])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(SealError):
        unseal(KEY, BINDING, token, now=0)


def test_keys_have_32_bytes() -> None:
    with pytest.raises(ValueError):
        seal(b"short", BINDING, PAYLOAD, expires=1)

"""Secrets in the shared database: every replica gets the same ones, created once."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.security.keys import InstallationSecret, SigningKeys, patient_id_key
from server.security.pseudonym_secrets import PseudonymSecrets, SecretConflict
from server.security.shared_secrets import SharedSecrets


def test_two_replicas_get_one_installation_secret(database_url: str, tmp_path: Path) -> None:
    one, two = SharedSecrets(database_url), SharedSecrets(database_url)
    try:
        first = InstallationSecret.load_or_create_shared(one).patient_id_key()
        assert InstallationSecret.load_or_create_shared(two).patient_id_key() == first
        assert patient_id_key(tmp_path / "elsewhere", database_url) == first
        assert not (tmp_path / "elsewhere").exists()  # nothing written to a data directory
    finally:
        one.close()
        two.close()


def test_two_replicas_sign_with_one_key_and_rotate_together(database_url: str) -> None:
    one, two = SharedSecrets(database_url), SharedSecrets(database_url)
    try:
        first = SigningKeys.load_or_create_shared(one, "ES256")
        second = SigningKeys.load_or_create_shared(two, "ES256")
        assert first.signing_kid == second.signing_kid
        token = first.sign({"sub": "x"})
        from joserfc import jwt

        assert jwt.decode(token, second.key_set).claims["sub"] == "x"
        rotated = SigningKeys.load_or_create_shared(two, "PS256")  # a new alg: a new key
        assert rotated.signing_alg == "PS256" and len(rotated.kids) == 2
        again = SigningKeys.load_or_create_shared(one, "PS256")
        assert again.kids == rotated.kids
        with pytest.raises(ValueError, match="cannot create signing keys"):
            SigningKeys.load_or_create_shared(one, "HS256")
    finally:
        one.close()
        two.close()


def test_pseudonym_secrets_are_created_once_and_never_change(
    database_url: str, tmp_path: Path
) -> None:
    one = PseudonymSecrets(tmp_path / "a", SharedSecrets(database_url))
    two = PseudonymSecrets(tmp_path / "b", SharedSecrets(database_url))
    try:
        assert two.read("lung") is None
        secret, created = one.get_or_create("lung")
        assert created
        assert two.get_or_create("lung") == (secret, False)
        assert two.read("lung") == secret
        with pytest.raises(SecretConflict):
            two.get_or_create("lung", "x" * 20 + "abcdefghijklmnop")
        one.remove("lung")
        assert two.read("lung") is None
        assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    finally:
        one.close()
        two.close()

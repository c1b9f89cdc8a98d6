"""RFC 9068 / RFC 7519 section 7.2 / RFC 7523 section 3: signing keys, access tokens, assertions.

Real keys and real signatures throughout; forged tokens are built by hand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from server.security.keys import SigningKeys
from server.security.tokens import (
    ACCEPTED_ALGS,
    ExternalPolicy,
    InvalidToken,
    TokenSettings,
    issue_access_token,
    verify_access_token,
    verify_client_assertion,
    verify_external_token,
)

pytestmark = pytest.mark.index_independent  # not in the Elasticsearch pass

NOW = 1_700_000_000
SETTINGS = TokenSettings(issuer="https://gateway.example", audience="https://gateway.example/api")
TOKEN_ENDPOINT = "https://gateway.example/auth/token"
posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


# ---------------------------------------------------------------------- helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def header_of(token: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(token.split(".")[0])))


def payload_of(token: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(token.split(".")[1])))


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": SETTINGS.issuer,
        "aud": SETTINGS.audience,
        "sub": "user-1",
        "client_id": "client-1",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 300,
        "jti": "a" * 32,
        "scope": "system/ImagingStudy.rs",
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def rejected(token: str, keys: SigningKeys, *, now: float = NOW) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        verify_access_token(token, keys.key_set, SETTINGS, now=now)
    return caught.value


def public_pem(key: Any) -> bytes:
    assert isinstance(key, ECKey | RSAKey)
    return key.as_pem(private=False)


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


@pytest.fixture(scope="module")
def es_keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    return SigningKeys.load_or_create(tmp_path_factory.mktemp("es"), "ES256")


@pytest.fixture(scope="module")
def rs_keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    return SigningKeys.load_or_create(tmp_path_factory.mktemp("rs"), "RS256")


@pytest.fixture(params=["ES256", "RS256"])
def keys(request: pytest.FixtureRequest, es_keys: SigningKeys, rs_keys: SigningKeys) -> SigningKeys:
    return es_keys if request.param == "ES256" else rs_keys


# ---------------------------------------------------------------------- keys


def test_accepted_algs_exclude_none_and_hmac() -> None:
    assert "none" not in ACCEPTED_ALGS
    assert not any(alg.startswith("HS") for alg in ACCEPTED_ALGS)


@posix_only
def test_keys_created_on_first_start_with_private_modes(tmp_path: Path) -> None:
    keys = SigningKeys.load_or_create(tmp_path)
    key_dir = tmp_path / "keys"
    files = sorted(key_dir.glob("*.json"))
    assert len(files) == 1
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    stored = json.loads(files[0].read_text())
    assert stored["kty"] == "EC" and stored["crv"] == "P-256" and "d" in stored
    assert stored["kid"] == keys.signing_kid

    again = SigningKeys.load_or_create(tmp_path)
    assert again.signing_kid == keys.signing_kid
    assert sorted(key_dir.glob("*.json")) == files


def test_kid_is_the_rfc7638_thumbprint(tmp_path: Path) -> None:
    keys = SigningKeys.load_or_create(tmp_path)
    (public,) = keys.jwks()["keys"]
    required = {name: public[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode()
    assert public["kid"] == b64url(hashlib.sha256(canonical).digest())


@posix_only
def test_reload_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    SigningKeys.load_or_create(tmp_path)
    (path,) = (tmp_path / "keys").glob("*.json")
    path.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        SigningKeys.load_or_create(tmp_path)


def test_rs256_keys_are_2048_bit_rsa(rs_keys: SigningKeys) -> None:
    (public,) = rs_keys.jwks()["keys"]
    assert public["kty"] == "RSA" and public["alg"] == "RS256"
    assert len(b64url_decode(public["n"])) * 8 == 2048


def test_jwks_has_public_parts_only(keys: SigningKeys) -> None:
    jwks = keys.jwks()
    assert len(jwks["keys"]) == 1
    (public,) = jwks["keys"]
    for private_member in ("d", "p", "q", "dp", "dq", "qi"):
        assert private_member not in public
    assert public["kid"] == keys.signing_kid
    assert public["use"] == "sig"
    assert public["alg"] == keys.signing_alg
    # the published set works for verification on its own
    token, _ = issue_access_token(keys, SETTINGS, subject="u", client_id="c", scope="x", now=NOW)
    published = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    assert verify_access_token(token, published, SETTINGS, now=NOW)["sub"] == "u"


def test_rotation_keeps_old_tokens_valid(tmp_path: Path) -> None:
    keys = SigningKeys.load_or_create(tmp_path)
    old_kid = keys.signing_kid
    old_token, _ = issue_access_token(keys, SETTINGS, subject="u", client_id="c", scope="", now=NOW)

    keys.rotate()
    new_kid = keys.signing_kid
    assert new_kid != old_kid
    new_token, _ = issue_access_token(keys, SETTINGS, subject="u", client_id="c", scope="", now=NOW)
    assert header_of(old_token)["kid"] == old_kid
    assert header_of(new_token)["kid"] == new_kid
    assert {k["kid"] for k in keys.jwks()["keys"]} == {old_kid, new_kid}
    for token in (old_token, new_token):
        verify_access_token(token, keys.key_set, SETTINGS, now=NOW)

    reloaded = SigningKeys.load_or_create(tmp_path)
    assert reloaded.signing_kid == new_kid
    assert reloaded.kids == [old_kid, new_kid]
    verify_access_token(old_token, reloaded.key_set, SETTINGS, now=NOW)


def test_changing_alg_adds_a_key_of_the_new_kind(tmp_path: Path) -> None:
    es = SigningKeys.load_or_create(tmp_path, "ES256")
    token, _ = issue_access_token(es, SETTINGS, subject="u", client_id="c", scope="", now=NOW)
    rs = SigningKeys.load_or_create(tmp_path, "RS256")
    assert rs.signing_alg == "RS256"
    assert rs.kids == [es.signing_kid, rs.signing_kid]
    verify_access_token(token, rs.key_set, SETTINGS, now=NOW)


def test_unknown_alg_for_new_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HS256"):
        SigningKeys.load_or_create(tmp_path, "HS256")


def _write(path: Path, data: Any, mode: int) -> Path:
    path.write_text(json.dumps(data))
    path.chmod(mode)
    return path


@posix_only
def test_configured_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = ECKey.generate_key("P-256")
    path = _write(tmp_path / "signing.jwk", key.as_dict(private=True), 0o640)
    with pytest.raises(ValueError, match="group or other"):
        SigningKeys.from_jwk_file(path)


def test_configured_key_file_signs_with_its_kid(tmp_path: Path) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "configured-1"})
    path = _write(tmp_path / "signing.jwk", key.as_dict(private=True), 0o600)
    keys = SigningKeys.from_jwk_file(path)
    assert keys.signing_kid == "configured-1" and keys.signing_alg == "ES256"
    token, _ = issue_access_token(keys, SETTINGS, subject="u", client_id="c", scope="", now=NOW)
    assert header_of(token)["kid"] == "configured-1"
    verify_access_token(token, keys.key_set, SETTINGS, now=NOW)
    with pytest.raises(RuntimeError):
        keys.rotate()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (ECKey.generate_key("P-256").as_dict(private=False), "public key"),
        (OctKey.generate_key(256).as_dict(private=True), "cannot sign"),
        ({"kty": "EC", "crv": "P-256"}, "not a usable"),
        (["not", "a", "key"], "not a JSON Web Key"),
    ],
)
def test_configured_key_file_must_hold_a_private_signing_key(
    tmp_path: Path, data: Any, message: str
) -> None:
    path = _write(tmp_path / "signing.jwk", data, 0o600)
    with pytest.raises(ValueError, match=message):
        SigningKeys.from_jwk_file(path)


# ---------------------------------------------------------------------- access tokens


def test_issue_and_verify_roundtrip(keys: SigningKeys) -> None:
    token, claims = issue_access_token(
        keys,
        SETTINGS,
        subject="user-7",
        client_id="client-7",
        scope="system/ImagingStudy.rs  system/Patient.rs",
        extra={"organization": "org-1"},
        now=NOW,
    )
    header = header_of(token)
    assert header == {"alg": keys.signing_alg, "kid": keys.signing_kid, "typ": "at+jwt"}
    assert payload_of(token) == claims
    assert claims["iss"] == SETTINGS.issuer and claims["aud"] == SETTINGS.audience
    assert claims["sub"] == "user-7" and claims["client_id"] == "client-7"
    assert claims["iat"] == claims["nbf"] == NOW
    assert claims["exp"] == NOW + SETTINGS.lifetime_seconds
    assert len(claims["jti"]) == 32 and int(claims["jti"], 16) >= 0
    assert claims["scope"] == "system/ImagingStudy.rs system/Patient.rs"
    assert claims["organization"] == "org-1"

    assert verify_access_token(token, keys.key_set, SETTINGS, now=NOW + 10) == claims


def test_each_token_gets_its_own_jti(es_keys: SigningKeys) -> None:
    jtis = {
        issue_access_token(es_keys, SETTINGS, subject="u", client_id="c", scope="", now=NOW)[1][
            "jti"
        ]
        for _ in range(5)
    }
    assert len(jtis) == 5


def test_extra_claims_cannot_replace_registered_ones(es_keys: SigningKeys) -> None:
    with pytest.raises(ValueError, match="iss"):
        issue_access_token(
            es_keys, SETTINGS, subject="u", client_id="c", scope="", extra={"iss": "x"}
        )


def test_leeway_and_audience_lists_are_honoured(es_keys: SigningKeys) -> None:
    token, _ = issue_access_token(es_keys, SETTINGS, subject="u", client_id="c", scope="", now=NOW)
    # 20 s past exp is inside the 30 s leeway; 20 s before nbf too
    verify_access_token(token, es_keys.key_set, SETTINGS, now=NOW + 300 + 20)
    verify_access_token(token, es_keys.key_set, SETTINGS, now=NOW - 20)
    listed = es_keys.sign(
        good_claims(aud=["https://other.example", SETTINGS.audience]), typ="at+jwt"
    )
    verify_access_token(listed, es_keys.key_set, SETTINGS, now=NOW)


def test_expired_token_is_rejected(keys: SigningKeys) -> None:
    token, _ = issue_access_token(keys, SETTINGS, subject="u", client_id="c", scope="", now=NOW)
    assert rejected(token, keys, now=NOW + 300 + 31).message == "token expired"


def test_token_not_yet_valid_is_rejected(es_keys: SigningKeys) -> None:
    token = es_keys.sign(good_claims(nbf=NOW + 120, iat=NOW), typ="at+jwt")
    assert rejected(token, es_keys).message == "token not yet valid"
    issued_later, _ = issue_access_token(
        es_keys, SETTINGS, subject="u", client_id="c", scope="", now=NOW + 600
    )
    assert rejected(issued_later, es_keys).message == "token not yet valid"


def test_wrong_issuer_is_rejected(es_keys: SigningKeys) -> None:
    other = TokenSettings(issuer="https://evil.example", audience=SETTINGS.audience)
    token, _ = issue_access_token(es_keys, other, subject="u", client_id="c", scope="", now=NOW)
    assert rejected(token, es_keys).message == "wrong issuer"
    missing = es_keys.sign(good_claims(iss=None), typ="at+jwt")
    assert rejected(missing, es_keys).message == "wrong issuer"


@pytest.mark.parametrize("aud", ["https://other.example", ["https://other.example"], 7, None])
def test_wrong_audience_is_rejected(es_keys: SigningKeys, aud: Any) -> None:
    token = es_keys.sign(good_claims(aud=aud), typ="at+jwt")  # None: no aud at all
    assert rejected(token, es_keys).message == "wrong audience"


def test_alg_none_is_rejected(keys: SigningKeys) -> None:
    token = f"{b64url_json({'alg': 'none'})}.{b64url_json(good_claims())}."
    assert rejected(token, keys).message == "unsupported alg"
    with_kid = {"alg": "none", "kid": keys.signing_kid, "typ": "at+jwt"}
    token = f"{b64url_json(with_kid)}.{b64url_json(good_claims())}."
    assert rejected(token, keys).message == "unsupported alg"
    spelled = f"{b64url_json({'alg': 'None'})}.{b64url_json(good_claims())}."
    assert rejected(spelled, keys).message == "unsupported alg"


def test_hs256_with_the_public_key_as_secret_is_rejected(keys: SigningKeys) -> None:
    (public,) = keys.key_set.keys
    header = {"alg": "HS256", "kid": keys.signing_kid, "typ": "at+jwt"}
    secrets = [
        json.dumps(keys.jwks()["keys"][0]).encode(),
        json.dumps(public.as_dict(private=False), separators=(",", ":")).encode(),
        public_pem(public),
    ]
    for secret in secrets:
        token = hs256(header, good_claims(), secret)
        error = rejected(token, keys)
        assert error.message == "unsupported alg"
        assert error.error == "invalid_token"


def test_tampered_payload_is_rejected(keys: SigningKeys) -> None:
    token, claims = issue_access_token(
        keys, SETTINGS, subject="user", client_id="c", scope="system/Patient.rs", now=NOW
    )
    head, _, signature = token.split(".")
    forged = {**claims, "scope": "system/*.cruds", "sub": "admin"}
    tampered = f"{head}.{b64url_json(forged)}.{signature}"
    assert rejected(tampered, keys).message == "bad signature"
    # a changed signature byte as well
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert rejected(f"{head}.{token.split('.')[1]}.{flipped}", keys).message == "bad signature"


def test_unknown_kid_is_rejected(es_keys: SigningKeys, tmp_path: Path) -> None:
    stranger = SigningKeys.load_or_create(tmp_path, "ES256")
    token, _ = issue_access_token(stranger, SETTINGS, subject="u", client_id="c", scope="", now=NOW)
    assert rejected(token, es_keys).message == "unknown signing key"


def test_key_from_another_set_claiming_our_kid_is_rejected(es_keys: SigningKeys) -> None:
    stranger = ECKey.generate_key("P-256")
    header = {"alg": "ES256", "kid": es_keys.signing_kid, "typ": "at+jwt"}
    # an embedded jwk header must not be trusted either
    header_with_jwk = {**header, "jwk": stranger.as_dict(private=False)}
    for head in (header, header_with_jwk):
        token = jwt.encode(head, good_claims(), stranger, algorithms=["ES256"])
        assert rejected(token, es_keys).message == "bad signature"


def test_missing_kid_is_rejected_when_several_keys_could_match(tmp_path: Path) -> None:
    keys = SigningKeys.load_or_create(tmp_path, "ES256")
    keys.rotate()
    signer = ECKey.import_key(
        json.loads(sorted((tmp_path / "keys").glob("*.json"))[-1].read_text())
    )
    token = jwt.encode(
        {"alg": "ES256", "typ": "at+jwt"}, good_claims(), signer, algorithms=["ES256"]
    )
    assert rejected(token, keys).message == "unknown signing key"


def test_alg_that_does_not_fit_the_key_is_rejected(es_keys: SigningKeys) -> None:
    rsa = RSAKey.generate_key(2048)
    header = {"alg": "RS256", "kid": es_keys.signing_kid, "typ": "at+jwt"}
    token = jwt.encode(header, good_claims(), rsa, algorithms=["RS256"])
    assert rejected(token, es_keys).message == "unknown signing key"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "...",
        "a.b.c.d.e",
        "!!!.***.???",
        "eyJhbGciOiJFUzI1NiJ9==.e30.AAAA",
        f"{b64url(b'not json')}.{b64url_json({})}.AAAA",
        f"{b64url_json(['alg', 'ES256'])}.{b64url_json({})}.AAAA",
        "x" * 20_000,
    ],
)
def test_garbage_is_rejected_as_malformed(es_keys: SigningKeys, token: str) -> None:
    assert rejected(token, es_keys).message == "malformed token"


def test_payload_that_is_not_an_object_is_malformed(tmp_path: Path) -> None:
    keys = SigningKeys.load_or_create(tmp_path, "ES256")
    (path,) = (tmp_path / "keys").glob("*.json")
    signing_key = ECKey.import_key(json.loads(path.read_text()))
    header = {"alg": "ES256", "kid": keys.signing_kid, "typ": "at+jwt"}
    token = jws.serialize_compact(header, b"[1, 2, 3]", signing_key, algorithms=["ES256"])
    assert rejected(token, keys).message == "malformed token"
    duplicated = b'{"iss": "https://evil.example", "iss": "%s"}' % SETTINGS.issuer.encode()
    token = jws.serialize_compact(header, duplicated, signing_key, algorithms=["ES256"])
    assert rejected(token, keys).message == "malformed token"


def test_non_finite_expiry_is_refused(es_keys: SigningKeys) -> None:
    token = es_keys.sign(good_claims(exp=float("inf")), typ="at+jwt")
    assert rejected(token, es_keys).message == "malformed token"
    token = es_keys.sign(good_claims(exp="tomorrow"), typ="at+jwt")
    assert rejected(token, es_keys).message == "invalid exp claim"


@pytest.mark.parametrize("claim", ["jti", "exp", "iat", "sub", "client_id"])
def test_missing_required_claim_is_rejected(es_keys: SigningKeys, claim: str) -> None:
    token = es_keys.sign(good_claims(**{claim: None}), typ="at+jwt")
    assert rejected(token, es_keys).message == f"missing {claim} claim"


def test_other_token_types_are_not_access_tokens(es_keys: SigningKeys) -> None:
    token = es_keys.sign(good_claims())  # typ "JWT", e.g. an ID token
    assert rejected(token, es_keys).message == "wrong token type"


def test_error_description_is_header_safe() -> None:
    error = InvalidToken('bad "thing" \\ here\n')
    assert error.message == 'bad "thing" \\ here\n'
    assert error.description == "bad ?thing? ? here?"


# ---------------------------------------------------------------------- external tokens


@pytest.fixture(scope="module")
def provider() -> tuple[RSAKey, KeySet]:
    key = RSAKey.generate_key(2048, parameters={"kid": "idp-1"})
    public = RSAKey.import_key(key.as_dict(private=False))
    return key, KeySet([public])


def idp_token(key: RSAKey, header_typ: str | None = "at+jwt", **changes: Any) -> str:
    base: dict[str, Any] = {"iss": "https://idp.example/realms/eucaim", "aud": "gateway"}
    claims = good_claims(**{**base, **changes})
    typ = {"typ": header_typ} if header_typ is not None else {}
    header = {"alg": "RS256", "kid": "idp-1"} | typ
    # jws, not jwt.encode: that one adds typ JWT to a header without typ
    return jws.serialize_compact(header, json.dumps(claims).encode(), key, algorithms=["RS256"])


IDP = ExternalPolicy(issuer="https://idp.example/realms/eucaim", audience="gateway")


def test_external_token_is_verified(provider: tuple[RSAKey, KeySet]) -> None:
    key, key_set = provider
    token = idp_token(key)
    claims = verify_external_token(token, key_set, IDP, now=NOW)
    assert claims["sub"] == "user-1"
    # typ JWT (Keycloak, Entra ID) and application/at+jwt are access tokens too
    for typ in ("JWT", "jwt", "application/at+jwt", "AT+JWT"):
        assert verify_external_token(idp_token(key, header_typ=typ), key_set, IDP, now=NOW)
    # a provider with a single key may leave out the kid
    no_kid = jwt.encode({"alg": "RS256", "typ": "at+jwt"}, payload_of(token), key, algorithms=["RS256"])  # fmt: skip
    assert verify_external_token(no_kid, key_set, IDP, now=NOW)
    # an operator may accept tokens without typ for a provider that sends none
    untyped = ExternalPolicy(IDP.issuer, IDP.audience, types=frozenset({"at+jwt", ""}))
    assert verify_external_token(idp_token(key, header_typ=None), key_set, untyped, now=NOW)
    # the lifetime bound is inclusive
    lifetime = dict(iat=NOW - 10, nbf=NOW - 10, exp=NOW - 10 + IDP.max_lifetime_seconds)
    assert verify_external_token(idp_token(key, **lifetime), key_set, IDP, now=NOW)


@pytest.mark.parametrize(
    ("typ", "changes", "issuer", "message"),
    [
        ("at+jwt", {}, "https://other-idp.example", "wrong issuer"),
        ("at+jwt", {"aud": "account"}, None, "wrong audience"),
        ("at+jwt", {"aud": ["account", "other"]}, None, "wrong audience"),
        ("at+jwt", {"aud": None}, None, "wrong audience"),
        ("at+jwt", {"exp": NOW - 60}, None, "token expired"),
        ("at+jwt", {"exp": None}, None, "missing exp claim"),
        ("at+jwt", {"iat": None}, None, "missing iat claim"),
        ("at+jwt", {"jti": None}, None, "missing jti claim"),
        ("at+jwt", {"sub": None}, None, "missing sub claim"),
        ("at+jwt", {"iat": NOW - 10, "exp": NOW + 3591}, None, "token lifetime exceeds the configured maximum"),
        ("at+jwt", {"iat": NOW - 86400, "nbf": None, "exp": NOW + 60}, None, "token lifetime exceeds the configured maximum"),
        (None, {}, None, "wrong token type"),
        ("id+jwt", {}, None, "wrong token type"),
        ("dpop+jwt", {}, None, "wrong token type"),
        ("logout+jwt", {}, None, "wrong token type"),
        ("JOSE", {}, None, "wrong token type"),
        ("JWT", {"nonce": "n-1"}, None, "an ID token is not an access token"),
        ("JWT", {"at_hash": "abc"}, None, "an ID token is not an access token"),
        ("JWT", {"c_hash": "abc"}, None, "an ID token is not an access token"),
        ("JWT", {"typ": "ID"}, None, "an ID token is not an access token"),
    ],
)  # fmt: skip
def test_external_token_rejections(
    provider: tuple[RSAKey, KeySet],
    typ: str | None,
    changes: dict[str, Any],
    issuer: str | None,
    message: str,
) -> None:
    key, key_set = provider
    policy = ExternalPolicy(issuer or IDP.issuer, IDP.audience)
    with pytest.raises(InvalidToken) as caught:
        verify_external_token(idp_token(key, header_typ=typ, **changes), key_set, policy, now=NOW)
    assert caught.value.message == message


def test_external_hs256_with_public_key_is_rejected(provider: tuple[RSAKey, KeySet]) -> None:
    _key, key_set = provider
    public = key_set.keys[0]
    claims = good_claims(iss="https://idp.example/realms/eucaim")
    token = hs256({"alg": "HS256", "kid": "idp-1"}, claims, public_pem(public))
    with pytest.raises(InvalidToken, match="unsupported alg"):
        verify_external_token(token, key_set, IDP, now=NOW)


# ---------------------------------------------------------------------- client assertions


@pytest.fixture(scope="module")
def client_key() -> tuple[ECKey, KeySet]:
    key = ECKey.generate_key("P-384", parameters={"kid": "client-key-1"})
    public = ECKey.import_key(key.as_dict(private=False))
    return key, KeySet([public])


def assertion(
    key: ECKey | RSAKey, alg: str = "ES384", kid: str = "client-key-1", **changes: Any
) -> str:
    claims: dict[str, Any] = {
        "iss": "client-1",
        "sub": "client-1",
        "aud": TOKEN_ENDPOINT,
        "exp": NOW + 240,
        "jti": "assertion-1",
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    header = {"alg": alg, "kid": kid, "typ": "JWT"}
    return jwt.encode(header, claims, key, algorithms=[alg])


def check_assertion(token: str, key_set: KeySet) -> dict[str, Any]:
    return verify_client_assertion(
        token, key_set, client_id="client-1", token_endpoint=TOKEN_ENDPOINT, now=NOW
    )


def test_good_client_assertion_passes(client_key: tuple[ECKey, KeySet]) -> None:
    key, key_set = client_key
    claims = check_assertion(assertion(key), key_set)
    assert claims["jti"] == "assertion-1" and claims["iss"] == claims["sub"] == "client-1"
    listed = assertion(key, aud=[TOKEN_ENDPOINT, "https://elsewhere.example"])
    assert check_assertion(listed, key_set)["aud"][0] == TOKEN_ENDPOINT


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"aud": "https://gateway.example/other"}, "wrong audience"),
        ({"aud": ["https://gateway.example/other"]}, "wrong audience"),
        ({"sub": "client-2"}, "wrong subject"),
        ({"iss": "client-2"}, "wrong issuer"),
        ({"iss": "client-2", "sub": "client-2"}, "wrong issuer"),
        ({"exp": NOW - 120}, "token expired"),
        ({"exp": None}, "missing exp claim"),
        ({"exp": NOW + 3600}, "assertion expires too far ahead"),
        ({"jti": None}, "missing jti claim"),
        ({"nbf": NOW + 600}, "token not yet valid"),
    ],
)
def test_bad_client_assertions_are_rejected(
    client_key: tuple[ECKey, KeySet], changes: dict[str, Any], message: str
) -> None:
    key, key_set = client_key
    with pytest.raises(InvalidToken) as caught:
        check_assertion(assertion(key, **changes), key_set)
    assert caught.value.message == message
    assert caught.value.error == "invalid_client"


def test_client_assertion_signed_with_another_key_is_rejected(
    client_key: tuple[ECKey, KeySet],
) -> None:
    _key, key_set = client_key
    other = ECKey.generate_key("P-384")
    with pytest.raises(InvalidToken, match="bad signature"):
        check_assertion(assertion(other), key_set)
    with pytest.raises(InvalidToken, match="unknown signing key"):
        check_assertion(assertion(other, kid="someone-else"), key_set)


def test_client_assertion_with_alg_none_or_hmac_is_rejected(
    client_key: tuple[ECKey, KeySet],
) -> None:
    _key, key_set = client_key
    claims = payload_of(assertion(client_key[0]))
    none = f"{b64url_json({'alg': 'none', 'kid': 'client-key-1'})}.{b64url_json(claims)}."
    secret = public_pem(key_set.keys[0])
    mac = hs256({"alg": "HS256", "kid": "client-key-1"}, claims, secret)
    for token in (none, mac):
        with pytest.raises(InvalidToken, match="unsupported alg"):
            check_assertion(token, key_set)

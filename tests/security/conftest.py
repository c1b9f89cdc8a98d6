"""Shared pieces of the live authorisation tests: gateways with OAuth2 on, clients, tokens,
stored studies, forged tokens, and the leak check every response goes through."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pydicom
from fhir.resources.R4B.auditevent import AuditEvent

from server.core.fhir.imaging import patient_id
from server.security.keys import SigningKeys, patient_id_key
from tests.helpers import cohort, multipart_body, part10
from tests.live import LiveServer

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
DICOM_JSON = "application/dicom+json"
FHIR_JSON = "application/fhir+json"


# Production servers apply the ``basic`` de-identification profile by default. These suites
# test access control by the identifiers they sent (UIDs in URLs, the leak checks), so
# their datasets are created with an explicit ``none`` policy (synthetic data stored as
# sent). De-identification under production settings is tested in tests/deid.
AS_SENT = ("--deidentify", "none")


def auth_env(*, public_read: bool = False, **extra: str) -> dict[str, str]:
    return {
        "GATEWAY_ENVIRONMENT": "production",
        "GATEWAY_AUTH__ENABLED": "true",
        "GATEWAY_AUTH__PUBLIC_READ": "true" if public_read else "false",
        "GATEWAY_AUTH__AGREEMENT_CACHE_SECONDS": "0.2",
        **extra,
    }


def cli_ok(live: LiveServer, *args: str) -> str:
    done = live.cli(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@dataclass(frozen=True)
class Registered:
    client_id: str
    secret: str | None


def add_client(live: LiveServer, name: str, *options: str) -> Registered:
    out = cli_ok(live, "clients", "add", "--name", name, *options)
    found = re.search(r"client_id: (\S+)", out)
    assert found, out
    secret = re.search(r"client_secret: (\S+)", out)
    return Registered(found[1], secret[1] if secret else None)


def token_response(
    live: LiveServer, client: Registered, scope: str | None = None, **form: str
) -> httpx.Response:
    data = {"grant_type": "client_credentials", **form}
    if scope is not None:
        data["scope"] = scope
    assert client.secret is not None
    return httpx.post(
        f"{live.url}/oauth/token", data=data, auth=(client.client_id, client.secret), timeout=30
    )


def token(live: LiveServer, client: Registered, scope: str | None = None) -> str:
    answer = token_response(live, client, scope)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def bearer(access_token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"} if access_token else {}


# ---------------------------------------------------------------------- studies


@dataclass
class Study:
    """One stored study and every identifier of it that must never leak."""

    dataset: str
    study_uid: str
    series_uid: str
    sop_uid: str
    patient: str  # PatientID
    patient_ref: str  # FHIR Patient id
    uids: set[str] = field(default_factory=set)

    @property
    def secrets(self) -> set[str]:
        return {self.dataset, self.patient, self.patient_ref, *self.uids}


def make_study(
    dataset: str, live: LiveServer | None = None, **kwargs: Any
) -> tuple[Study, list[pydicom.Dataset]]:
    """A study for ``dataset``; its FHIR Patient id is known when the gateway (``live``) is."""
    instances = cohort(**kwargs)
    first = instances[0]
    pid, issuer = str(first.PatientID), str(first.get("IssuerOfPatientID", ""))
    uids = {str(ds.StudyInstanceUID) for ds in instances}
    uids |= {str(ds.SeriesInstanceUID) for ds in instances}
    uids |= {str(ds.SOPInstanceUID) for ds in instances}
    study = Study(
        dataset=dataset,
        study_uid=str(first.StudyInstanceUID),
        series_uid=str(first.SeriesInstanceUID),
        sop_uid=str(first.SOPInstanceUID),
        patient=str(first.PatientID),
        patient_ref=patient_id(patient_id_key(live.data_dir, _database(live)), pid, issuer)
        if live
        else "",
        uids=uids,
    )
    return study, instances


def stow_into(
    live: LiveServer, dataset: str, access_token: str | None, instances: list[pydicom.Dataset]
) -> httpx.Response:
    boundary = uuid.uuid4().hex
    return httpx.post(
        f"{live.url}/datasets/{dataset}/dicom-web/studies",
        content=multipart_body([part10(ds) for ds in instances], boundary),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            **bearer(access_token),
        },
        timeout=60,
    )


def store_study(live: LiveServer, dataset: str, pusher_token: str, **kwargs: Any) -> Study:
    study, instances = make_study(dataset, live, **kwargs)
    answer = stow_into(live, dataset, pusher_token, instances)
    assert answer.status_code == 200, answer.text
    return study


# ---------------------------------------------------------------------- leaks


def assert_no_leak(response: httpx.Response, hidden: Iterable[str]) -> None:
    """None of ``hidden`` appears in the body, a header or a link of ``response``.

    Values the request itself named (a study UID in the URL) are not a leak when echoed.
    """
    asked = str(response.request.url)
    raw = response.content + b"\n".join(k + b": " + v for k, v in response.headers.raw)
    for secret in hidden:
        if secret in asked:
            continue
        assert secret.encode() not in raw, (
            f"{secret!r} leaked by {response.request.method} {asked}: "
            f"{response.status_code} {response.text[:500]}"
        )


def expect(response: httpx.Response, status: int, hidden: Iterable[str] = ()) -> httpx.Response:
    assert response.status_code == status, (
        response.request.method,
        str(response.request.url),
        response.status_code,
        response.text[:800],
    )
    assert_no_leak(response, hidden)
    return response


def challenge(response: httpx.Response, status: int = 401) -> str:
    """RFC 6750 section 3: the WWW-Authenticate header of a refused request."""
    header = response.headers.get("www-authenticate", "")
    assert header.startswith("Bearer "), (response.status_code, header, response.text[:300])
    code = "invalid_token" if status == 401 else "insufficient_scope"
    assert f'error="{code}"' in header, header
    return header


# ---------------------------------------------------------------------- forged tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def header_of(jwt_text: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(jwt_text.split(".")[0])))


def claims_of(jwt_text: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(jwt_text.split(".")[1])))


def _database(live: LiveServer) -> str | None:
    return live.env().get("GATEWAY_DATABASE_URL")


def server_keys(live: LiveServer) -> SigningKeys:
    """The gateway's own signing keys (from its data directory, or its shared database):
    forgeries that are validly signed, so only the claim being tested is wrong."""
    url = _database(live)
    if not url:
        return SigningKeys.load_or_create(live.data_dir)
    from server.security.shared_secrets import SharedSecrets

    secrets = SharedSecrets(url)
    try:
        alg = live.env().get("GATEWAY_AUTH__SIGNING_ALG", "ES256")  # the server's: no rotation
        keys = SigningKeys.load_or_create_shared(secrets, alg)
    finally:
        secrets.close()
    assert keys.kids == [k["kid"] for k in reversed(
        httpx.get(f"{live.url}/oauth/jwks", timeout=30).json()["keys"])], "not the server's keys"  # fmt: skip
    return keys


def resigned(live: LiveServer, real: str, **changes: Any) -> str:
    """``real``'s claims with ``changes`` (None removes a claim), signed by the gateway's key."""
    claims = claims_of(real)
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return server_keys(live).sign(claims, typ="at+jwt")


def forgeries(live: LiveServer, real: str) -> dict[str, str]:
    """Tokens that must all be refused with 401 invalid_token."""
    now = int(time.time())
    header, payload, signature = real.split(".")
    claims = claims_of(real)
    jwks = httpx.get(f"{live.url}/oauth/jwks").json()
    public = json.dumps(jwks["keys"][0], separators=(",", ":")).encode()
    hs_header = {**header_of(real), "alg": "HS256"}
    hs_input = f"{b64url_json(hs_header)}.{payload}"
    hs_signature = b64url(hmac.new(public, hs_input.encode(), hashlib.sha256).digest())
    tampered = b64url_json({**claims, "scope": claims["scope"] + " admin"})
    return {
        "expired": resigned(live, real, iat=now - 900, nbf=now - 900, exp=now - 600),
        "not yet valid": resigned(live, real, iat=now + 600, nbf=now + 600, exp=now + 900),
        "wrong issuer": resigned(live, real, iss="https://elsewhere.example"),
        "wrong audience": resigned(live, real, aud="https://elsewhere.example"),
        "alg none": f"{b64url_json({'alg': 'none', 'typ': 'at+jwt'})}.{payload}.",
        "HS256 with the public key": f"{hs_input}.{hs_signature}",
        "tampered payload": f"{header}.{tampered}.{signature}",
        "truncated signature": f"{header}.{payload}.{signature[:-4]}",
    }


def audit_query(event: AuditEvent) -> str:
    """The query string an AuditEvent recorded (its entity without ``what``), or ""."""
    for entity in event.entity or []:
        if entity.what is None and entity.query:
            raw = entity.query
            return (raw if isinstance(raw, bytes) else base64.b64decode(raw)).decode()
    return ""

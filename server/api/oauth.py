"""OAuth 2.0 authorization server: token endpoint (RFC 6749 §4.4, RFC 7523, RFC 8693), JWKS,
discovery (RFC 8414) and SMART configuration (SMART App Launch 2.0 §2.0.6)."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any
from urllib.parse import unquote

import orjson
from fastapi import APIRouter, Request
from joserfc.jwk import KeySet
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from server.api import login
from server.api.deps import gateway
from server.security import scopes as scope_syntax
from server.security.authn import default_scope
from server.security.clients import Client
from server.security.model import Party
from server.security.tokens import InvalidToken, issue_access_token, verify_client_assertion

router = APIRouter(tags=["OAuth 2.0"])
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
# ID tokens are not accepted as subject tokens: they are issued to a relying party, not to us
TOKEN_TYPES = {
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:access_token",
}
EXCHANGE_SCOPES = ("system/*.rs",)  # what an exchanged token may hold besides dataset scopes
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
GRANT_TYPES = ["authorization_code", "refresh_token", "client_credentials", TOKEN_EXCHANGE]
ASSERTION_ALGS = ["ES256", "RS256", "ES384", "RS384", "PS256"]
MAX_CLIENT_ID = 200


class OAuthError(Exception):
    """RFC 6749 §5.2 error response."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def _issuer(request: Request) -> str:
    return gateway(request).tokens.issuer


def _oauth_error(exc: OAuthError, retry_after: float | None = None) -> Response:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if retry_after is not None:
        headers["Retry-After"] = str(math.ceil(retry_after))
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="imaging-gateway"'
    body = {"error": exc.error, "error_description": exc.description}
    return Response(orjson.dumps(body), exc.status, headers=headers, media_type="application/json")


@router.post("/oauth/token", summary="Token endpoint (RFC 6749 §3.2)")
async def token(request: Request) -> Response:
    """RFC 6749 §4.4 client_credentials and RFC 8693 token exchange; signed JWT access tokens.

    Failed client authentications are audited with the client id that was tried and counted
    per client id and per source address; past the limit the endpoint answers 429 with
    Retry-After, before any secret is checked.
    """
    form = {k: str(v) for k, v in (await request.form()).items()}
    _note(request, 0)
    gw = gateway(request)
    attempted = _attempted_client(request, form)
    request.state.audit_client = attempted
    address = request.client.host if request.client else None
    wait = await run_in_threadpool(gw.throttle.retry_after, attempted, address)
    if wait is not None:
        return _oauth_error(OAuthError("invalid_client", "too many failed attempts", 429), wait)
    try:
        body = await run_in_threadpool(_token, request, form)
    except OAuthError as exc:
        _note(request, exc.status)
        if exc.error == "invalid_client":
            await run_in_threadpool(gw.throttle.failed, attempted, address)
        return _oauth_error(exc)
    if attempted:
        await run_in_threadpool(gw.throttle.succeeded, attempted)
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    return Response(orjson.dumps(body), 200, headers=headers, media_type="application/json")


def _note(request: Request, status: int) -> None:
    request.state.audit_note = {"datasets": (), "entities": ("oauth:token",), "action": "token"}


def _attempted_client(request: Request, form: dict[str, str]) -> str | None:
    """The client id a request claims (not yet authenticated), for the audit and the lockout."""
    from server.security.external import unverified_issuer

    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return unquote(decoded.partition(":")[0])[:MAX_CLIENT_ID] or None
    if form.get("client_assertion_type") == JWT_BEARER:
        return (unverified_issuer(form.get("client_assertion", "")) or "")[:MAX_CLIENT_ID] or None
    return form.get("client_id", "")[:MAX_CLIENT_ID] or None


def _token(request: Request, form: dict[str, str]) -> dict[str, Any]:
    grant_type = form.get("grant_type")
    if grant_type == "client_credentials":
        client = _authenticate_client(request, form, required=True)
        assert client is not None
        request.state.audit_client = client.client_id
        return _client_credentials(request, client, form.get("scope", ""))
    if grant_type == TOKEN_EXCHANGE:
        client = _authenticate_client(request, form, required=False)
        return _token_exchange(request, client, form)
    if grant_type == "authorization_code":
        return login.authorization_code_grant(request, form)
    if grant_type == "refresh_token":
        return login.refresh_token_grant(request, form)
    raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")


def _authenticate_client(
    request: Request, form: dict[str, str], *, required: bool
) -> Client | None:
    """RFC 6749 §2.3: client_secret_basic, client_secret_post or private_key_jwt (RFC 7523 §2.2)."""
    registry = gateway(request).clients
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            client_id, _, secret = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
        return _by_secret(registry, unquote(client_id), unquote(secret))
    if form.get("client_assertion_type") == JWT_BEARER:
        return _by_assertion(request, form)
    if form.get("client_id") and form.get("client_secret"):
        return _by_secret(registry, form["client_id"], form["client_secret"])
    if required:
        raise OAuthError("invalid_client", "client authentication is required", 401)
    return None


def _by_secret(registry: Any, client_id: str, secret: str) -> Client:
    client = registry.check_secret(client_id, secret)
    if client is None:
        raise OAuthError("invalid_client", "unknown client or wrong secret", 401)
    return client


def _by_assertion(request: Request, form: dict[str, str]) -> Client:
    from server.security.external import unverified_issuer

    assertion = form.get("client_assertion", "")
    client_id = unverified_issuer(assertion) or ""
    gw = gateway(request)
    client = gw.clients.get(client_id)
    if client is None or not client.jwks:
        raise OAuthError("invalid_client", "unknown client or no registered keys", 401)
    endpoint = f"{_issuer(request)}/oauth/token"
    keys = KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
    try:
        claims = verify_client_assertion(
            assertion,
            keys,
            client_id=client_id,
            token_endpoint=endpoint,
            leeway_seconds=gw.tokens.leeway_seconds,
        )
    except InvalidToken as exc:
        raise OAuthError(
            "invalid_client", f"client assertion rejected: {exc.message}", 401
        ) from exc
    # kept for as long as verify_client_assertion would accept it: exp plus the leeway (+1 s)
    keep_until = float(claims["exp"]) + gw.tokens.leeway_seconds + 1
    if not gw.clients.use_jti(client_id, str(claims["jti"]), keep_until):
        raise OAuthError("invalid_client", "client assertion was already used (jti replay)", 401)
    return client


def _client_credentials(request: Request, client: Client, requested_text: str) -> dict[str, Any]:
    gw = gateway(request)
    requested = requested_text.split()
    bad = [s for s in requested if not scope_syntax.is_valid(s)]
    if bad:
        raise OAuthError("invalid_scope", f"unknown scope(s): {' '.join(bad)}")
    party = Party(client_id=client.client_id, organization=client.organization)
    datasets = set(gw.agreements.grants(party))
    federation = (
        {scope_syntax.FEDERATION_SEARCH}
        if client.client_id in gw.settings.federation.oauth_clients
        else set()
    )
    granted = default_scope(client, datasets, requested, extra=federation)
    if not granted:
        raise OAuthError("invalid_scope", "none of the requested scopes can be granted")
    return _issue(request, subject=client.client_id, client_id=client.client_id, scope=granted)


def _token_exchange(
    request: Request, client: Client | None, form: dict[str, str]
) -> dict[str, Any]:
    """RFC 8693: an external identity's access token -> a local token with the subject's rights.

    The new token carries the subject's dataset scopes (its own agreements, never the
    exchanging client's), narrowed to the read scopes a client may hold; the client is
    named as the actor (RFC 8693 section 4.1 ``act``) and adds nothing.
    """
    gw = gateway(request)
    if form.get("subject_token_type") not in TOKEN_TYPES or not form.get("subject_token"):
        raise OAuthError(
            "invalid_request", "subject_token and an access-token subject_token_type are required"
        )
    try:
        config, claims = gw.external.verify(form["subject_token"])
    except InvalidToken as exc:
        raise OAuthError("invalid_grant", f"subject_token rejected: {exc.message}") from exc
    org = (
        str(claims.get(config.organization_claim))
        if config.organization_claim and claims.get(config.organization_claim)
        else None
    )
    party = Party(issuer=config.issuer, subject=str(claims["sub"]), organization=org)
    datasets = set(gw.agreements.grants(party))
    requested = form.get("scope", "").split() or ["system/*.rs"]
    granted = scope_syntax.grant(requested, set(EXCHANGE_SCOPES), datasets, set(), False)
    extra: dict[str, Any] = {"ext_iss": config.issuer, "ext_sub": str(claims["sub"])}
    if org:
        extra["org"] = org
    if client is not None:
        extra["act"] = {"sub": client.client_id}
    body = _issue(request, subject=f"{config.issuer}#{claims['sub']}",
                  client_id=client.client_id if client else "token-exchange", scope=granted, extra=extra)  # fmt: skip
    body["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token"
    return body


def _issue(
    request: Request,
    *,
    subject: str,
    client_id: str,
    scope: list[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    gw = gateway(request)
    text = " ".join(scope)
    access_token, _ = issue_access_token(
        gw.keys, gw.tokens, subject=subject, client_id=client_id, scope=text, extra=extra
    )
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": gw.tokens.lifetime_seconds,
        "scope": text,
    }


@router.post("/oauth/logout", summary="Sign out: token revocation (RFC 7009)")
async def logout(request: Request) -> Response:
    """RFC 7009: ends the sign-in session of a refresh token (or of an access token).

    Always 200 for a well-formed request, also for an unknown token (RFC 7009 §2.2).
    """
    form = {k: str(v) for k, v in (await request.form()).items()}
    request.state.audit_note = {"datasets": (), "entities": ("oauth:logout",), "action": "token"}
    try:
        await run_in_threadpool(login.revoke, request, form)
    except OAuthError as exc:
        return _oauth_error(exc)
    return Response(b"", 200, headers={"Cache-Control": "no-store"})


@router.get("/oauth/logout", summary="Sign out of a browser application (redirect back)")
async def logout_redirect(request: Request) -> Response:
    """The browser leaves a viewer's session: back to ``post_logout_redirect_uri`` when it is
    on the origin of one of the client's registered redirect URIs, else a signed-out page.

    The session's tokens are revoked by the application (POST, RFC 7009) before it sends
    the browser here; this endpoint keeps no state and needs no token.
    """
    return await run_in_threadpool(login.signed_out, request)


@router.get("/oauth/jwks", summary="The token signing keys (RFC 7517)")
def jwks(request: Request) -> Response:
    """RFC 7517 §5: public keys that verify this gateway's tokens."""
    return Response(orjson.dumps(gateway(request).keys.jwks()), media_type="application/json")


def _metadata(request: Request) -> dict[str, Any]:
    issuer = _issuer(request)
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "revocation_endpoint": f"{issuer}/oauth/logout",
        "revocation_endpoint_auth_methods_supported": ["none"],
        "jwks_uri": f"{issuer}/oauth/jwks",
        "grant_types_supported": GRANT_TYPES,
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "scopes_supported": [
            "system/*.rs",
            "system/ImagingStudy.rs",
            "system/ImagingStudy.c",
            "system/*.cruds",
            "admin",
            "dataset:{id}",
            "dataset:{id}:store",
            scope_syntax.FEDERATION_SEARCH,
        ],
        "response_types_supported": ["code"],
        "service_documentation": f"{issuer}/docs",
    }


@router.get("/.well-known/oauth-authorization-server", summary="RFC 8414 metadata")
def authorization_server_metadata(request: Request) -> Response:
    """RFC 8414 §3: authorization server metadata."""
    return Response(orjson.dumps(_metadata(request)), media_type="application/json")


@router.get("/fhir/.well-known/smart-configuration", summary="SMART configuration")
def smart_configuration(request: Request) -> Response:
    """SMART App Launch 2.0 §2.0.6: standalone launch of browser apps (code + PKCE, refresh)
    and backend services (client_credentials, asymmetric keys)."""
    meta = _metadata(request)
    body = {
        "issuer": meta["issuer"], "jwks_uri": meta["jwks_uri"], "token_endpoint": meta["token_endpoint"],
        "authorization_endpoint": meta["authorization_endpoint"],
        "revocation_endpoint": meta["revocation_endpoint"],
        "grant_types_supported": meta["grant_types_supported"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "scopes_supported": meta["scopes_supported"],
        "capabilities": ["launch-standalone", "client-public", "client-confidential-asymmetric",
                         "client-confidential-symmetric", "permission-v2"],
    }  # fmt: skip
    return Response(orjson.dumps(body), media_type="application/json")

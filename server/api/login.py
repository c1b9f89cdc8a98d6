"""Browser sign-in: OAuth 2.0 authorization code with PKCE (RFC 6749 §4.1, RFC 7636, S256
only), the user authenticated by the configured OpenID provider (the gateway is its relying
party, ``security/oidc.py``) or, in development, by a password-less login form.

Flow: ``/oauth/authorize`` checks the client and its exactly registered redirect URI, keeps
the request (``security/sessions.py``) and sends the browser to the provider;
``/oauth/callback`` validates the provider's answer and the ID token, and redirects back to
the client with a single-use code bound to the client, the redirect URI and the PKCE
challenge. ``/oauth/token`` (``grant_type=authorization_code`` / ``refresh_token``, handled
here) issues the gateway's own access token with the scopes the user's agreements allow, and
a rotating refresh token of a session with an absolute lifetime; ``/oauth/logout`` (RFC 7009
revocation) ends the session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from server.api.deps import gateway
from server.security import scopes as scope_syntax
from server.security.model import Party
from server.security.oidc import LoginFailed
from server.security.sessions import CodeGrant, GrantError, committed_refusal
from server.viewer_config import VIEWER_CLIENT_ID

router = APIRouter(tags=["OAuth 2.0"])

USER_SCOPES = {"system/*.rs"}  # SMART scopes a signed-in user's token may hold
PENDING_LOGIN_SECONDS = 600.0
_PKCE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 §4.1 code_verifier
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # BASE64URL(SHA256(verifier)), no padding
_USER = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
DEV_LOGIN_PATH = "/oauth/dev-login"
# The authorization server's browser session (sessions.SignIn): HttpOnly, on /oauth only.
SIGNIN_COOKIE = "gateway_signin"


def browser_clients(request: Request) -> dict[str, list[str]]:
    """Public clients allowed to use the code flow: client id -> exact redirect URIs."""
    gw = gateway(request)
    issuer = gw.tokens.issuer
    clients = {VIEWER_CLIENT_ID: [f"{issuer}/viewer/callback"]}
    for client in gw.settings.auth.browser_clients:
        clients[client.client_id] = list(client.redirect_uris)
    return clients


def dev_login_issuer(request: Request) -> str:
    """The identity issuer agreements name for users of the development login."""
    return f"{gateway(request).tokens.issuer}{DEV_LOGIN_PATH}"


def login_available(request: Request) -> bool:
    gw = gateway(request)
    return gw.relying_party is not None or gw.settings.auth.dev_login


# ---------------------------------------------------------------------- pages


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    text = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:36em;margin:3em auto}"
        ".dev{background:#fff3cd;border:1px solid #d39e00;padding:.5em 1em}</style>"
        f"<h1>{html.escape(title)}</h1>{body}</html>"
    )
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"}  # fmt: skip
    return HTMLResponse(text, status, headers=headers)


def _refuse_page(message: str, status: int = 400) -> HTMLResponse:
    """RFC 6749 §4.1.2.1: without a trusted redirect URI the error is shown, not redirected."""
    return _page("Sign-in refused", f"<p>{html.escape(message)}</p>", status)


def _back(request: Request, redirect_uri: str, params: dict[str, str]) -> RedirectResponse:
    """Redirect to the client with ``params`` added to the query (RFC 9207: with ``iss``)."""
    parts = urlsplit(redirect_uri)
    extra = urlencode({**params, "iss": gateway(request).tokens.issuer})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return RedirectResponse(
        urlunsplit(parts._replace(query=query)), 303, headers={"Cache-Control": "no-store"}
    )


# ---------------------------------------------------------------------- authorize


@router.get("/oauth/authorize", summary="Authorization endpoint (RFC 6749 §3.1, PKCE)")
async def authorize(request: Request) -> Response:
    """RFC 6749 §4.1.1 + RFC 7636 §4.3: start a browser sign-in (response_type=code, S256)."""
    q = request.query_params
    client_id, redirect_uri = q.get("client_id", ""), q.get("redirect_uri", "")
    registered = browser_clients(request).get(client_id)
    if registered is None:
        return _refuse_page("unknown client_id")
    if redirect_uri not in registered:
        return _refuse_page("redirect_uri is not registered for this client")
    state = q.get("state")
    extra = {"state": state} if state else {}

    def error(code: str, description: str) -> RedirectResponse:
        return _back(request, redirect_uri, {"error": code, "error_description": description, **extra})  # fmt: skip

    if q.get("response_type") != "code":
        return error("unsupported_response_type", "only response_type=code is supported")
    challenge, method = q.get("code_challenge", ""), q.get("code_challenge_method", "")
    if not challenge:
        return error("invalid_request", "code_challenge is required (PKCE, RFC 7636)")
    if method != "S256":
        return error("invalid_request", "transform algorithm not supported: use S256")
    if not _CHALLENGE.fullmatch(challenge):
        return error("invalid_request", "code_challenge is not a BASE64URL SHA-256 digest")
    if not login_available(request):
        return error("temporarily_unavailable", "no sign-in method is configured")
    gw = gateway(request)
    scope = [s for s in q.get("scope", "").split() if scope_syntax.is_valid(s)]
    nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    pending: dict[str, Any] = {
        "client_id": client_id, "redirect_uri": redirect_uri, "state": state,
        "code_challenge": challenge, "scope": scope,
        "nonce": nonce, "verifier": verifier,
    }  # fmt: skip
    cookie = request.cookies.get(SIGNIN_COOKIE)
    if cookie and "login" not in q.get("prompt", "").split():  # OIDC prompt=login: ask again
        signed_in = await run_in_threadpool(gw.sessions.signin, cookie)
        if signed_in is not None:  # signed in already (a page reload): no trip to the provider
            return await _code_for(request, pending, signed_in.issuer, signed_in.subject,
                                   signed_in.organization, signin=signed_in.digest)  # fmt: skip
    login = await run_in_threadpool(gw.sessions.add_pending, pending, PENDING_LOGIN_SECONDS)
    if gw.relying_party is None:  # development login
        return RedirectResponse(f"{DEV_LOGIN_PATH}?{urlencode({'request': login})}", 303)
    try:
        url = await run_in_threadpool(
            gw.relying_party.authorization_url,
            state=login,
            nonce=nonce,
            code_verifier=verifier,
        )
    except LoginFailed as exc:
        return error("temporarily_unavailable", str(exc))
    return RedirectResponse(url, 303, headers={"Cache-Control": "no-store"})


@router.get("/oauth/callback", summary="Redirection endpoint for the OpenID provider")
async def callback(request: Request) -> Response:
    """OIDC Core §3.1.2.5: the provider's answer; validated, then a code for the client."""
    gw = gateway(request)
    q = request.query_params
    pending = await run_in_threadpool(gw.sessions.take_pending, q.get("state", ""))
    if pending is None or gw.relying_party is None:
        return _refuse_page("unknown or expired sign-in; start again from the application")
    extra = {"state": pending["state"]} if pending.get("state") else {}
    if q.get("error") or not q.get("code"):
        return _back(request, pending["redirect_uri"], {"error": "access_denied", "error_description": "the identity provider did not authenticate the user", **extra})  # fmt: skip
    try:
        identity = await run_in_threadpool(
            gw.relying_party.finish,
            code=q["code"],
            nonce=pending["nonce"],
            code_verifier=pending["verifier"],
        )
    except LoginFailed as exc:
        request.state.audit_note = {"datasets": (), "entities": ("oauth:login",), "action": "token"}
        return _back(request, pending["redirect_uri"], {"error": "access_denied", "error_description": str(exc)[:300], **extra})  # fmt: skip
    org_claim = gw.settings.auth.oidc.organization_claim
    org = identity.claims.get(org_claim) if org_claim else None
    return await _code_for(
        request, pending, identity.issuer, identity.subject, str(org) if org else None
    )


async def _code_for(
    request: Request,
    pending: dict[str, Any],
    issuer: str,
    subject: str,
    org: str | None,
    signin: str | None = None,
) -> Response:
    """The redirect back with a code; a user who has just authenticated (``signin`` None)
    also gets a new sign-in cookie, so that a page reload needs no new authentication."""
    gw = gateway(request)
    secret = None
    if signin is None:
        lifetime = gw.settings.auth.session_lifetime
        secret, signin = await run_in_threadpool(gw.sessions.add_signin, issuer, subject, org, lifetime)  # fmt: skip
    grant = CodeGrant(
        client_id=pending["client_id"], redirect_uri=pending["redirect_uri"],
        code_challenge=pending["code_challenge"], issuer=issuer, subject=subject,
        organization=org, scope=list(pending.get("scope") or []), signin=signin,
    )  # fmt: skip
    code = await run_in_threadpool(gw.sessions.add_code, grant, gw.settings.auth.code_lifetime)
    extra = {"state": pending["state"]} if pending.get("state") else {}
    back = _back(request, pending["redirect_uri"], {"code": code, **extra})
    if secret is not None:
        back.set_cookie(
            SIGNIN_COOKIE, secret, max_age=gw.settings.auth.session_lifetime, path="/oauth",
            secure=gw.tokens.issuer.startswith("https:"), httponly=True, samesite="lax",
        )  # fmt: skip
    return back


# ---------------------------------------------------------------------- development login


@router.get(DEV_LOGIN_PATH, summary="Development login form (development only)")
async def dev_login_form(request: Request) -> Response:
    """A password-less sign-in for local use; 404 unless GATEWAY_AUTH__DEV_LOGIN is on."""
    if not gateway(request).settings.auth.dev_login:
        return Response(status_code=404)
    login = html.escape(request.query_params.get("request", ""))
    issuer = html.escape(dev_login_issuer(request))
    body = (
        "<p class=dev><b>Development login.</b> Anyone can sign in as anyone here; it is "
        "refused in production (configure GATEWAY_AUTH__OIDC__* there).</p>"
        f'<form method=post action="{DEV_LOGIN_PATH}"><input type=hidden name=request value="{login}">'
        '<label>User name <input name=username autofocus required pattern="[A-Za-z0-9._@+\\-]{1,64}"></label> '
        "<button type=submit>Sign in</button></form>"
        f"<p>Agreements name these users with <code>--issuer {issuer} --subject NAME</code>.</p>"
    )  # fmt: skip
    return _page("Sign in (development)", body)


@router.post(
    DEV_LOGIN_PATH, summary="Development login (development only)", include_in_schema=False
)
async def dev_login(request: Request) -> Response:
    gw = gateway(request)
    if not gw.settings.auth.dev_login:
        return Response(status_code=404)
    form = await request.form()
    username = str(form.get("username", ""))
    if not _USER.fullmatch(username):
        return _refuse_page("a user name is letters, digits and . _ @ + - (at most 64)")
    pending = await run_in_threadpool(gw.sessions.take_pending, str(form.get("request", "")))
    if pending is None:
        return _refuse_page("unknown or expired sign-in; start again from the application")
    return await _code_for(request, pending, dev_login_issuer(request), username, None)


# ---------------------------------------------------------------------- token grants


def _s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def _public_client(request: Request, form: dict[str, str]) -> str:
    from server.api.oauth import OAuthError

    client_id = form.get("client_id", "")
    if client_id in browser_clients(request):
        return client_id
    if request.headers.get("authorization") or form.get("client_assertion"):
        # a confidential (machine) client: registered for other grants only
        raise OAuthError("unauthorized_client", "this client may not use this grant type")
    raise OAuthError("invalid_client", "unknown client_id for this grant", 401)


def authorization_code_grant(request: Request, form: dict[str, str]) -> dict[str, Any]:
    """RFC 6749 §4.1.3 with RFC 7636 §4.5-4.6: a code and its verifier -> tokens."""
    from server.api.oauth import OAuthError

    client_id = _public_client(request, form)
    request.state.audit_client = client_id
    code, verifier = form.get("code", ""), form.get("code_verifier", "")
    if not code or not form.get("redirect_uri"):
        raise OAuthError("invalid_request", "code and redirect_uri are required")
    if not verifier:
        raise OAuthError("invalid_request", "code_verifier is required (PKCE, RFC 7636)")
    if not _PKCE.fullmatch(verifier):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
    gw = gateway(request)
    try:
        grant, session, refresh = gw.sessions.redeem_code(
            code,
            client_id=client_id,
            redirect_uri=form["redirect_uri"],
            check_verifier=lambda challenge: hmac.compare_digest(_s256(verifier), challenge),
            session_lifetime=gw.settings.auth.session_lifetime,
        )
    except GrantError as exc:
        raise OAuthError("invalid_grant", str(exc)) from exc
    return _user_tokens(request, grant, session.id, refresh)


def refresh_token_grant(request: Request, form: dict[str, str]) -> dict[str, Any]:
    """RFC 6749 §6 with rotation: a refresh token -> new tokens; reuse ends the session."""
    from server.api.oauth import OAuthError

    client_id = _public_client(request, form)
    request.state.audit_client = client_id
    token = form.get("refresh_token", "")
    if not token:
        raise OAuthError("invalid_request", "refresh_token is required")
    gw = gateway(request)
    try:
        session, refresh = gw.sessions.rotate(token, client_id=client_id)
    except GrantError as exc:
        if committed_refusal(exc):
            gw.authenticator.invalidate()  # tokens of the revoked session stop at once
        raise OAuthError("invalid_grant", str(exc)) from exc
    return _user_tokens(request, session.grant, session.id, refresh)


def _user_tokens(
    request: Request, grant: CodeGrant, session_id: str, refresh: str
) -> dict[str, Any]:
    """The user's access token: read scopes plus the datasets their agreements allow now."""
    from server.api.oauth import _issue

    gw = gateway(request)
    party = Party(issuer=grant.issuer, subject=grant.subject, organization=grant.organization)
    datasets = set(gw.agreements.grants(party))
    requested = grant.scope or sorted(USER_SCOPES)
    scope = scope_syntax.grant(requested, USER_SCOPES, datasets, set(), False)
    extra: dict[str, Any] = {"ext_iss": grant.issuer, "ext_sub": grant.subject, "sid": session_id}
    if grant.organization:
        extra["org"] = grant.organization
    body = _issue(
        request,
        subject=f"{grant.issuer}#{grant.subject}",
        client_id=grant.client_id,
        scope=scope,
        extra=extra,
    )
    body["refresh_token"] = refresh
    return body


def revoke(request: Request, form: dict[str, str]) -> None:
    """RFC 7009 §2.1: end the session of a refresh token (or of an access token's ``sid``)."""
    from server.security.tokens import InvalidToken, verify_access_token

    gw = gateway(request)
    token = form.get("token", "")
    if not token:
        from server.api.oauth import OAuthError

        raise OAuthError("invalid_request", "token is required")
    if gw.sessions.revoke(token):
        gw.authenticator.invalidate()
        return
    try:
        claims = verify_access_token(token, gw.keys.key_set, gw.tokens)
    except InvalidToken:
        return  # RFC 7009 §2.2: an invalid token is not an error
    if isinstance(claims.get("sid"), str):
        gw.sessions.revoke_session(claims["sid"])
        gw.authenticator.invalidate()


def signed_out(request: Request) -> Response:
    """GET /oauth/logout: end the sign-in (cookie), then redirect back to a registered
    origin, or say the user is out."""
    cookie = request.cookies.get(SIGNIN_COOKIE)
    if cookie:
        gateway(request).sessions.end_signin(cookie)
    answer = _signed_out_answer(request)
    answer.delete_cookie(SIGNIN_COOKIE, path="/oauth", httponly=True, samesite="lax")
    return answer


def _signed_out_answer(request: Request) -> Response:
    q = request.query_params
    target = q.get("post_logout_redirect_uri", "")
    origins = {urlsplit(uri)[:2] for uris in browser_clients(request).values() for uri in uris}
    parts = urlsplit(target)
    if target and parts.scheme in ("http", "https") and parts[:2] in origins:
        extra = {"state": q["state"]} if q.get("state") else {}
        query = "&".join(filter(None, [parts.query, urlencode(extra)]))
        return RedirectResponse(urlunsplit(parts._replace(query=query)), 303)
    return _page("Signed out", "<p>You are signed out of the imaging gateway.</p>")

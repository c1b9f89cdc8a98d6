"""Bearer token → Principal (RFC 6750), with agreements looked up at request time.

A revoked or expired agreement ends access at once, also for tokens already issued:
grants come from the agreements active *now* (cached for at most a few seconds),
intersected with the datasets the token names.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable

from server.errors import Unauthorized
from server.security import scopes as scope_syntax
from server.security.agreements import AgreementCache
from server.security.clients import Client, ClientRegistry
from server.security.external import ExternalIssuers, unverified_issuer
from server.security.holder import holder_grants, widen
from server.security.keys import SigningKeys
from server.security.model import Basis, Condition, Grant, Party, Principal
from server.security.sessions import SessionStore
from server.security.tokens import InvalidToken, TokenSettings, verify_access_token

ANONYMOUS_SCOPES = frozenset({"system/*.rs"})
SEEN_TOKENS = 10_000
BASIC_REMEMBERED = 300.0  # seconds a verified Basic secret is not re-hashed


class Authenticator:
    def __init__(
        self, *, enabled: bool, public_read: bool, keys: SigningKeys, tokens: TokenSettings,
        clients: ClientRegistry, agreements: AgreementCache, public_datasets: Callable[[], set[str]],
        external: ExternalIssuers | None = None, all_datasets: Callable[[], set[str]] = set,
        sessions: SessionStore | None = None,
    ) -> None:  # fmt: skip
        self.enabled = enabled
        self.public_read = public_read
        self.keys = keys
        self.tokens = tokens
        self.clients = clients
        self.agreements = agreements
        self.public_datasets = public_datasets
        self.external = external
        self.all_datasets = all_datasets  # every dataset id (the administrators' view)
        self.sessions = sessions  # browser sign-in sessions: a token naming one (sid) ends with it
        self._seen: dict[str, dict[str, object]] = {}
        self._principals: dict[str, tuple[float, Principal]] = {}
        self._basic: dict[bytes, float] = {}  # verified Basic credentials (digest) -> until
        self._basic_key = secrets.token_bytes(32)

    def principal(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return Principal(anonymous=False, admin=True, unrestricted=True)
        if not authorization:
            if self.public_read:
                return Principal(resource_scopes=ANONYMOUS_SCOPES, grants=self._public())
            raise Unauthorized("a bearer token is required")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        token = token.strip()
        if self.external is not None and self.external.knows(unverified_issuer(token)):
            return self._external(token)
        cached = self._principals.get(token)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = self._from_claims(self._verified(token))
        if len(self._principals) >= SEEN_TOKENS:
            self._principals.clear()
        # Valid only as long as the agreements it was built from: a revocation never takes
        # longer than one agreement-cache period to bite.
        self._principals[token] = (self.agreements.fresh_until(), principal)
        return principal

    def client_principal(self, client_id: str) -> Principal | None:
        """The caller a client's token with its default scope would be, agreements as of now.

        For callers that authenticate other than by bearer token (DIMSE associations of a
        registered AE): the same Principal, grants and store rights as its token would give.
        None if the client is not registered (any more).
        """
        if not self.enabled:
            return Principal(anonymous=False, admin=True, unrestricted=True)
        client = self.clients.get(client_id)
        if client is None:
            return None
        datasets = set(self.agreements.grants(Party(client_id=client.client_id, organization=client.organization)))  # fmt: skip
        scope = default_scope(client, datasets)
        return self._from_claims({"client_id": client.client_id, "scope": " ".join(scope)})

    def basic_principal(self, client_id: str, secret: str) -> Principal | None:
        """HTTP Basic (RFC 7617) with a client's id and secret, for clients that have it on.

        The same Principal as :meth:`client_principal` (the rights its tokens would have).
        None for an unknown client, a wrong secret, or a client without HTTP Basic. The
        secret check (scrypt) is remembered for a few minutes by a keyed digest of the
        credentials, never the secret itself; the client's registration (HTTP Basic still
        on, still registered) is read again on every request.
        """
        key = hmac.new(self._basic_key, f"{client_id}:{secret}".encode(), "sha256").digest()
        now = time.monotonic()
        if self._basic.get(key, 0.0) <= now:
            if self.clients.check_secret(client_id, secret) is None:
                return None
            if len(self._basic) >= SEEN_TOKENS:
                self._basic.clear()
            self._basic[key] = now + BASIC_REMEMBERED
        client = self.clients.get(client_id)
        if client is None or not client.http_basic:
            return None
        return self.client_principal(client_id)

    def invalidate(self) -> None:
        """Agreements, clients or datasets changed here: forget every cached principal now."""
        self._principals.clear()

    def _verified(self, token: str) -> dict[str, object]:
        """Claims of a valid token; a token's signature is checked once, its expiry every time."""
        cached = self._seen.get(token)
        now = time.time()
        if cached is not None and float(cached["exp"]) > now - self.tokens.leeway_seconds:  # type: ignore[arg-type]
            return cached
        try:
            claims = verify_access_token(token, self.keys.key_set, self.tokens)
        except InvalidToken as exc:
            self._seen.pop(token, None)
            raise Unauthorized(exc.message) from exc
        if len(self._seen) >= SEEN_TOKENS:
            self._seen.clear()
        self._seen[token] = claims
        return claims

    def _external(self, token: str) -> Principal:
        """A configured OpenID provider's token used directly: the user's agreements apply."""
        assert self.external is not None
        try:
            config, claims = self.external.verify(token)
        except InvalidToken as exc:
            raise Unauthorized(exc.message) from exc
        org_claim = config.organization_claim
        org = _str(claims.get(org_claim)) if org_claim else None
        party = Party(issuer=config.issuer, subject=_str(claims.get("sub")), organization=org)
        grants = self.agreements.grants(party)
        if self.public_read:
            grants = {**self._public(), **grants}
        return Principal(
            party=party, anonymous=False, resource_scopes=ANONYMOUS_SCOPES, grants=grants,
            token_id=_str(claims.get("jti")),
        )  # fmt: skip

    def _from_claims(self, claims: dict[str, object]) -> Principal:
        client_id = str(claims.get("client_id") or "")
        client = self.clients.get(client_id) if client_id else None
        user_issuer, user_subject = _str(claims.get("ext_iss")), _str(claims.get("ext_sub"))
        if client is None and not user_issuer:
            raise Unauthorized("the token's client is no longer registered")
        session = _str(claims.get("sid"))
        if session and (self.sessions is None or not self.sessions.active(session)):
            raise Unauthorized("the sign-in session has ended")
        granted = str(claims.get("scope", "")).split()
        named, pushes, curates = _dataset_scopes(granted)
        if user_issuer:
            # RFC 8693: an exchanged token speaks for its subject only. The exchanging client
            # (the actor) narrows what the subject may do, never adds its own agreements,
            # roles or push rights.
            rights = Party(issuer=user_issuer, subject=user_subject, organization=_str(claims.get("org")))  # fmt: skip
            party = Party(client_id=client_id or None, issuer=user_issuer, subject=user_subject,
                          organization=rights.organization)  # fmt: skip
            admin, store, curate = False, frozenset[str](), frozenset[str]()
        else:
            assert client is not None
            party = rights = Party(client_id=client_id, organization=client.organization)
            admin = "admin" in granted and client.admin
            curate = frozenset(curates & set(client.curate_datasets))
            store = frozenset(pushes & set(client.store_datasets)) | curate
        active = self.agreements.grants(rights)  # at request time: revocation is immediate
        grants = {d: g for d, g in active.items() if d in named}
        if self.public_read:
            grants = {**self._public(), **grants}
        grants = self._holder(grants, store, admin)
        return Principal(
            party=party, anonymous=False, admin=admin,
            resource_scopes=frozenset(
                s for s in granted
                if scope_syntax.smart_permissions(s) or s == scope_syntax.FEDERATION_SEARCH
            ),
            grants=grants, store_datasets=store, curate_datasets=curate,
            token_id=_str(claims.get("jti")),
        )  # fmt: skip

    def _holder(
        self, grants: dict[str, Grant], held: frozenset[str], admin: bool
    ) -> dict[str, Grant]:
        """The agreements' grants widened by the data-holder view (``security/holder.py``)."""
        extra = holder_grants(self.all_datasets(), Basis.ADMIN) if admin else {}
        extra.update(holder_grants(held, Basis.DATA_HOLDER))
        return widen(grants, extra)

    def _public(self) -> dict[str, Grant]:
        return {d: Grant(d, Condition.DOWNLOAD, basis=Basis.PUBLIC) for d in self.public_datasets()}


def allowed_scopes(client: Client) -> set[str]:
    """The SMART scopes a client may hold (read everything its grants allow; push; admin)."""
    allowed = {"system/*.rs"} | ({"system/ImagingStudy.c"} if client.holds else set())
    if client.admin:
        allowed |= {"system/*.cruds"}
    return allowed


def default_scope(
    client: Client,
    datasets: set[str],
    requested: list[str] | None = None,
    extra: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """RFC 6749 3.3: the scope a client-credentials token gets (requested ∩ allowed).

    ``datasets``: the datasets the client's active agreements name. With nothing
    requested, everything the client may hold. ``extra``: scopes granted by settings
    (``federation:search`` for GATEWAY_FEDERATION__OAUTH_CLIENTS).
    """
    allowed = allowed_scopes(client) | set(extra)
    if not requested:
        requested = sorted(allowed) + (["admin"] if client.admin else [])
    return scope_syntax.grant(
        requested, allowed, datasets, set(client.store_datasets), client.admin,
        curate=set(client.curate_datasets),
    )  # fmt: skip


def _dataset_scopes(granted: list[str]) -> tuple[set[str], set[str], set[str]]:
    """The datasets a token's scope names to read, to push into and to curate."""
    kinds: dict[str, set[str]] = {"": set(), "store": set(), "curate": set()}
    for scope in granted:
        found = scope_syntax.dataset_scope(scope)
        if found is not None:
            kinds[found[1]].add(found[0])
    return kinds[""], kinds["store"], kinds["curate"]


def _str(value: object) -> str | None:
    return str(value) if value else None

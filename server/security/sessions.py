"""Browser sign-in state: pending logins, authorization codes, refresh-token sessions.

One store of the shared-state database (the SQLite file ``<data dir>/sessions.sqlite``,
or PostgreSQL with ``GATEWAY_DATABASE_URL``) shared by every worker process and replica,
so a login started on one can finish on another and a refresh token works on all.

* A *pending login* is an accepted ``/oauth/authorize`` request waiting for the user to
  authenticate at the OpenID provider (or at the development login). It is found by the
  ``state`` sent to the provider, used once, and lives a few minutes.
* An *authorization code* (RFC 6749 section 4.1.2) is single-use, short-lived and bound to
  the client, the redirect URI and the PKCE challenge (RFC 7636). Only its SHA-256 is kept.
* A *session* is a family of refresh tokens (RFC 6749 section 6, OAuth 2.0 Security BCP
  section 4.14.2): every refresh replaces the token; presenting a replaced token again
  revokes the whole family; the family ends at a fixed absolute time whatever the refreshes.
  Only SHA-256 digests of refresh tokens are kept.
* A *sign-in* is the authorization server's own browser session (a cookie on ``/oauth``):
  a user who signed in once is given a new code at ``/oauth/authorize`` without a trip to
  the OpenID provider, as OHIF's client expects when a page reload sends it there (it
  keeps no session of its own across reloads). It ends at a fixed time (the session
  lifetime, counted from the sign-in; sessions it starts end then too), and revoking any
  session it started (sign-out, refresh-token reuse) ends it. Only its digest is kept.

Every state change is one transaction: a refused request changes nothing, and two
concurrent uses of one code or refresh token cannot both succeed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.database import Connection, Database, open_store

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS pending_login (
    state TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    expires REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS auth_code (
    digest TEXT PRIMARY KEY,
    grant_data TEXT NOT NULL,
    expires REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    session TEXT
)""",
    """CREATE TABLE IF NOT EXISTS session (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    grant_data TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    revoked REAL
)""",
    """CREATE TABLE IF NOT EXISTS refresh_token (
    digest TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    replaced INTEGER NOT NULL DEFAULT 0
)""",
    "CREATE INDEX IF NOT EXISTS refresh_by_session ON refresh_token(session)",
    """CREATE TABLE IF NOT EXISTS signin (
    digest TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    expires REAL NOT NULL,
    revoked REAL
)""",
]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """An unguessable token (256 bits, base64url)."""
    return secrets.token_urlsafe(32)


class GrantError(Exception):
    """RFC 6749 section 5.2 ``invalid_grant``: the code or refresh token cannot be used."""


@dataclass(frozen=True)
class CodeGrant:
    """What an authorization code stands for."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    issuer: str  # the user's identity provider (or the development login)
    subject: str
    organization: str | None
    scope: list[str]  # what the client asked for (validated syntax; may be empty)
    name: str | None = None
    signin: str | None = None  # digest of the sign-in (browser session) it came from

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> CodeGrant:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class SignIn:
    """An active sign-in: who signed in, where, and until when."""

    digest: str
    issuer: str
    subject: str
    organization: str | None
    expires: float


@dataclass(frozen=True)
class Session:
    id: str
    client_id: str
    grant: CodeGrant
    expires: float


class SessionStore:
    def __init__(self, path: Path, database_url: str | None = None) -> None:
        self.db: Database = open_store(database_url, path, "sessions", [SCHEMA])

    def close(self) -> None:
        self.db.close()

    def _tx(self) -> AbstractContextManager[Connection]:
        """One serialised transaction (a refusal whose side effect must stand, revoking a
        session, is raised after it commits)."""
        return self.db.write()

    # ------------------------------------------------------------------ pending logins

    def add_pending(
        self, request: dict[str, Any], lifetime: float, now: float | None = None
    ) -> str:
        state = new_secret()
        current = time.time() if now is None else now
        with self._tx() as db:
            db.execute("DELETE FROM pending_login WHERE expires < ?", (current,))
            db.execute(
                "INSERT INTO pending_login VALUES (?, ?, ?)",
                (state, json.dumps(request), current + lifetime),
            )
        return state

    def take_pending(self, state: str, now: float | None = None) -> dict[str, Any] | None:
        """The pending login of ``state``, once; None if unknown, used or expired."""
        current = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute(
                "SELECT request, expires FROM pending_login WHERE state = ?", (state,)
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM pending_login WHERE state = ?", (state,))
        if row[1] < current:
            return None
        value = json.loads(row[0])
        return value if isinstance(value, dict) else None

    # ------------------------------------------------------------------ codes

    def add_code(self, grant: CodeGrant, lifetime: float, now: float | None = None) -> str:
        code = new_secret()
        current = time.time() if now is None else now
        with self._tx() as db:
            # used codes are kept until they expire, so a replay is recognised as one
            db.execute("DELETE FROM auth_code WHERE expires < ?", (current - 3600,))
            db.execute(
                "INSERT INTO auth_code (digest, grant_data, expires) VALUES (?, ?, ?)",
                (_digest(code), grant.to_json(), current + lifetime),
            )
        return code

    def redeem_code(
        self,
        code: str,
        *,
        client_id: str,
        redirect_uri: str,
        check_verifier: Any,
        session_lifetime: float,
        now: float | None = None,
    ) -> tuple[CodeGrant, Session, str]:
        """RFC 6749 section 4.1.3 + RFC 7636 section 4.6: a code -> a new session.

        Any mismatch raises :class:`GrantError` and changes nothing, except a second use
        of a code that was already redeemed: that revokes the session the code started
        (RFC 6749 section 4.1.2: "SHOULD revoke ... all tokens previously issued based on
        that authorization code"). Returns the grant, the session and its first refresh
        token.
        """
        current = time.time() if now is None else now
        digest = _digest(code)
        with self._tx() as db:
            row = db.execute(
                "SELECT grant_data, expires, used, session FROM auth_code WHERE digest = ?",
                (digest,),
            ).fetchone()
            if row is None:
                raise GrantError("unknown authorization code")
            grant = CodeGrant.from_json(row[0])
            if row[2]:
                if row[3]:
                    _revoke(db, row[3], current)
                refusal = "the authorization code was already used"
            else:
                refusal = None
                if row[1] < current:
                    raise GrantError("the authorization code has expired")
                if grant.client_id != client_id:
                    raise GrantError("the authorization code was issued to another client")
                if grant.redirect_uri != redirect_uri:
                    raise GrantError("redirect_uri differs from the authorization request")
                if not check_verifier(grant.code_challenge):
                    raise GrantError("code_verifier does not match the code_challenge")
                session_id = new_secret()
                refresh = new_secret()
                ends = current + session_lifetime
                if grant.signin is not None:  # no longer than the sign-in it came from
                    found = db.execute(
                        "SELECT expires, revoked FROM signin WHERE digest = ?", (grant.signin,)
                    ).fetchone()
                    if found is None or found[1] is not None or found[0] < current:
                        raise GrantError("the sign-in has ended")
                    ends = min(ends, found[0])
                db.execute(
                    "INSERT INTO session VALUES (?, ?, ?, ?, ?, NULL)",
                    (session_id, client_id, grant.to_json(), current, ends),
                )
                db.execute(
                    "INSERT INTO refresh_token (digest, session) VALUES (?, ?)",
                    (_digest(refresh), session_id),
                )
                db.execute(
                    "UPDATE auth_code SET used = 1, session = ? WHERE digest = ?",
                    (session_id, digest),
                )
        if refusal is not None:  # raised after the commit: the revocation stands
            raise _Committed(refusal)
        return grant, Session(session_id, client_id, grant, ends), refresh

    # ------------------------------------------------------------------ refresh

    def rotate(
        self, refresh_token: str, *, client_id: str, now: float | None = None
    ) -> tuple[Session, str]:
        """RFC 6749 section 6 with rotation: the session and a new refresh token.

        A refresh token that was already replaced revokes its session (reuse detection).
        """
        current = time.time() if now is None else now
        refusal = None
        with self._tx() as db:
            row = db.execute(
                "SELECT r.replaced, s.id, s.client_id, s.grant_data, s.expires, s.revoked "
                "FROM refresh_token r JOIN session s ON s.id = r.session WHERE r.digest = ?",
                (_digest(refresh_token),),
            ).fetchone()
            if row is None:
                raise GrantError("unknown refresh token")
            replaced, session_id, owner, grant_text, expires, revoked = row
            if owner != client_id:
                raise GrantError("the refresh token was issued to another client")
            if revoked is not None:
                raise GrantError("the session has ended")
            if replaced:
                _revoke(db, session_id, current)
                refusal = "the refresh token was already used; the session is revoked"
            else:
                if expires < current:
                    raise GrantError("the session has reached its maximum lifetime")
                new = new_secret()
                db.execute(
                    "UPDATE refresh_token SET replaced = 1 WHERE digest = ?",
                    (_digest(refresh_token),),
                )
                db.execute(
                    "INSERT INTO refresh_token (digest, session) VALUES (?, ?)",
                    (_digest(new), session_id),
                )
        if refusal is not None:  # raised after the commit: the revocation stands
            raise _Committed(refusal)
        return Session(session_id, owner, CodeGrant.from_json(grant_text), expires), new

    def revoke(self, refresh_token: str, now: float | None = None) -> bool:
        """RFC 7009: end the session of a refresh token; False if it names none."""
        current = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute(
                "SELECT session FROM refresh_token WHERE digest = ?", (_digest(refresh_token),)
            ).fetchone()
            if row is None:
                return False
            _revoke(db, row[0], current)
        return True

    def revoke_session(self, session_id: str, now: float | None = None) -> None:
        current = time.time() if now is None else now
        with self._tx() as db:
            _revoke(db, session_id, current)

    def active(self, session_id: str, now: float | None = None) -> bool:
        """Whether the session is neither revoked nor past its absolute lifetime."""
        current = time.time() if now is None else now
        row = (
            self.db.reader()
            .execute("SELECT expires, revoked FROM session WHERE id = ?", (session_id,))
            .fetchone()
        )
        return row is not None and row[1] is None and row[0] >= current

    # ------------------------------------------------------------------ sign-ins

    def add_signin(
        self,
        issuer: str,
        subject: str,
        organization: str | None,
        lifetime: float,
        now: float | None = None,
    ) -> tuple[str, str]:
        """A new sign-in: (the cookie's secret, its digest, which grants refer to)."""
        secret = new_secret()
        current = time.time() if now is None else now
        identity = json.dumps({"issuer": issuer, "subject": subject, "organization": organization})
        with self._tx() as db:
            db.execute("DELETE FROM signin WHERE expires < ?", (current,))
            db.execute(
                "INSERT INTO signin VALUES (?, ?, ?, NULL)",
                (_digest(secret), identity, current + lifetime),
            )
        return secret, _digest(secret)

    def signin(self, secret: str, now: float | None = None) -> SignIn | None:
        """The sign-in of a cookie's secret while it is neither revoked nor past its end."""
        current = time.time() if now is None else now
        digest = _digest(secret)
        row = (
            self.db.reader()
            .execute("SELECT identity, expires, revoked FROM signin WHERE digest = ?", (digest,))
            .fetchone()
        )
        if row is None or row[2] is not None or row[1] < current:
            return None
        who = json.loads(row[0])
        return SignIn(digest, who["issuer"], who["subject"], who["organization"], row[1])

    def end_signin(self, secret: str, now: float | None = None) -> None:
        current = time.time() if now is None else now
        with self._tx() as db:
            db.execute(
                "UPDATE signin SET revoked = ? WHERE digest = ? AND revoked IS NULL",
                (current, _digest(secret)),
            )


def _revoke(db: Connection, session_id: str, current: float) -> None:
    """End a session and the sign-in it came from (signing out of one ends the reuse)."""
    db.execute(
        "UPDATE session SET revoked = ? WHERE id = ? AND revoked IS NULL", (current, session_id)
    )
    row = db.execute("SELECT grant_data FROM session WHERE id = ?", (session_id,)).fetchone()
    signin = CodeGrant.from_json(row[0]).signin if row is not None else None
    if signin is not None:
        db.execute(
            "UPDATE signin SET revoked = ? WHERE digest = ? AND revoked IS NULL",
            (current, signin),
        )


class _Committed(GrantError):
    """A refusal whose side effect (revoking a session) must be kept: raised after commit."""


def committed_refusal(exc: GrantError) -> bool:
    return isinstance(exc, _Committed)

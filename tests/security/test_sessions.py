"""The sign-in store's rules, on SQLite and on PostgreSQL (the shared database replicas use):
a session ends at its absolute lifetime whatever the refreshes, a pending sign-in is used
once and expires, a failed redemption changes nothing, a replayed code or refresh token
revokes its session (and that revocation stands although the request is refused), and two
concurrent redemptions of one code cannot both succeed; a session started from a sign-in (the
authorization server's browser session) ends no later than it, and revoking it ends the sign-in."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from server.security.sessions import CodeGrant, GrantError, SessionStore

pytestmark = pytest.mark.index_independent  # not in the Elasticsearch pass

GRANT = CodeGrant(client_id="app", redirect_uri="https://app.example/cb", code_challenge="c" * 43,
                  issuer="https://idp.example", subject="alice", organization=None, scope=[])  # fmt: skip


def _session(store: SessionStore, now: float, lifetime: float = 100) -> str:
    code = store.add_code(GRANT, 60, now=now)
    _, _, refresh = store.redeem_code(code, client_id="app", redirect_uri=GRANT.redirect_uri,
                                      check_verifier=lambda _: True, session_lifetime=lifetime,
                                      now=now + 1)  # fmt: skip
    return refresh


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    url = request.getfixturevalue("database_url") if request.param == "postgresql" else None
    opened = SessionStore(tmp_path / "sessions.sqlite", url)
    yield opened
    opened.close()


def test_a_session_ends_at_its_absolute_lifetime_whatever_the_refreshes(
    store: SessionStore,
) -> None:
    refresh = _session(store, now=1000, lifetime=100)
    for moment in (1020, 1050, 1090):  # refreshes keep working within the lifetime
        session, refresh = store.rotate(refresh, client_id="app", now=moment)
        assert store.active(session.id, now=moment)
    with pytest.raises(GrantError, match="maximum lifetime"):
        store.rotate(refresh, client_id="app", now=1102)
    assert not store.active(session.id, now=1102)


def test_a_pending_sign_in_is_used_once_and_expires(store: SessionStore) -> None:
    state = store.add_pending({"client_id": "app"}, 600, now=0)
    assert store.take_pending(state, now=10) == {"client_id": "app"}
    assert store.take_pending(state, now=11) is None
    late = store.add_pending({"client_id": "app"}, 600, now=0)
    assert store.take_pending(late, now=601) is None


def test_a_failed_redemption_leaves_the_code_as_it_was(store: SessionStore) -> None:
    code = store.add_code(GRANT, 60, now=0)
    with pytest.raises(GrantError):
        store.redeem_code(code, client_id="app", redirect_uri=GRANT.redirect_uri,
                          check_verifier=lambda _: False, session_lifetime=100, now=1)  # fmt: skip
    grant, session, _ = store.redeem_code(code, client_id="app", redirect_uri=GRANT.redirect_uri,
                                          check_verifier=lambda _: True, session_lifetime=100, now=2)  # fmt: skip
    assert grant == GRANT and store.active(session.id, now=3)


def test_a_replayed_code_or_refresh_token_revokes_the_session_although_refused(
    store: SessionStore,
) -> None:
    code = store.add_code(GRANT, 60, now=0)
    _, session, refresh = store.redeem_code(code, client_id="app", redirect_uri=GRANT.redirect_uri,
                                            check_verifier=lambda _: True, session_lifetime=100, now=1)  # fmt: skip
    with pytest.raises(GrantError, match="already used"):
        store.redeem_code(code, client_id="app", redirect_uri=GRANT.redirect_uri,
                          check_verifier=lambda _: True, session_lifetime=100, now=2)  # fmt: skip
    assert not store.active(session.id, now=3)
    with pytest.raises(GrantError, match="ended"):
        store.rotate(refresh, client_id="app", now=3)
    second = _session(store, now=10)
    later, _ = store.rotate(second, client_id="app", now=12)
    with pytest.raises(GrantError, match="already used"):
        store.rotate(second, client_id="app", now=13)  # the replaced token again
    assert not store.active(later.id, now=14)


def _race(store: SessionStore, code: str, now: float, racers: int) -> tuple[list[str], list[str]]:
    """``racers`` threads redeem ``code`` at once: the sessions won and the refusals."""
    won: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(racers)

    def redeem() -> None:
        barrier.wait()
        try:
            _, session, _ = store.redeem_code(
                code, client_id="app", redirect_uri=GRANT.redirect_uri,
                check_verifier=lambda _: True, session_lifetime=100, now=now,
            )  # fmt: skip
            won.append(session.id)
        except GrantError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=redeem) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return won, refused


def test_two_concurrent_redemptions_of_one_code_cannot_both_succeed(store: SessionStore) -> None:
    for round_ in range(5):
        code = store.add_code(GRANT, 60, now=round_)
        won, refused = _race(store, code, round_ + 1, 4)
        assert len(won) == 1 and len(refused) == 3, (won, refused)
        # the losers replayed the code: the winner's session is revoked, as RFC 6749 4.1.2 asks
        assert not store.active(won[0], now=round_ + 2)


def test_sessions_of_a_sign_in_end_with_it_and_a_revoked_session_ends_the_sign_in(
    store: SessionStore,
) -> None:
    secret, digest = store.add_signin("https://idp.example", "alice", None, 100, now=0)
    signed = store.signin(secret, now=50)
    assert signed is not None and (signed.subject, signed.expires) == ("alice", 100)
    reloaded = replace(GRANT, signin=digest)
    code = store.add_code(reloaded, 60, now=50)
    _, session, refresh = store.redeem_code(code, client_id="app", redirect_uri=GRANT.redirect_uri,
                                            check_verifier=lambda _: True, session_lifetime=1000, now=51)  # fmt: skip
    assert session.expires == 100  # a reload does not extend the sign-in's lifetime
    assert store.signin(secret, now=101) is None
    late = store.add_code(reloaded, 60, now=99)
    with pytest.raises(GrantError, match="sign-in has ended"):
        store.redeem_code(late, client_id="app", redirect_uri=GRANT.redirect_uri,
                          check_verifier=lambda _: True, session_lifetime=1000, now=101)  # fmt: skip
    assert store.revoke(refresh, now=60)  # signing out of the session ends the sign-in
    assert store.signin(secret, now=61) is None

"""The sign-in store's clock-bound rules, with the clock given: a session ends at its absolute
lifetime whatever the refreshes, and a pending sign-in is used once and expires."""

from __future__ import annotations

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


def test_a_session_ends_at_its_absolute_lifetime_whatever_the_refreshes(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions.sqlite")
    refresh = _session(store, now=1000, lifetime=100)
    for moment in (1020, 1050, 1090):  # refreshes keep working within the lifetime
        session, refresh = store.rotate(refresh, client_id="app", now=moment)
        assert store.active(session.id, now=moment)
    with pytest.raises(GrantError, match="maximum lifetime"):
        store.rotate(refresh, client_id="app", now=1102)
    assert not store.active(session.id, now=1102)


def test_a_pending_sign_in_is_used_once_and_expires(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions.sqlite")
    state = store.add_pending({"client_id": "app"}, 600, now=0)
    assert store.take_pending(state, now=10) == {"client_id": "app"}
    assert store.take_pending(state, now=11) is None
    late = store.add_pending({"client_id": "app"}, 600, now=0)
    assert store.take_pending(late, now=601) is None


def test_a_failed_redemption_leaves_the_code_as_it_was(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions.sqlite")
    code = store.add_code(GRANT, 60, now=0)
    with pytest.raises(GrantError):
        store.redeem_code(code, client_id="app", redirect_uri=GRANT.redirect_uri,
                          check_verifier=lambda _: False, session_lifetime=100, now=1)  # fmt: skip
    grant, session, _ = store.redeem_code(code, client_id="app", redirect_uri=GRANT.redirect_uri,
                                          check_verifier=lambda _: True, session_lifetime=100, now=2)  # fmt: skip
    assert grant == GRANT and store.active(session.id, now=3)

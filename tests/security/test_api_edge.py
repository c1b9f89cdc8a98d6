"""The HTTP edge: who the caller is (forwarding headers from trusted proxies only), the token
endpoint's lockout and its audit of failed attempts, the same work for unknown clients,
what an anonymous /healthz says, and ``Cache-Control: no-store`` on every route.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from server.api.caching import cacheable
from tests.live import LiveServer
from tests.security.conftest import (
    AS_SENT,
    Registered,
    Study,
    add_client,
    audit_query,
    auth_env,
    bearer,
    cli_ok,
    store_study,
    token,
)

OPENAPI = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
DATASET = "edge-lung"
LIMIT_CLIENT, LIMIT_ADDRESS = 3, 6


@dataclass
class Gateway:
    live: LiveServer
    admin: Registered
    reader: Registered
    study: Study

    def admin_token(self) -> str:
        return token(self.live, self.admin)


def _gateway(root: Path, **env: str) -> Iterator[Gateway]:
    live = LiveServer(root, extra_env=auth_env(**env))
    cli_ok(
        live, "dataset", "create", DATASET, "--title", DATASET, "--cancer-type", "lung", *AS_SENT
    )
    pusher = add_client(live, "pacs", "--store", DATASET)
    admin = add_client(live, "operator", "--admin")
    reader = add_client(live, "reader", "--organization", "org-r")
    cli_ok(live, "daa", "create", "daa-r", "--dataset", DATASET, "--condition", "download",
           "--organization", "org-r")  # fmt: skip
    live.start()
    try:
        yield Gateway(live, admin, reader, store_study(live, DATASET, token(live, pusher)))
    finally:
        live.stop()


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Loopback is the (only) trusted proxy; tight token endpoint limits."""
    yield from _gateway(
        tmp_path_factory.mktemp("proxy") / "data",
        GATEWAY_TRUSTED_PROXIES='["127.0.0.1"]',
        GATEWAY_AUTH__TOKEN_MAX_FAILURES_PER_CLIENT=str(LIMIT_CLIENT),
        GATEWAY_AUTH__TOKEN_MAX_FAILURES_PER_ADDRESS=str(LIMIT_ADDRESS),
    )


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Default settings: no proxy is trusted."""
    yield from _gateway(tmp_path_factory.mktemp("direct") / "data")


def _events(gw: Gateway, **params: str) -> list[AuditEvent]:
    answer = httpx.get(f"{gw.live.url}/fhir/AuditEvent", params={"_count": "1000", **params},
                       headers=bearer(gw.admin_token()), timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return [e.resource for e in Bundle.model_validate(answer.json()).entry or []]  # type: ignore[misc]


def _address_of(event: AuditEvent) -> str | None:
    for agent in event.agent:
        if agent.requestor and agent.network is not None:
            return str(agent.network.address)
    return None


def _audited_address(gw: Gateway, headers: dict[str, str]) -> str | None:
    """Send a marked request with ``headers``; the source address its audit event names."""
    marker = uuid.uuid4().hex[:12]
    access = gw.admin_token()
    answer = httpx.get(f"{gw.live.url}/fhir/ResearchStudy", params={"_id": marker},
                       headers={**bearer(access), **headers}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [e for e in _events(gw, agent=gw.admin.client_id) if marker in audit_query(e)]
        if found:
            return _address_of(found[0])
        time.sleep(0.2)
    raise AssertionError("the marked request was not audited")


# ---------------------------------------------------------------------- client address

SPOOFS = {
    "X-Forwarded-For": {"X-Forwarded-For": "203.0.113.9"},
    "Forwarded": {"Forwarded": "for=198.51.100.7;proto=https"},
    "both": {"X-Forwarded-For": "203.0.113.9", "Forwarded": 'for="[2001:db8::1]:4711"'},
}


@pytest.mark.parametrize("kind", sorted(SPOOFS))
def test_forwarding_headers_of_an_untrusted_peer_are_ignored(direct: Gateway, kind: str) -> None:
    assert _audited_address(direct, SPOOFS[kind]) == "127.0.0.1"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "127.0.0.1"),
        ({"X-Forwarded-For": "203.0.113.9"}, "203.0.113.9"),
        # the proxy appends the peer it saw: whatever the caller wrote in front is not believed
        ({"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}, "203.0.113.9"),
        ({"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 127.0.0.1"}, "203.0.113.9"),
        ({"X-Forwarded-For": "unknown"}, "127.0.0.1"),
        ({"X-Forwarded-For": "not-an-address, 203.0.113.9"}, "203.0.113.9"),
        ({"Forwarded": "for=198.51.100.7;proto=https"}, "198.51.100.7"),
        ({"Forwarded": 'for="[2001:db8::1]:4711"'}, "2001:db8::1"),
        ({"Forwarded": "for=198.51.100.1, for=198.51.100.7"}, "198.51.100.7"),
        ({"Forwarded": "for=_hidden"}, "127.0.0.1"),
        # Forwarded wins over X-Forwarded-For when a proxy sends both
        ({"Forwarded": "for=198.51.100.7", "X-Forwarded-For": "203.0.113.9"}, "198.51.100.7"),
    ],
)
def test_forwarding_headers_of_a_trusted_proxy(
    behind_proxy: Gateway, headers: dict[str, str], expected: str
) -> None:
    assert _audited_address(behind_proxy, headers) == expected


def test_trusted_proxies_setting_refuses_garbage(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "d", extra_env=auth_env(GATEWAY_TRUSTED_PROXIES='["10.0.0.0/33"]'))
    refused = live.cli("check")
    assert refused.returncode != 0 and "trusted_proxies" in refused.stderr


# ---------------------------------------------------------------------- token endpoint


def _token_attempt(gw: Gateway, client_id: str, secret: str, address: str) -> httpx.Response:
    return httpx.post(f"{gw.live.url}/oauth/token", data={"grant_type": "client_credentials"},
                      auth=(client_id, secret), headers={"X-Forwarded-For": address}, timeout=30)  # fmt: skip


def test_failed_client_authentications_lock_the_client_out(behind_proxy: Gateway) -> None:
    gw, victim = behind_proxy, add_client(behind_proxy.live, "victim")
    assert victim.secret is not None
    for n in range(LIMIT_CLIENT):  # from different addresses: the client id is what counts
        refused = _token_attempt(gw, victim.client_id, "wrong", f"192.0.2.{10 + n}")
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    locked = _token_attempt(gw, victim.client_id, victim.secret, "192.0.2.50")
    assert locked.status_code == 429, locked.text
    assert locked.json()["error"] == "invalid_client" and "access_token" not in locked.json()
    assert 1 <= int(locked.headers["retry-after"]) <= 300
    assert locked.headers["cache-control"] == "no-store"
    # another client from those addresses is not locked out
    assert _token_attempt(gw, gw.reader.client_id, _secret(gw.reader), "192.0.2.10").status_code == 200  # fmt: skip

    # every failed attempt is audited with the client id that was tried and the caller's address
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        failed = [e for e in _events(gw, agent=victim.client_id, outcome="4")]
        if len(failed) >= LIMIT_CLIENT + 1:
            break
        time.sleep(0.2)
    statuses = sorted(str(e.outcomeDesc)[:8] for e in failed)
    assert statuses == ["HTTP 401"] * LIMIT_CLIENT + ["HTTP 429"], statuses
    addresses = {_address_of(e) for e in failed}
    assert addresses == {f"192.0.2.{10 + n}" for n in range(LIMIT_CLIENT)} | {"192.0.2.50"}


def test_failed_attempts_lock_the_source_address_out(behind_proxy: Gateway) -> None:
    gw, address = behind_proxy, "198.51.100.200"
    for n in range(LIMIT_ADDRESS):  # a different (unknown) client id each time
        refused = _token_attempt(gw, f"c-guess{n}", "wrong", address)
        assert refused.status_code == 401, refused.text
    locked = _token_attempt(gw, gw.reader.client_id, _secret(gw.reader), address)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
    # the same client from elsewhere is served
    assert _token_attempt(gw, gw.reader.client_id, _secret(gw.reader), "198.51.100.201").status_code == 200  # fmt: skip
    guessed = _events(gw, agent="c-guess0", outcome="4")
    assert guessed and _address_of(guessed[0]) == address


def test_unknown_clients_cost_the_same_secret_verification(direct: Gateway) -> None:
    """An unknown client id gets the same scrypt verification (against a dummy hash) as a known
    one with a wrong secret. Checked as a ratio of median times with generous bounds: skipping
    the verification would make unknown ids answer about 10-50x faster."""
    gw, known = direct, direct.reader
    unknown_times, known_times = [], []
    with httpx.Client(timeout=30) as http:
        for n in range(8):  # interleaved, so both see the same machine load
            for client_id, times in ((f"c-{uuid.uuid4().hex[:16]}", unknown_times),
                                     (known.client_id, known_times)):  # fmt: skip
                started = time.perf_counter()
                answer = http.post(f"{gw.live.url}/oauth/token", auth=(client_id, f"wrong{n}"),
                                   data={"grant_type": "client_credentials"})  # fmt: skip
                times.append(time.perf_counter() - started)
                assert answer.status_code == 401
    ratio = statistics.median(unknown_times) / statistics.median(known_times)
    assert 0.4 <= ratio <= 2.5, (ratio, unknown_times, known_times)
    assert _token_attempt(gw, known.client_id, _secret(known), "127.0.0.1").status_code == 200


def _secret(client: Registered) -> str:
    assert client.secret is not None
    return client.secret


# ---------------------------------------------------------------------- /healthz


def test_anonymous_healthz_says_only_up(direct: Gateway) -> None:
    url = f"{direct.live.url}/healthz"
    anonymous = httpx.get(url)
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    assert httpx.get(url, headers=bearer(token(direct.live, direct.reader))).json() == {"status": "ok"}  # fmt: skip
    detail = httpx.get(url, headers=bearer(direct.admin_token())).json()
    assert detail["status"] == "ok" and detail["instance"] >= 1 and "version" in detail
    assert httpx.get(url, headers=bearer("not-a-token")).status_code == 401
    assert anonymous.headers["cache-control"] == "no-store"


# ---------------------------------------------------------------------- Cache-Control


def _concrete(path: str, study: Study) -> str:
    values = {"{dataset}": DATASET, "{study}": study.study_uid, "{series}": study.series_uid,
              "{sop}": study.sop_uid, "{frames}": "1", "{frame}": "1", "{path}": "7FE00010",
              "{rtype}": "ImagingStudy", "{rid}": study.study_uid, "{vid}": "1"}  # fmt: skip
    for name, value in values.items():
        path = path.replace(name, value)
    return path


def test_every_route_sends_no_store(direct: Gateway) -> None:
    """Every route of the OpenAPI document, as administrator, reader and anonymously, and errors:
    Cache-Control no-store unless the route is a public document (keys, discovery)."""
    gw = direct
    document: dict[str, Any] = json.loads(OPENAPI.read_text())
    admin, reader = gw.admin_token(), token(gw.live, gw.reader)
    ok = 0
    checked = 0
    with httpx.Client(base_url=gw.live.url, timeout=60) as http:
        for template, operations in document["paths"].items():
            for method in operations:
                path = _concrete(template, gw.study)
                # DELETE only refused: the study is needed by the other routes
                callers = [{}, bearer("broken")]
                if method != "delete":
                    callers += [bearer(admin), bearer(reader)]
                for headers in callers:
                    answer = http.request(method.upper(), path, headers=headers, content=b"{}"
                                          if method.upper() in ("POST", "PUT") else None)  # fmt: skip
                    checked += 1
                    if cacheable(path):
                        continue
                    assert answer.headers.get("cache-control") == "no-store", (
                        method, path, answer.status_code, dict(answer.headers))  # fmt: skip
                    ok += answer.status_code == 200
        missing = http.get("/no/such/route", headers=bearer(admin))
        assert missing.status_code == 404 and missing.headers["cache-control"] == "no-store"
    assert ok >= 20 and checked > 150, (ok, checked)

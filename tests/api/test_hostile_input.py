"""A client's mistake is never a 500: out-of-range numbers, deep nesting, floods of parts."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from server.core.attributes import MATCHING
from tests.core.deep import deep_sequence
from tests.helpers import cohort, part10, store_state, stow
from tests.live import LiveServer

SEARCHES = (
    "/studies", "/series", "/instances", "/studies/1.2.3/series", "/studies/1.2.3/instances",
    "/studies/1.2.3/series/1.2.4/instances",
)  # fmt: skip
BAD_NUMBERS = (
    str(2**64), str(-(2**64)), "9" * 5000, "NaN", "-inf", "1e3", "1_000", "\u0663", "-", "1.5",
)  # fmt: skip
INTEGER_ATTRIBUTES = [k for k, s in MATCHING.items() if s.vr in ("IS", "US", "UL", "SS", "SL")]


@pytest.mark.parametrize("route", SEARCHES)
def test_qido_numbers_out_of_range_are_400(server: LiveServer, route: str) -> None:
    for value in BAD_NUMBERS:
        for name in ("offset", "limit", *INTEGER_ATTRIBUTES):
            answer = httpx.get(f"{server.dicomweb}{route}", params={name: value}, timeout=30)
            assert answer.status_code == 400, (route, name, value, answer.text[:200])
            assert answer.json()["parameter"] == name


@pytest.mark.parametrize("route", SEARCHES)
def test_qido_numbers_at_the_edges_are_answered(server: LiveServer, route: str) -> None:
    for params in ({"offset": "1000000"}, {"limit": str(2**63 - 1)}, {"offset": "0"}):
        answer = httpx.get(f"{server.dicomweb}{route}", params=params, timeout=30)
        assert answer.status_code == 200, (route, params, answer.text[:200])
    answer = httpx.get(f"{server.dicomweb}/instances", params={"InstanceNumber": str(2**31 - 1)})
    assert answer.status_code == 200 and answer.json() == []


def test_instance_with_a_huge_number_is_stored(server: LiveServer) -> None:
    """A stored IS value beyond 64 bits does not fail the index write of the whole request."""
    first, second = cohort(instances_per_series=2)
    first.InstanceNumber = str(10**25)
    answer = stow(server, [part10(first), part10(second)])
    assert answer.status_code == 200, answer.text


def test_a_3000_deep_sequence_fails_its_part_only(fresh_server: LiveServer) -> None:
    good = cohort(instances_per_series=2)
    parts = [part10(good[0]), deep_sequence(3000), deep_sequence(65), part10(good[1])]
    answer = stow(fresh_server, parts)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert len(body["00081199"]["Value"]) == 2
    failed = body["00081198"]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[0xC000], [0xC000]]
    assert store_state(fresh_server)["counts"]["instance"] == 2


def test_100k_one_byte_parts_are_refused_early(fresh_server: LiveServer) -> None:
    boundary = uuid.uuid4().hex
    one = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\nA\r\n".encode()
    body = one * 100_000 + f"--{boundary}--\r\n".encode()
    before = store_state(fresh_server)
    started = time.monotonic()
    try:
        answer = stow(fresh_server, [], body=body, boundary=boundary)
        assert answer.status_code == 413, answer.text[:300]
        assert "GATEWAY_STOW__MAX_PARTS" in answer.json()["message"]
    except httpx.HTTPError:
        pass  # the server may close the connection once it has answered 413
    assert time.monotonic() - started < 60  # loose: 87 s before the cap
    assert store_state(fresh_server) == before
    assert httpx.get(f"{fresh_server.url}/healthz").status_code == 200

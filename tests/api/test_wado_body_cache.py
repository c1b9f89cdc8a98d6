"""A study or series sent as stored twice is kept as one file, and sent from it after.

Proved over HTTP against live gateways: the kept answer is the same body (boundary aside) as
the part-by-part one; what changes the instances (a new one, a delete) changes the answer at
once; a deleted instance leaves no copy of its bytes in any kept body; the kept bodies stay
within their limit; turning the cache off removes them; a crash's leftovers are cleared.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest

from server.storage.bodies import body_files
from tests.helpers import cohort, part10, stow
from tests.live import LiveServer

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
# (a nearly full disk of a test machine must not turn the cache off)
METRICS = {
    "GATEWAY_METRICS__ALLOW": '["127.0.0.0/8"]',
    "GATEWAY_WADO__BODY_CACHE_MIN_FREE_PERCENT": "0",
}


def _kept(live: LiveServer) -> list[Path]:
    return sorted(body_files(live.data_dir / "bodies"))


def _wait_kept(live: LiveServer, count: int) -> list[Path]:
    deadline = time.monotonic() + 20
    while len(_kept(live)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    kept = _kept(live)
    assert len(kept) >= count, kept
    return kept


def _metric(live: LiveServer, outcome: str) -> float:
    page = httpx.get(f"{live.url}/metrics", timeout=30).text
    for line in page.splitlines():
        if line.startswith(f'gateway_wado_body_cache_total{{outcome="{outcome}"}} '):
            return float(line.rpartition(" ")[2])
    return 0.0


def _get(live: LiveServer, path: str) -> httpx.Response:
    response = httpx.get(f"{live.dicomweb}{path}", headers={"Accept": ANY}, timeout=60)
    assert response.status_code == 200, response.text[:300]
    assert int(response.headers["content-length"]) == len(response.content)
    return response


def _parts(response: httpx.Response) -> list[bytes]:
    """The parts' bodies, read with the boundary the Content-Type names."""
    match = re.search(r"boundary=([^;\s]+)", response.headers["content-type"])
    assert match, response.headers["content-type"]
    boundary = match.group(1).strip('"').encode()
    body = response.content
    assert body.startswith(b"--" + boundary + b"\r\n")
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    chunks = body[: -len(boundary) - 6].split(b"--" + boundary + b"\r\n")[1:]
    return [c.partition(b"\r\n\r\n")[2].removesuffix(b"\r\n") for c in chunks]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path / "data", extra_env=METRICS).start()
    try:
        yield server
    finally:
        server.stop()


def _series(
    live: LiveServer, instances: int = 4, size: int = 64, series: int = 1
) -> tuple[str, list[bytes]]:
    """A stored study of ``series`` series: the first series' path and instances' bytes."""
    sets = cohort(instances_per_series=instances, rows=size, columns=size,
                  series_per_study=series)  # fmt: skip
    assert stow(live, [part10(ds) for ds in sets]).status_code == 200
    first = sets[0]
    files = [part10(ds) for ds in sets if ds.SeriesInstanceUID == first.SeriesInstanceUID]
    return f"/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}", files


def _stored_and_kept(data: Path) -> tuple[LiveServer, str, list[bytes], Path]:
    """A gateway on ``data`` (stopped again) that stored a series and kept its body."""
    live = LiveServer(data, extra_env=METRICS).start()
    try:
        path, files = _series(live)
        for _ in range(2):
            _get(live, path)
        (kept,) = _wait_kept(live, 1)
    finally:
        live.stop()
    return live, path, files, kept


def test_a_series_asked_for_twice_is_kept_and_then_sent_from_one_file_with_the_same_bytes(
    live: LiveServer,
) -> None:
    path, files = _series(live)
    first = _get(live, path)
    assert _kept(live) == []  # once is not enough: one-off downloads cost no copy
    _get(live, path)
    (kept,) = _wait_kept(live, 1)
    hits = _metric(live, "hit")
    third = _get(live, path)
    assert _metric(live, "hit") == hits + 1
    assert third.content == kept.read_bytes()  # the kept file, as it is
    assert _parts(third) == _parts(first) == files  # the stored instances, in order
    study = _get(live, path.partition("/series/")[0])  # one series: the same instances
    assert _parts(study) == files


def test_a_new_instance_in_the_series_is_in_the_very_next_answer(live: LiveServer) -> None:
    path, files = _series(live)
    for _ in range(2):
        _get(live, path)
    _wait_kept(live, 1)
    more = cohort(instances_per_series=1, rows=64, columns=64)[0]
    study, _, series = path.removeprefix("/studies/").partition("/series/")
    more.StudyInstanceUID, more.SeriesInstanceUID = study, series
    more.InstanceNumber = 99
    assert stow(live, [part10(more)]).status_code == 200
    hits = _metric(live, "hit")
    assert _parts(_get(live, path)) == [*files, part10(more)]
    assert _metric(live, "hit") == hits  # not the kept body of the old series


def test_deleting_an_instance_leaves_no_copy_of_it_in_any_kept_body(live: LiveServer) -> None:
    path, files = _series(live, series=2)
    for _ in range(2):
        _get(live, path)
        _get(live, path.partition("/series/")[0])
    kept = _wait_kept(live, 2)  # the series' body and the study's
    sop_uid = str(pydicom.dcmread(io.BytesIO(files[1])).SOPInstanceUID)
    assert all(sop_uid.encode() in p.read_bytes() for p in kept)
    deleted = httpx.delete(f"{live.dicomweb}{path}/instances/{sop_uid}", timeout=30)
    assert deleted.status_code in (200, 202, 204), deleted.text
    for p in (live.data_dir / "bodies").iterdir():  # every file: bodies, map, temporaries
        assert sop_uid.encode() not in p.read_bytes(), p.name
    assert _metric(live, "purged") >= 2
    assert _parts(_get(live, path)) == [files[0], *files[2:]]


def test_kept_bodies_stay_within_the_limit_the_least_recently_sent_going_first(
    tmp_path: Path,
) -> None:
    live = LiveServer(tmp_path / "data", extra_env={**METRICS, "GATEWAY_WADO__BODY_CACHE_MB": "1"})
    live.start()
    try:
        paths = [_series(live, instances=6, size=128)[0] for _ in range(8)]  # ~200 kB a body
        for path in paths:
            for _ in range(2):
                _get(live, path)
            time.sleep(0.05)  # distinct modification times
        _wait_kept(live, 1)
        time.sleep(1)  # the last writes land
        kept = _kept(live)
        assert sum(p.stat().st_size for p in kept) <= 1024 * 1024
        assert _metric(live, "evicted") >= 1
        first = _get(live, paths[0])  # evicted: sent part by part, still whole
        assert len(_parts(first)) == 6
    finally:
        live.stop()


def test_turning_the_cache_off_removes_what_was_kept(tmp_path: Path) -> None:
    _, path, _, _ = _stored_and_kept(tmp_path / "data")
    off = LiveServer(tmp_path / "data", extra_env={**METRICS, "GATEWAY_WADO__BODY_CACHE_MB": "0"})
    off.start()
    try:
        for _ in range(3):
            _get(off, path)
        time.sleep(0.5)
        assert not (tmp_path / "data" / "bodies").exists()
        assert _metric(off, "hit") == 0
    finally:
        off.stop()


def test_a_write_cut_short_by_a_crash_is_cleared_at_start_and_never_sent(tmp_path: Path) -> None:
    live, path, files, kept = _stored_and_kept(tmp_path / "data")
    partial = kept.with_name(f"{kept.name}.4242.17.tmp")
    partial.write_bytes(kept.read_bytes()[:1000])
    kept.write_bytes(b"not a body")  # damaged by hand: no delimiter line
    live.start()
    try:
        assert not partial.exists()
        assert _parts(_get(live, path)) == files  # the damaged file is not sent...
        assert not kept.exists()  # ...and is removed
    finally:
        live.stop()


def test_no_body_is_kept_when_it_would_leave_the_volume_under_its_floor(tmp_path: Path) -> None:
    floor = {**METRICS, "GATEWAY_WADO__BODY_CACHE_MIN_FREE_PERCENT": "100"}
    live = LiveServer(tmp_path / "data", extra_env=floor).start()
    try:
        path, files = _series(live)
        for _ in range(3):
            assert _parts(_get(live, path)) == files
        deadline = time.monotonic() + 10
        while _metric(live, "skipped") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _metric(live, "skipped") >= 1
        assert _kept(live) == [] and _metric(live, "hit") == 0
    finally:
        live.stop()

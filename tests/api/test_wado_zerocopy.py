"""WADO-RS instances sent as stored go out by os.sendfile, with the same bytes as without.

Two gateways serve one data directory: one with ``GATEWAY_ZERO_COPY=true`` (each stored
body by one ``gateway.http.response.files`` message that the server answers with
``os.sendfile``), one as shipped (the files read by Python). Every accept the
instance routes answer must give byte-identical bodies on both (boundaries aside); the
zero-copy one must really have used sendfile (``gateway_http_file_bytes_total``), keep the
connection alive, count the bytes in its access log, and survive a client that hangs up in
the middle of a body.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from server.serving import _Pump
from tests.helpers import cohort, part10, stow
from tests.live import LiveServer

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPTS = [
    ANY,
    'multipart/related; type="application/dicom"',
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
    "*/*",
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2',
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.70',
]
SENDFILE = 'gateway_http_file_bytes_total{mode="sendfile"}'
COPY = 'gateway_http_file_bytes_total{mode="copy"}'


@dataclass
class Pair:
    zerocopy: LiveServer
    plain: LiveServer
    study: str
    series: str
    sops: list[str]
    big_series: str


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    data = tmp_path_factory.mktemp("zerocopy") / "data"
    env = {
        "GATEWAY_METRICS__ALLOW": '["127.0.0.0/8"]',
        "GATEWAY_LOG_LEVEL": "info",
        "GATEWAY_WADO__BODY_CACHE_MB": "0",
    }  # part by part here: kept bodies have their own tests
    zerocopy = LiveServer(data, extra_env={**env, "GATEWAY_ZERO_COPY": "true"}).start()
    plain = LiveServer(data, extra_env={**env, "GATEWAY_ZERO_COPY": "false"}, name="plain")
    try:
        small = cohort(instances_per_series=5, rows=128, columns=128)  # 32 kB each: sendfile
        tiny = cohort(instances_per_series=2, rows=16, columns=16)  # sent with the framing
        for ds in tiny:
            ds.StudyInstanceUID, ds.SeriesInstanceUID = (
                small[0].StudyInstanceUID,
                small[0].SeriesInstanceUID,
            )
        big = cohort(instances_per_series=60, rows=256, columns=256)  # 8 MB in all
        for sets in (small + tiny, big):
            response = stow(zerocopy, [part10(ds) for ds in sets])
            assert response.status_code == 200, response.text[:300]
        plain.start()
        yield Pair(
            zerocopy, plain, small[0].StudyInstanceUID, small[0].SeriesInstanceUID,
            [ds.SOPInstanceUID for ds in small + tiny], big[0].SeriesInstanceUID,
        )  # fmt: skip
    finally:
        plain.stop()
        zerocopy.stop()


def _metric(server: LiveServer, name: str) -> float:
    page = httpx.get(f"{server.url}/metrics", timeout=30).text
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.rpartition(" ")[2])
    return 0.0


def _normalized(response: httpx.Response) -> bytes:
    """The body with its random boundary replaced, so that two responses compare."""
    match = re.search(r"boundary=([^;\s]+)", response.headers["content-type"])
    assert match, response.headers["content-type"]
    return response.content.replace(match.group(1).strip('"').encode(), b"BOUNDARY")


def _urls(pair: Pair, server: LiveServer) -> list[str]:
    series = f"{server.dicomweb}/studies/{pair.study}/series/{pair.series}"
    return [f"{server.dicomweb}/studies/{pair.study}", series, f"{series}/instances/{pair.sops[0]}",
            f"{series}/instances/{pair.sops[-1]}"]  # fmt: skip


@pytest.mark.parametrize("accept", ACCEPTS)
def test_every_accept_gives_the_same_bytes_with_and_without_zero_copy(
    pair: Pair, accept: str
) -> None:
    for fast, slow in zip(_urls(pair, pair.zerocopy), _urls(pair, pair.plain), strict=True):
        a = httpx.get(fast, headers={"Accept": accept}, timeout=60)
        b = httpx.get(slow, headers={"Accept": accept}, timeout=60)
        assert a.status_code == b.status_code == 200, (a.text[:200], b.text[:200])
        assert a.headers.get("content-length") == b.headers.get("content-length")
        assert _normalized(a) == _normalized(b)
        assert len(a.content) > 500


def test_series_as_stored_goes_by_sendfile_with_its_length_up_front(pair: Pair) -> None:
    url = f"{pair.zerocopy.dicomweb}/studies/{pair.study}/series/{pair.series}"
    sent, copied = _metric(pair.zerocopy, SENDFILE), _metric(pair.zerocopy, COPY)
    response = httpx.get(url, headers={"Accept": ANY}, timeout=60)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    assert "transfer-encoding" not in response.headers
    sizes = [int(n) for n in re.findall(rb"Content-Length: (\d+)\r\n", response.content)]
    assert len(sizes) == 7
    expected = sum(sizes)  # every stored file, the two tiny ones too
    assert expected > 5 * 32 * 1024
    assert _metric(pair.zerocopy, SENDFILE) - sent == expected
    assert _metric(pair.zerocopy, COPY) == copied  # no silent fallback to copying
    plain_sent = _metric(pair.plain, SENDFILE)
    assert httpx.get(url.replace(pair.zerocopy.url, pair.plain.url), headers={"Accept": ANY},
                     timeout=60).status_code == 200  # fmt: skip
    assert _metric(pair.plain, SENDFILE) == plain_sent  # the switch really switches


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one Content-Length response, leaving the connection open."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        block = sock.recv(65536)
        assert block, "connection closed before the head"
        raw += block
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        block = sock.recv(1 << 20)
        assert block, "connection closed inside the body"
        body += block
    assert len(body) == length, "bytes after the body"
    return head, body


def test_connection_stays_alive_across_zero_copy_responses(pair: Pair) -> None:
    parts = urlsplit(pair.zerocopy.url)
    path = f"/dicom-web/studies/{pair.study}/series/{pair.series}"
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: {ANY}\r\n\r\n".encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        bodies = []
        for _ in range(3):
            sock.sendall(request)
            head, body = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 "), head[:100]
            assert b"connection: close" not in head.lower()
            bodies.append(body)
    assert len(bodies[0]) > 5 * 32 * 1024


def test_access_log_counts_the_bytes_sent_by_sendfile(pair: Pair) -> None:
    url = f"{pair.zerocopy.dicomweb}/studies/{pair.study}/series/{pair.series}"
    response = httpx.get(url, headers={"Accept": ANY, "X-Request-ID": "zerocopy-bytes-1"})
    assert response.status_code == 200
    line = ""
    for _ in range(50):
        lines = Path(pair.zerocopy.log_path).read_text().splitlines()
        line = next((x for x in lines if "rid=zerocopy-bytes-1" in x), "")
        if line:
            break
        time.sleep(0.1)
    assert f" {len(response.content)}B " in line, line


def test_client_hanging_up_mid_body_leaves_the_worker_serving(pair: Pair) -> None:
    server = pair.zerocopy
    parts = urlsplit(server.url)
    study = httpx.get(f"{server.dicomweb}/series", params={"SeriesInstanceUID": pair.big_series})
    study_uid = study.json()[0]["0020000D"]["Value"][0]
    path = f"/dicom-web/studies/{study_uid}/series/{pair.big_series}"
    sent = _metric(server, SENDFILE)
    for _ in range(3):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # the server blocks soon
        sock.connect((parts.hostname, parts.port))
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: {ANY}\r\n\r\n".encode()
        )
        got = sock.recv(65536)
        assert got.startswith(b"HTTP/1.1 200 ")
        time.sleep(0.2)  # the server is inside a sendfile, waiting for room
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # reset, mid-body
    time.sleep(0.5)
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    full = httpx.get(f"{server.url}{path}", headers={"Accept": ANY}, timeout=60)
    plain = httpx.get(f"{pair.plain.url}{path}", headers={"Accept": ANY}, timeout=60)
    assert full.status_code == 200 and len(full.content) > 60 * 128 * 1024
    assert _normalized(full) == _normalized(plain)
    assert _metric(server, SENDFILE) - sent > len(full.content) * 0.9  # the last went by sendfile
    log = Path(server.log_path).read_text()
    assert "Exception in ASGI application" not in log
    assert "Traceback" not in log


def test_clients_reading_a_trickle_hold_no_thread_that_others_need(pair: Pair) -> None:
    """More slow readers than the sending threads (16), each taking a little at a time: a
    normal download is still answered whole meanwhile, the slow sends waiting on the event
    loop. (What bounds a thread's wait is proved, deterministically, by the next test: this
    one passed with the earlier bound on each wait too, whose delay was ~3 s here.)"""
    server = pair.zerocopy
    parts = urlsplit(server.url)
    study = httpx.get(f"{server.dicomweb}/series", params={"SeriesInstanceUID": pair.big_series})
    path = f"/dicom-web/studies/{study.json()[0]['0020000D']['Value'][0]}/series/{pair.big_series}"
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: {ANY}\r\n\r\n".encode()
    stop = threading.Event()
    slow = []
    for _ in range(24):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((parts.hostname, parts.port))
        sock.sendall(request)
        slow.append(sock)

    def trickle(sock: socket.socket) -> None:
        while not stop.is_set():
            try:
                sock.recv(512)
            except OSError:
                return
            time.sleep(0.04)

    readers = [threading.Thread(target=trickle, args=(s,), daemon=True) for s in slow]
    for reader in readers:
        reader.start()
    try:
        time.sleep(1)  # every slow send has started
        full = httpx.get(f"{server.url}{path}", headers={"Accept": ANY}, timeout=20)
        assert full.status_code == 200 and len(full.content) > 60 * 128 * 1024
    finally:
        stop.set()
        for sock in slow:
            sock.close()


def test_a_send_gives_its_thread_back_after_its_patience_however_little_the_reader_takes(
    tmp_path: Path,
) -> None:
    """The sending thread's bound, on a real TCP connection: a reader that frees a little
    room every few milliseconds makes every single wait short, yet the run must end (not
    done) once ``PATIENCE`` seconds of waiting are spent in all, instead of keeping the
    thread until the whole body is out (what a bound on each wait did: ~3 s here)."""
    size = 8 << 20
    body = tmp_path / "body"
    body.write_bytes(bytes(size))
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    sending, _ = listener.accept()
    sending.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sending.setblocking(False)
    stop = threading.Event()

    def read_a_little() -> None:
        while not stop.is_set():
            try:
                if not client.recv(16384):
                    return
            except OSError:
                return
            time.sleep(0.005)

    reader = threading.Thread(target=read_a_little, daemon=True)
    reader.start()
    pump = _Pump(sending.fileno(), [(str(body), size)])
    try:
        done = pump.run()
    finally:
        stop.set()
        pump.close_file()
        for sock in (client, sending, listener):
            sock.close()
        reader.join(5)
    assert not done, "the thread kept the send until the whole body was out"
    assert 0 < pump.file_bytes < size


def test_a_blob_gone_before_the_response_leaves_out_its_part_and_the_length_agrees(
    pair: Pair, tmp_path: Path
) -> None:
    server = pair.zerocopy
    sets = cohort(instances_per_series=3, rows=128, columns=128)
    assert stow(server, [part10(ds) for ds in sets]).status_code == 200
    blobs = sorted((server.data_dir / "blobs").rglob("*"), key=lambda p: p.stat().st_mtime)
    newest = [p for p in blobs if p.is_file()][-1]
    newest.rename(tmp_path / "aside")  # one blob of this series, gone (as if removed by hand)
    try:
        url = f"{server.dicomweb}/studies/{sets[0].StudyInstanceUID}/series/{sets[0].SeriesInstanceUID}"
        response = httpx.get(url, headers={"Accept": ANY}, timeout=60)
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == len(response.content)
        assert response.content.count(b"Content-Type: application/dicom") == 2
    finally:
        (tmp_path / "aside").rename(newest)


def test_every_worker_process_of_serve_sends_by_sendfile(tmp_path: Path) -> None:
    env = {"GATEWAY_WORKERS": "2", "GATEWAY_METRICS__ALLOW": '["127.0.0.0/8"]',
           "GATEWAY_ZERO_COPY": "true"}  # fmt: skip
    server = LiveServer(tmp_path / "data", extra_env=env).start()
    try:
        sets = cohort(instances_per_series=3, rows=128, columns=128)
        assert stow(server, [part10(ds) for ds in sets]).status_code == 200
        url = f"{server.dicomweb}/studies/{sets[0].StudyInstanceUID}"
        size = 0
        for _ in range(12):  # new connections: the kernel spreads them over both workers
            response = httpx.get(url, headers={"Accept": ANY}, timeout=60)
            assert response.status_code == 200
            size = len(response.content)
        assert _metric(server, SENDFILE) > 12 * (size - 2000)  # the files, not the framing
        assert _metric(server, COPY) == 0
    finally:
        server.stop()


def test_an_instance_bigger_than_one_read_chunk_is_the_same_on_both_paths(pair: Pair) -> None:
    sets = cohort(instances_per_series=1, rows=1536, columns=1536)  # 4.7 MB: read in pieces
    assert stow(pair.zerocopy, [part10(ds) for ds in sets]).status_code == 200
    ds = sets[0]
    path = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    a = httpx.get(f"{pair.zerocopy.url}{path}", headers={"Accept": ANY}, timeout=60)
    b = httpx.get(f"{pair.plain.url}{path}", headers={"Accept": ANY}, timeout=60)
    assert a.status_code == b.status_code == 200
    assert int(b.headers["content-length"]) == len(b.content) > 1536 * 1536 * 2
    assert _normalized(a) == _normalized(b)

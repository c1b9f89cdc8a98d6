"""WADO-RS bodies reach the wire in a few large HTTP chunks, not one per instance.

The server iterates a streamed body in a worker thread and hands each chunk to its event
loop: one hand-off per instance made the metadata of a 600-instance series take 124 ms
(p50, loaded 2-core machine) where batching takes 9 ms. Counting the chunks of the
chunked transfer coding on a raw socket catches any route that goes back to streaming
per instance, without timing anything.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from tests.helpers import cohort, part10, stow
from tests.live import LiveServer


def _http_chunks(url: str, accept: str) -> tuple[int, int]:
    """(number of chunks, body bytes) of an HTTP/1.1 response read off a socket; a body
    sent with Content-Length counts as one chunk."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        request = (f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: {accept}\r\n"
                   "Connection: close\r\n\r\n")  # fmt: skip
        sock.sendall(request.encode())
        raw = b""
        while block := sock.recv(1 << 20):
            raw += block
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head[:200]
    if b"transfer-encoding: chunked" not in head.lower():
        assert b"content-length: " + str(len(body)).encode() in head.lower()
        return 1, len(body)
    chunks = size = 0
    while True:
        line, _, body = body.partition(b"\r\n")
        length = int(line.split(b";")[0], 16)
        if length == 0:
            return chunks, size
        chunks, size = chunks + 1, size + length
        body = body[length + 2 :]


@pytest.fixture(scope="module")
def instance(server: LiveServer) -> str:
    """URL of the first of 300 small instances in one series."""
    datasets = cohort(instances_per_series=300, rows=16, columns=16)
    response = stow(server, [part10(ds) for ds in datasets])
    assert response.status_code == 200, response.text[:300]
    first = datasets[0]
    return (
        f"{server.dicomweb}/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}"
        f"/instances/{first.SOPInstanceUID}"
    )


def test_a_frame_comes_in_one_chunk(instance: str) -> None:
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    chunks, size = _http_chunks(instance + "/frames/1", accept)
    assert size > 16 * 16 * 2
    assert chunks == 1


def test_metadata_of_300_instances_comes_in_a_few_chunks(instance: str) -> None:
    chunks, size = _http_chunks(
        instance.rsplit("/instances/", 1)[0] + "/metadata", "application/dicom+json"
    )
    assert size > 300 * 500
    assert chunks <= size // (256 * 1024) + 2, f"{chunks} chunks for {size} bytes"


def test_a_series_of_300_small_instances_comes_in_a_few_chunks(instance: str) -> None:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    chunks, size = _http_chunks(instance.rsplit("/instances/", 1)[0], accept)
    assert size > 300 * 500
    assert chunks <= size // (256 * 1024) + 2, f"{chunks} chunks for {size} bytes"

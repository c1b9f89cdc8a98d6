"""Multipart framing: work linear in the number of parts, and a cap on parts (no timing)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from server.core.multipart import MAX_BOUNDARY, MultipartSpooler, check_boundary, coalesce
from server.errors import MalformedMultipart, PayloadTooLarge


def _body(parts: int, boundary: str = "b0undary") -> bytes:
    one = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\nA\r\n".encode()
    return one * parts + f"--{boundary}--\r\n".encode()


def _calls_to_spool(tmp_path: Path, parts: int) -> int:
    """Python function calls made while a body of ``parts`` one-byte parts is read."""
    directory = tmp_path / str(parts)
    directory.mkdir()
    body = _body(parts)
    count = [0]

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            count[0] += 1

    spooler = MultipartSpooler("b0undary", directory, 1 << 40, max_parts=10**6)
    sys.setprofile(profile)
    try:
        for start in range(0, len(body), 65536):
            spooler.feed(body[start : start + 65536])
        found = spooler.finish()
    finally:
        sys.setprofile(None)
    assert len(found) == parts
    return count[0]


def test_work_is_linear_in_the_number_of_parts(tmp_path: Path) -> None:
    small, large = _calls_to_spool(tmp_path, 1000), _calls_to_spool(tmp_path, 4000)
    assert 3.5 < large / small < 4.5, (small, large)


def test_parts_beyond_the_cap_are_refused_while_reading(tmp_path: Path) -> None:
    spooler = MultipartSpooler("b0undary", tmp_path, 1 << 40, max_parts=5)
    with pytest.raises(PayloadTooLarge, match="more than 5 parts"):
        spooler.feed(_body(100))
    spooler.close()
    assert len(list(tmp_path.iterdir())) == 5  # it stopped at the sixth part


@pytest.mark.parametrize("length", [1, 70, 71, 73, 150, MAX_BOUNDARY])
def test_boundaries_up_to_the_documented_maximum_are_read(tmp_path: Path, length: int) -> None:
    """RFC 2046 says 70; Orthanc sends 73 (two UUIDs joined by '-'): up to MAX_BOUNDARY pass."""
    boundary = ("ab-cd:ef" * 40)[:length]
    spooler = MultipartSpooler(boundary, tmp_path, 1 << 20)
    spooler.feed(_body(2, boundary))
    assert len(spooler.finish()) == 2


@pytest.mark.parametrize(
    "boundary",
    ["", "x" * (MAX_BOUNDARY + 1), "y" * 10_000, "ends-with-space ", "semi;colon", 'qu"ote'],
    ids=["empty", "one-too-long", "absurd", "trailing-space", "semicolon", "quote"],
)
def test_absurd_or_illegal_boundaries_are_refused_clearly(tmp_path: Path, boundary: str) -> None:
    with pytest.raises(MalformedMultipart) as caught:
        MultipartSpooler(boundary, tmp_path, 1 << 20)
    assert "boundary" in caught.value.message
    with pytest.raises(MalformedMultipart):
        check_boundary(boundary)


@pytest.mark.parametrize("digest", [True, False])
def test_parts_spool_the_same_bytes_with_or_without_their_digest(
    tmp_path: Path, digest: bool
) -> None:
    """A de-identified dataset never stores the sent bytes, so STOW spools them without
    hashing (``digest=False``); the spooled files are the same either way."""
    import hashlib

    payloads = [b"\x00DICM" * 1000, b"second part"]
    body = (
        b"".join(
            b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in payloads
        )
        + b"--b0undary--\r\n"
    )
    spooler = MultipartSpooler("b0undary", tmp_path, 1 << 30, digest=digest)
    for start in range(0, len(body), 777):
        spooler.feed(body[start : start + 777])
    parts = spooler.finish()
    assert [p.path.read_bytes() for p in parts] == payloads
    want = [hashlib.sha256(p).hexdigest() for p in payloads] if digest else [None, None]
    assert [p.sha256 for p in parts] == want


def test_coalesce_keeps_every_byte_in_order_in_chunks_of_at_least_the_batch() -> None:
    pieces = [bytes([i % 256]) * (i % 7) for i in range(1000)] + [b"x" * 50, b"", b"y"]
    chunks = list(coalesce(iter(pieces), 40))
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(c) >= 40 for c in chunks[:-1])
    assert len(chunks) <= len(b"".join(pieces)) // 40 + 1


def test_coalesce_passes_a_big_piece_through_without_copying_it() -> None:
    big = b"z" * 100
    chunks = list(coalesce(iter([big, b"a", b"b"]), 40))
    assert chunks[0] is big and chunks[1:] == [b"ab"]

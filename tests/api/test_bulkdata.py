"""No pixel data in metadata or QIDO answers, at any depth; every BulkDataURI is served.

One instance carries what leaked before: an Icon Image Sequence with native and
encapsulated (undefined-length) pixel data, Overlay Data, a big private OB,
Waveform Data and an Encapsulated Document, nested in sequences. Every JSON value
of every metadata and QIDO route is walked.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from server.core.bulkdata import PIXEL_TAGS, is_pixel_bearing
from tests.helpers import cohort, part10, stow
from tests.live import LiveServer

THRESHOLD = 256
BULK_ACCEPT = 'multipart/related; type="application/octet-stream"'


def _icon(encapsulated: bool) -> Dataset:
    icon = Dataset()
    icon.Rows, icon.Columns, icon.SamplesPerPixel = 64, 64, 1
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PhotometricInterpretation = "MONOCHROME2"
    if encapsulated:  # a 16 KiB fragment in undefined-length Pixel Data
        icon.add_new(0x7FE00010, "OB", encapsulate([bytes(range(256)) * 64]))
        icon["PixelData"].is_undefined_length = True
    else:
        icon.add_new(0x7FE00010, "OB", bytes(64 * 64))
    return icon


def hostile_instance() -> pydicom.Dataset:
    """A small CT slice carrying every kind of binary value that used to be inlined."""
    ds = cohort(instances_per_series=1)[0]
    ds.IconImageSequence = Sequence([_icon(encapsulated=False)])
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60003000, "OW", b"\x55" * 32)  # a small overlay: pixels, whatever the size
    ds.add_new(0x00091010, "LO", "ACME")
    ds.add_new(0x00091011, "OB", b"\x01" * 5000)  # a big private OB
    ds.add_new(0x00091012, "OB", b"\x02" * 8)  # a small one stays inline
    wave = Dataset()
    wave.add_new(0x54001010, "OW", b"\x03\x00" * 20)
    ds.WaveformSequence = Sequence([wave])
    inner = Dataset()
    inner.IconImageSequence = Sequence([_icon(encapsulated=True)])
    inner.add_new(0x00420011, "OB", b"%PDF-1.4 tiny!")  # Encapsulated Document
    inner.add_new(0x60023000, "OW", b"\xaa" * 8)
    deeper = Dataset()
    deeper.add_new(0x00091010, "LO", "ACME")
    deeper.add_new(0x00091011, "OB", b"\x04" * 300)
    inner.ReferencedImageSequence = Sequence([deeper])
    ds.add_new(0x0040A730, "SQ", Sequence([inner]))  # Content Sequence
    return ds


def walk(
    value: Any, path: str = "", in_icon: bool = False
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Every DICOM JSON element at every depth of an answer (list of objects or one object)."""
    if isinstance(value, list):
        for item in value:
            yield from walk(item, path, in_icon)
        return
    for key, element in value.items():
        yield f"{path}{key}", element, in_icon
        if element.get("vr") == "SQ":
            icon = in_icon or key == "00880200"
            for i, item in enumerate(element.get("Value", [])):
                yield from walk(item, f"{path}{key}/{i + 1}/", icon)


def assert_no_pixels(answer: Any, where: str) -> list[str]:
    """No pixel-bearing, icon or big binary value inline; returns every BulkDataURI seen."""
    uris = []
    for path, element, in_icon in walk(answer):
        tag = int(path.rsplit("/", 1)[-1], 16)
        inline = element.get("InlineBinary")
        if inline is not None:
            size = len(base64.b64decode(inline))
            assert not is_pixel_bearing(tag), (where, path, size)
            assert not in_icon, (where, path, size)
            assert size <= THRESHOLD, (where, path, size)
        if "BulkDataURI" in element:
            uris.append(element["BulkDataURI"])
    return uris


def original_value(ds: pydicom.Dataset, path: str) -> bytes:
    parts = path.split("/")
    current = ds
    for i in range(0, len(parts) - 1, 2):
        current = current[int(parts[i], 16)].value[int(parts[i + 1]) - 1]
    return bytes(current[int(parts[-1], 16)].value)


def only_part(answer: httpx.Response) -> bytes:
    boundary = answer.headers["content-type"].split("boundary=")[1].strip('"')
    pieces = answer.content.split(b"--" + boundary.encode())
    assert len(pieces) == 3, answer.content[:200]
    return pieces[1].split(b"\r\n\r\n", 1)[1][:-2]


@pytest.fixture(scope="module")
def stored(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, pydicom.Dataset]]:
    live = LiveServer(tmp_path_factory.mktemp("bulk") / "data").start()
    ds = hostile_instance()
    answer = stow(live, [part10(ds)])
    assert answer.status_code == 200, answer.text
    yield live, ds
    live.stop()


def _routes(ds: pydicom.Dataset) -> dict[str, str]:
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    return {
        "study metadata": f"/studies/{study}/metadata",
        "series metadata": f"/studies/{study}/series/{series}/metadata",
        "instance metadata": f"/studies/{study}/series/{series}/instances/{sop}/metadata",
        "QIDO studies": f"/studies?StudyInstanceUID={study}&includefield=all",
        "QIDO series": f"/series?StudyInstanceUID={study}&includefield=all",
        "QIDO instances": f"/instances?StudyInstanceUID={study}&includefield=all",
        "QIDO study series": f"/studies/{study}/series?includefield=all",
        "QIDO study instances": f"/studies/{study}/instances?includefield=all",
        "QIDO series instances": f"/studies/{study}/series/{series}/instances?includefield=all",
    }


def test_every_metadata_and_qido_route_keeps_pixels_out(
    stored: tuple[LiveServer, pydicom.Dataset],
) -> None:
    live, ds = stored
    every: dict[str, list[str]] = {}
    for name, path in _routes(ds).items():
        answer = httpx.get(live.dicomweb + path, timeout=30)
        assert answer.status_code == 200, (name, answer.text)
        body = answer.json()
        assert body, name
        every[name] = assert_no_pixels(body, name)
    meta = every["instance metadata"]
    prefix = f"{live.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    expected = {
        "7FE00010", "00880200/1/7FE00010", "60003000", "00091011", "54000100/1/54001010",
        "0040A730/1/00880200/1/7FE00010", "0040A730/1/00420011", "0040A730/1/60023000",
        "0040A730/1/00081140/1/00091011",
    }  # fmt: skip
    tails = {uri.split("/bulkdata/", 1)[1] for uri in meta}
    assert tails == expected
    assert all(uri.startswith(prefix) for uri in meta)
    # QIDO at instance level carries the same nested URIs, absolute too
    assert every["QIDO instances"] and all(u.startswith(prefix) for u in every["QIDO instances"])


def test_every_bulkdata_uri_is_served(stored: tuple[LiveServer, pydicom.Dataset]) -> None:
    live, ds = stored
    path = _routes(ds)["instance metadata"]
    meta = httpx.get(live.dicomweb + path, timeout=30).json()
    for uri in assert_no_pixels(meta, "metadata"):
        tail = uri.split("/bulkdata/", 1)[1]
        answer = httpx.get(uri, headers={"Accept": BULK_ACCEPT}, timeout=30)
        assert answer.status_code == 200, (uri, answer.text)
        if tail != "7FE00010":
            assert only_part(answer) == original_value(ds, tail), tail


def test_small_binary_values_stay_inline(stored: tuple[LiveServer, pydicom.Dataset]) -> None:
    live, ds = stored
    meta = httpx.get(live.dicomweb + _routes(ds)["instance metadata"], timeout=30).json()[0]
    assert base64.b64decode(meta["00091012"]["InlineBinary"]) == b"\x02" * 8


def test_metadata_stored_by_an_older_version_does_not_leak(tmp_path: Any) -> None:
    """Records written before the rule (InlineBinary pixels, big values) are converted when read."""
    live = LiveServer(tmp_path / "data").start()
    try:
        if live.env().get("GATEWAY_INDEX") == "elasticsearch":
            pytest.skip("rewrites the SQLite index to simulate an older record")
        ds = hostile_instance()
        assert stow(live, [part10(ds)]).status_code == 200
        db = sqlite3.connect(live.data_dir / "index.sqlite")
        (blob,) = db.execute("SELECT metadata FROM instance_metadata").fetchone()
        old = orjson.loads(blob)
        inline = base64.b64encode(b"\x07" * 4096).decode()
        for _path, element, _icon in walk(old):  # what an older version stored
            if "BulkDataURI" in element:
                del element["BulkDataURI"]
                element["InlineBinary"] = inline
        db.execute("UPDATE instance_metadata SET metadata = ?", (orjson.dumps(old),))
        db.commit()
        db.close()
        for name, path in _routes(ds).items():
            body = httpx.get(live.dicomweb + path, timeout=30).json()
            uris = assert_no_pixels(body, name)
            assert "instance" not in name or len(uris) >= 9, (name, uris)
    finally:
        live.stop()


def test_pixel_bearing_tags_come_from_the_dictionary() -> None:
    """The set is derived, not typed: spot-check that it holds what PS3.3/PS3.5 define."""
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData", "WaveformData",
                    "EncapsulatedDocument", "SpectroscopyData"):  # fmt: skip
        assert pydicom.datadict.tag_for_keyword(keyword) in PIXEL_TAGS, keyword
    for tag in (0x60003000, 0x601E3000, 0x50003000, 0x5002200C, 0x7F000010):
        assert is_pixel_bearing(tag), hex(tag)
    for tag in (0x00100010, 0x00280010, 0x60000010, 0x7FE00001):
        assert not is_pixel_bearing(tag), hex(tag)

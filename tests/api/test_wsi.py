"""Whole-slide imaging: VL Whole Slide Microscopy pyramids written by wsidicom, over HTTP.

The slides are real WSI DICOM from a maintained library (tests/wsi.py: wsidicom writes
the tiled, multi-resolution pyramid from a synthetic image), stored by STOW-RS and read
back frame by frame with dicomweb-client. The oracle for every frame is the tile as
wsidicom itself reads it from the file it wrote.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

from tests.deid.ingest_helpers import create_dataset, files_holding
from tests.helpers import stow
from tests.live import LiveServer
from tests.wsi import CONTAINER_ID, SPECIMEN_ID, SPECIMEN_TEXT, encoded_tiles, write_slide

WSI_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_FRAMES = (("image/jpeg", JPEG_BASELINE),)


def _uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _store(live: LiveServer, files: list[Path], dataset: str | None = None) -> None:
    parts = [f.read_bytes() for f in files]
    if dataset is None:
        response = stow(live, parts)
    else:
        body = b"".join(
            b"--wsi\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts
        )
        response = httpx.post(
            f"{live.url}/datasets/{dataset}/dicom-web/studies",
            content=body + b"--wsi--\r\n",
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=wsi'},
            timeout=300,
        )
    assert response.status_code == 200, response.text[:500]


def _tiles_in_frame_order(path: Path) -> list[bytes]:
    """TILED_FULL (PS3.3 C.8.12.4.1.3): frames go row by row, left to right."""
    tiles = encoded_tiles(path)
    return [tiles[key] for key in sorted(tiles, key=lambda xy: (xy[1], xy[0]))]


def _same_jpeg(served: bytes, tile: bytes) -> bool:
    """A fragment is padded to even length (PS3.5 A.4) with one byte after the EOI."""
    return served == tile or (len(served) == len(tile) + 1 and served.startswith(tile))


@pytest.mark.parametrize("offset_table", ["bot", "eot", "empty"])
def test_every_tile_of_every_pyramid_level_comes_back_as_wsidicom_reads_it(
    server: LiveServer, tmp_path: Path, offset_table: str
) -> None:
    """Frames are found whichever offset table the writer chose: Basic, Extended or none."""
    files = write_slide(tmp_path / "slide", 1024, 128, offset_table=offset_table)
    # 1024, 512, 256 and 128 pixels wide: 64, 16, 4 and 1 tile (no edge tiles: wsidicom
    # reads those back cropped and re-encoded)
    assert len(files) == 4
    _store(server, files)
    client = DICOMwebClient(server.dicomweb)
    for path in files:
        expected = _tiles_in_frame_order(path)
        numbers = list(range(1, len(expected) + 1))
        got = client.retrieve_instance_frames(*_uids(path), numbers, media_types=JPEG_FRAMES)
        assert len(got) == len(expected)
        assert all(_same_jpeg(g, e) for g, e in zip(got, expected, strict=True)), path.name


def test_the_pyramid_is_one_series_of_whole_slide_instances(
    server: LiveServer, tmp_path: Path
) -> None:
    files = write_slide(tmp_path / "slide", 512, 128)
    _store(server, files)
    study, series, _ = _uids(files[0])
    client = DICOMwebClient(server.dicomweb)
    found = client.search_for_instances(study, series)
    assert {i["00080016"]["Value"][0] for i in found} == {WSI_CLASS}
    assert len(found) == len(files) == 3
    widths = set()
    for meta in client.retrieve_series_metadata(study, series):
        ds = pydicom.Dataset.from_json(meta)
        assert int(ds.NumberOfFrames) == (int(ds.TotalPixelMatrixColumns) // 128) ** 2 or (
            int(ds.NumberOfFrames) == 1
        )
        assert ds.DimensionOrganizationType == "TILED_FULL"
        widths.add(int(ds.TotalPixelMatrixColumns))
    assert widths == {512, 256, 128}


def test_frames_come_in_the_order_asked_and_a_frame_past_the_end_is_404(
    server: LiveServer, tmp_path: Path
) -> None:
    (path,) = write_slide(tmp_path / "slide", 512, 128, levels=False)
    _store(server, [path])
    expected = _tiles_in_frame_order(path)
    client = DICOMwebClient(server.dicomweb)
    got = client.retrieve_instance_frames(*_uids(path), [16, 1, 7], media_types=JPEG_FRAMES)
    assert [_same_jpeg(g, expected[n - 1]) for g, n in zip(got, [16, 1, 7], strict=True)] == [
        True
    ] * 3
    study, series, sop = _uids(path)
    url = f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}/frames/17"
    response = httpx.get(url, headers={"Accept": "multipart/related; type=image/jpeg"})
    assert response.status_code == 404
    assert "16" in response.text  # says how many frames there are


# What dicom-microscopy-viewer (OHIF's microscopy mode) sends for a tile: every type it
# decodes, JPEG-LS first, all at the same preference.
MICROSCOPY_VIEWER_ACCEPT = ", ".join(
    f'multipart/related; type="{media}"; transfer-syntax={syntax}'
    for media, syntax in (
        ("image/jls", "1.2.840.10008.1.2.4.80"), ("image/jls", "1.2.840.10008.1.2.4.81"),
        ("image/jp2", "1.2.840.10008.1.2.4.90"), ("image/jp2", "1.2.840.10008.1.2.4.91"),
        ("application/octet-stream", "*"), ("image/jpeg", JPEG_BASELINE),
    )
)  # fmt: skip


def test_a_viewer_listing_every_type_it_decodes_gets_the_tiles_as_stored_not_transcoded(
    server: LiveServer, tmp_path: Path
) -> None:
    """Among media ranges of equal preference the stored one wins (no re-encoding because
    of the order of a list); a higher q-value for another type is still honoured."""
    (path,) = write_slide(tmp_path / "slide", 256, 128, levels=False)
    _store(server, [path])
    study, series, sop = _uids(path)
    url = f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}/frames/3"
    response = httpx.get(url, headers={"Accept": MICROSCOPY_VIEWER_ACCEPT})
    assert response.status_code == 200, response.text
    assert 'type="image/jpeg"' in response.headers["content-type"], response.headers
    assert _tiles_in_frame_order(path)[2].rstrip(b"\0") in response.content
    preferred = "multipart/related; type=image/jls, multipart/related; type=image/jpeg; q=0.5"
    response = httpx.get(url, headers={"Accept": preferred})
    assert response.status_code == 200, response.text
    assert 'type="image/jls"' in response.headers["content-type"], response.headers


def _bytes_read(pid: int) -> int:
    """Bytes this process asked read(2) and friends for (files, sockets, the index)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (PS: proc(5) stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_frame_of_a_20000_frame_instance_costs_neither_the_file_nor_the_frame_table(
    fresh_server: LiveServer, tmp_path: Path
) -> None:
    """One frame costs a seek and a read: the server reads a sliver of the file per frame
    and spends no CPU on the other 20,163 entries of the frame table (parsing it whole cost
    about 0.15 s a request). bench/wsi_frames.py times the same on 100,000 frames."""
    (path,) = write_slide(tmp_path / "slide", 16 * 142, 16, levels=False)  # 20,164 frames
    _store(fresh_server, [path])
    ds = pydicom.dcmread(path)
    stored = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    assert len(stored) == 20164
    study, series, sop = _uids(path)
    base = f"{fresh_server.dicomweb}/studies/{study}/series/{series}/instances/{sop}/frames/"
    accept = {"Accept": f"multipart/related; type=image/jpeg; transfer-syntax={JPEG_BASELINE}"}
    assert fresh_server.process is not None
    pid = fresh_server.process.pid
    rng = random.Random(20164)
    numbers = [rng.randint(1, len(stored)) for _ in range(40)]
    with httpx.Client(timeout=30) as http:
        http.get(base + "1", headers=accept)  # warm up
        before, cpu = _bytes_read(pid), _cpu_seconds(pid)
        for number in numbers:
            response = http.get(base + str(number), headers=accept)
            assert response.status_code == 200
            assert stored[number - 1].rstrip(b"\0") in response.content
        per_frame = (_bytes_read(pid) - before) / len(numbers)
        cpu_per_frame = (_cpu_seconds(pid) - cpu) / len(numbers)
    size = path.stat().st_size
    print(f"per frame: {per_frame:.0f} bytes read, {cpu_per_frame * 1000:.1f} ms CPU")
    assert per_frame < size / 20, f"{per_frame:.0f} bytes read per frame of a {size}-byte file"
    assert cpu_per_frame < 0.03, f"{cpu_per_frame * 1000:.0f} ms of server CPU per frame"


def test_a_basic_dataset_de_identifies_the_slide_label_and_specimen_and_keeps_every_tile(
    live_server_factory: type[LiveServer], tmp_path: Path
) -> None:
    """PS3.15 Table E.1-1 on the Specimen module: Container and Specimen Identifier get
    dummies, Specimen UID a new UID, descriptions go; the JPEG tiles are copied through."""
    live = live_server_factory(tmp_path / "data")
    create_dataset(live, "slides", "--deidentify", "basic")
    live.start()
    files = write_slide(tmp_path / "slide", 512, 128, patient="Kowalczyk^Agnieszka")
    _store(live, files, dataset="slides")
    original = pydicom.dcmread(files[0], stop_before_pixels=True)
    specimen = original.SpecimenDescriptionSequence[0]
    client = DICOMwebClient(live.dicomweb)
    (study,) = [s["0020000D"]["Value"][0] for s in client.search_for_studies()]
    assert study != original.StudyInstanceUID
    metas = [pydicom.Dataset.from_json(m) for m in client.retrieve_study_metadata(study)]
    assert len(metas) == len(files)
    for meta in metas:
        assert "Kowalczyk" not in str(meta.get("PatientName", ""))
        assert meta.ContainerIdentifier not in ("", CONTAINER_ID)  # Type 1: a dummy, not gone
        (described,) = meta.SpecimenDescriptionSequence
        assert described.SpecimenIdentifier not in ("", SPECIMEN_ID)
        assert described.SpecimenUID != specimen.SpecimenUID
        assert "SpecimenDetailedDescription" not in described
    assert (
        files_holding(live.data_dir, [CONTAINER_ID, SPECIMEN_ID, SPECIMEN_TEXT[-11:], "Kowalczyk"])
        == {}
    )
    base = max(metas, key=lambda m: int(m.NumberOfFrames))
    expected = _tiles_in_frame_order(files[0])
    got = client.retrieve_instance_frames(
        study, base.SeriesInstanceUID, base.SOPInstanceUID,
        list(range(1, len(expected) + 1)), media_types=JPEG_FRAMES,
    )  # fmt: skip
    assert all(_same_jpeg(g, e) for g, e in zip(got, expected, strict=True))


def _concatenation(path: Path, parts: int) -> list[Path]:
    """PS3.3 C.7.6.16.2.2: the level in ``path`` split into ``parts`` SOP instances of
    consecutive frames, sharing one Concatenation UID."""
    source = pydicom.dcmread(path)
    n = int(source.NumberOfFrames)
    frames = list(generate_frames(source.PixelData, number_of_frames=n))
    per = -(-n // parts)
    concatenation = generate_uid()
    out = []
    for i in range(parts):
        part = pydicom.dcmread(path)
        for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
            if keyword in part:
                delattr(part, keyword)
        chunk = frames[i * per : (i + 1) * per]
        part.SOPInstanceUID = part.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        part.ConcatenationUID = concatenation
        part.SOPInstanceUIDOfConcatenationSource = source.SOPInstanceUID
        part.InConcatenationNumber = i + 1
        part.InConcatenationTotalNumber = parts
        part.ConcatenationFrameOffsetNumber = i * per
        part.InstanceNumber = i + 1
        part.NumberOfFrames = len(chunk)
        part.PixelData = encapsulate(chunk)
        out.append(path.with_name(f"part{i + 1}.dcm"))
        part.save_as(out[-1], enforce_file_format=True)
    return out


def test_a_concatenation_is_served_part_by_part_and_stays_linked_after_de_identification(
    live_server_factory: type[LiveServer], tmp_path: Path
) -> None:
    """Each part of a concatenation is an instance of its own, so frames are asked of the
    part that holds them (PS3.18 addresses SOP instances; a viewer joins the parts by
    Concatenation UID and Concatenation Frame Offset Number). Under ``basic`` the parts
    keep one shared new Concatenation UID and one shared new source UID."""
    live = live_server_factory(tmp_path / "data")
    create_dataset(live, "slides", "--deidentify", "basic")
    live.start()
    (level,) = write_slide(tmp_path / "slide", 640, 128, levels=False)  # 25 frames
    parts = _concatenation(level, 3)  # 9 + 9 + 7 frames
    _store(live, parts, dataset="slides")
    original = pydicom.dcmread(level, stop_before_pixels=True)
    client = DICOMwebClient(live.dicomweb)
    (study,) = [s["0020000D"]["Value"][0] for s in client.search_for_studies()]
    metas = [pydicom.Dataset.from_json(m) for m in client.retrieve_study_metadata(study)]
    assert len(metas) == 3
    assert len({m.ConcatenationUID for m in metas}) == 1
    assert metas[0].ConcatenationUID not in {
        str(pydicom.dcmread(p, stop_before_pixels=True).ConcatenationUID) for p in parts
    }
    sources = {m.SOPInstanceUIDOfConcatenationSource for m in metas}
    assert len(sources) == 1 and original.SOPInstanceUID not in sources
    tiles = _tiles_in_frame_order(level)
    for meta in metas:
        offset, count = int(meta.ConcatenationFrameOffsetNumber), int(meta.NumberOfFrames)
        got = client.retrieve_instance_frames(
            study, meta.SeriesInstanceUID, meta.SOPInstanceUID, list(range(1, count + 1)),
            media_types=JPEG_FRAMES,
        )  # fmt: skip
        assert all(_same_jpeg(g, tiles[offset + k]) for k, g in enumerate(got)), offset
    assert sorted((int(m.InConcatenationNumber), int(m.NumberOfFrames)) for m in metas) == [
        (1, 9), (2, 9), (3, 7),
    ]  # fmt: skip

"""References survive de-identification: a SEG, an SR and a KOS pushed after their CT.

A CT series is stored first; then, in separate requests, a segmentation made with
highdicom, a Comprehensive SR and a Key Object Selection that reference it. After a
``basic`` and an ``eucaim`` dataset replaced every UID, each reference must name what
the gateway stores for the CT (Study, Series, SOP Instance, Frame of Reference), and
SOP Class references must stay the real SOP Class (LETHE's script hashes them; the
gateway must not).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tests.deid.phi_corpus import to_part10
from tests.helpers import cohort, multipart_body
from tests.live import LiveServer

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def _ct() -> list[Dataset]:
    series = cohort(instances_per_series=3, rows=16, columns=16)
    for n, ds in enumerate(series):
        ds.BurnedInAnnotation = "NO"
        ds.PatientID, ds.PatientName = "REF-PATIENT-7", "Referqa^Patient"
        ds.ImagePositionPatient = [0.0, 0.0, float(n)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
        ds.FrameOfReferenceUID = (
            series[0].get("FrameOfReferenceUID") or series[0].StudyInstanceUID + ".9"
        )
    return series


def _seg(ct: list[Dataset]) -> Dataset:
    mask = np.zeros((len(ct), 16, 16), dtype=bool)
    mask[:, 4:12, 4:12] = True
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="tumour",
        segmented_property_category=hd.sr.CodedConcept(
            "49755003", "SCT", "Morphologically Altered Structure"
        ),
        segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=ct, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=generate_uid(), series_number=90,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="Proof",
        manufacturer_model_name="refs", software_versions="1", device_serial_number="1",
    )  # fmt: skip
    return pydicom.dcmread(io.BytesIO(to_part10_keep_meta(seg)))


def to_part10_keep_meta(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _evidence(ct: list[Dataset]) -> Sequence:
    refs = []
    for ds in ct:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        refs.append(ref)
    series = Dataset()
    series.SeriesInstanceUID, series.ReferencedSOPSequence = ct[0].SeriesInstanceUID, Sequence(refs)
    study = Dataset()
    study.StudyInstanceUID, study.ReferencedSeriesSequence = (
        ct[0].StudyInstanceUID,
        Sequence([series]),
    )
    return Sequence([study])


def _document(ct: list[Dataset], sop_class: str, modality: str) -> Dataset:
    """An SR document (KOS or Comprehensive SR) with IMAGE items pointing at the CT."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ct[0].StudyInstanceUID, generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = ct[0].PatientID, ct[0].PatientName, modality
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = (
        "113000",
        "DCM",
        "Of Interest",
    )
    ds.ConceptNameCodeSequence = Sequence([title])
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(ct)
    items = []
    for image in ct:
        item = Dataset()
        item.RelationshipType, item.ValueType = "CONTAINS", "IMAGE"
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = (
            image.SOPClassUID,
            image.SOPInstanceUID,
        )
        item.ReferencedSOPSequence = Sequence([ref])
        items.append(item)
    ds.ContentSequence = Sequence(items)
    if sop_class == COMPREHENSIVE_SR:
        ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    return ds


def _stow(live: LiveServer, datasets: list[Dataset], dataset: str) -> None:
    r = httpx.post(
        f"{live.url}/datasets/{dataset}/dicom-web/studies",
        content=multipart_body(
            [to_part10_keep_meta(d) if d.get("file_meta") else to_part10(d) for d in datasets],
            "refs",
        ),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=refs'},
        timeout=120,
    )
    assert r.status_code == 200, r.text[:2000]


def _stored(live: LiveServer) -> dict[str, list[Dataset]]:
    """Every stored instance, retrieved over WADO-RS, by modality."""
    found: dict[str, list[Dataset]] = {}
    for item in httpx.get(f"{live.dicomweb}/instances", params={"includefield": "all"}).json():
        study, series, sop = (item[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
        url = f"{live.dicomweb}/studies/{study}/series/{series}/instances/{sop}"
        r = httpx.get(
            url,
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        boundary = r.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
        part = r.content.split(f"--{boundary}".encode())[1].partition(b"\r\n\r\n")[2]
        ds = pydicom.dcmread(io.BytesIO(part.removesuffix(b"\r\n")))
        found.setdefault(ds.Modality, []).append(ds)
    return found


@pytest.fixture(scope="module", params=["basic", "eucaim"])
def stored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    live = LiveServer(tmp_path_factory.mktemp(f"refs-{request.param}") / "data")
    args = ["dataset", "create", "refs", "--title", "References", "--deidentify", request.param]
    done = live.cli(*args, *(["--provider-id", "SITE-REFS"] if request.param == "eucaim" else []))
    assert done.returncode == 0, done.stderr[-2000:]
    live.start()
    try:
        ct = _ct()
        _stow(live, ct, "refs")
        _stow(live, [_seg(ct)], "refs")
        _stow(live, [_document(ct, COMPREHENSIVE_SR, "SR")], "refs")
        _stow(live, [_document(ct, KOS, "KO")], "refs")
        yield {"original": ct, "stored": _stored(live)}
    finally:
        live.stop()


def _ct_uids(stored: dict[str, Any]) -> tuple[set[str], str, str, str]:
    ct = stored["stored"]["CT"]
    assert len(ct) == 3
    return (
        {d.SOPInstanceUID for d in ct},
        ct[0].SeriesInstanceUID,
        ct[0].StudyInstanceUID,
        ct[0].FrameOfReferenceUID,
    )


def test_uids_were_replaced(stored: dict[str, Any]) -> None:
    sops, series, study, frame = _ct_uids(stored)
    original = stored["original"]
    assert sops.isdisjoint({d.SOPInstanceUID for d in original})
    assert series != original[0].SeriesInstanceUID and study != original[0].StudyInstanceUID
    assert frame != original[0].FrameOfReferenceUID


def test_segmentation_still_overlays_its_ct(stored: dict[str, Any]) -> None:
    sops, series, study, frame = _ct_uids(stored)
    (seg,) = stored["stored"]["SEG"]
    assert seg.StudyInstanceUID == study
    assert seg.FrameOfReferenceUID == frame
    (ref_series,) = seg.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == series
    assert {r.ReferencedSOPInstanceUID for r in ref_series.ReferencedInstanceSequence} == sops
    assert {r.ReferencedSOPClassUID for r in ref_series.ReferencedInstanceSequence} == {CT_IMAGE}


def test_segmentation_frames_still_name_their_source_images(stored: dict[str, Any]) -> None:
    sops, _, _, _ = _ct_uids(stored)
    (seg,) = stored["stored"]["SEG"]
    sources = {
        src.ReferencedSOPInstanceUID
        for frame_item in seg.PerFrameFunctionalGroupsSequence
        for derivation in frame_item.DerivationImageSequence
        for src in derivation.SourceImageSequence
    }
    assert sources == sops


@pytest.mark.parametrize("modality", ["SR", "KO"])
def test_documents_still_reference_the_ct(stored: dict[str, Any], modality: str) -> None:
    sops, series, study, _ = _ct_uids(stored)
    (doc,) = stored["stored"][modality]
    assert doc.StudyInstanceUID == study
    (evidence,) = doc.CurrentRequestedProcedureEvidenceSequence
    assert evidence.StudyInstanceUID == study
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    refs = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert {r.ReferencedSOPInstanceUID for r in refs} == sops
    assert {r.ReferencedSOPClassUID for r in refs} == {CT_IMAGE}
    images = {
        ref.ReferencedSOPInstanceUID
        for item in doc.get("ContentSequence", [])
        for ref in item.get("ReferencedSOPSequence", [])
    }
    assert images == sops

"""The synthetic cohort generator: deterministic, unique, parseable, non-blank."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from server.core.uids import is_valid_uid
from server.synthetic import generate_cohort, to_part10_bytes, write_cohort

SMALL = {"patients": 6, "studies_per_patient": 2, "series_per_study": 3, "instances_per_series": 4}


def _parse(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(BytesIO(data))


def test_counts_match_arguments() -> None:
    datasets = list(generate_cohort(**SMALL, rows=16, columns=24))
    assert len(datasets) == 6 * 2 * 3 * 4
    assert len({ds.PatientID for ds in datasets}) == 6
    assert len({ds.StudyInstanceUID for ds in datasets}) == 6 * 2
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 6 * 2 * 3
    for ds in datasets:
        assert (ds.Rows, ds.Columns) == (16, 24)
        assert len(ds.PixelData) == 16 * 24 * 2
    assert list(generate_cohort(patients=0)) == []


def test_deterministic_for_a_seed() -> None:
    first = [to_part10_bytes(ds) for ds in generate_cohort(**SMALL, seed=7)]
    again = [to_part10_bytes(ds) for ds in generate_cohort(**SMALL, seed=7)]
    assert first == again
    other = list(generate_cohort(**SMALL, seed=8))
    first_uids = {_parse(b).SOPInstanceUID for b in first}
    assert first_uids.isdisjoint(ds.SOPInstanceUID for ds in other)


def test_uids_are_unique_and_valid() -> None:
    datasets = list(generate_cohort(**SMALL))
    sop = [ds.SOPInstanceUID for ds in datasets]
    assert len(set(sop)) == len(sop)
    all_uids = (
        set(sop)
        | {ds.StudyInstanceUID for ds in datasets}
        | {ds.SeriesInstanceUID for ds in datasets}
    )
    assert len(all_uids) == len(sop) + 12 + 36
    for ds in datasets:
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
            assert is_valid_uid(uid), uid
        assert is_valid_uid(ds.FrameOfReferenceUID)


def test_part10_parses_with_pixels_that_are_not_constant() -> None:
    datasets = list(generate_cohort(patients=10, series_per_study=3, instances_per_series=5))
    modalities = set()
    for ds in datasets:
        data = to_part10_bytes(ds)
        assert data[128:132] == b"DICM"
        parsed = _parse(data)
        assert parsed.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert parsed.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert parsed.file_meta.MediaStorageSOPClassUID == parsed.SOPClassUID
        pixels = parsed.pixel_array
        assert pixels.shape == (64, 64)
        assert pixels.dtype == np.int16
        assert int(pixels.max()) - int(pixels.min()) > 100
        modalities.add(parsed.Modality)
        assert parsed.BitsAllocated == 16
        assert parsed.PhotometricInterpretation == "MONOCHROME2"
        assert 2015 <= int(parsed.StudyDate[:4]) <= 2025
        assert parsed.BodyPartExamined
    assert "CT" in modalities
    assert modalities & {"MR", "PT"}


def test_ct_attributes_and_geometry() -> None:
    series = [
        ds for ds in generate_cohort(patients=1, instances_per_series=6) if ds.Modality == "CT"
    ]
    assert len(series) == 6
    first = series[0]
    assert first.SOPClassUID == CTImageStorage
    assert float(first.RescaleIntercept) == -1024
    assert float(first.RescaleSlope) == 1
    assert (float(first.WindowCenter), float(first.WindowWidth)) == (40, 400)
    assert (first.BitsStored, first.HighBit, first.PixelRepresentation) == (12, 11, 1)
    thickness = float(first.SliceThickness)
    z = [float(ds.ImagePositionPatient[2]) for ds in series]
    assert np.allclose(np.diff(z), thickness)
    assert [ds.InstanceNumber for ds in series] == list(range(1, 7))
    # The phantom changes along the series.
    assert series[0].PixelData != series[3].PixelData


def test_accented_names_survive_encoding() -> None:
    names = [str(_parse(to_part10_bytes(ds)).PatientName) for ds in generate_cohort(patients=3)]
    assert {"Müller^Jürgen", "Åström^Märta", "García^José"} <= set(names)


def test_fast_encoding_matches_pydicom() -> None:
    for ds in generate_cohort(patients=3, series_per_study=2, instances_per_series=2):
        ours = _parse(to_part10_bytes(ds))
        reference = BytesIO()
        ds.save_as(reference, implicit_vr=False, little_endian=True)
        theirs = pydicom.dcmread(BytesIO(reference.getvalue()), force=True)
        assert list(ours.keys()) == list(theirs.keys())
        for elem in theirs:
            assert ours[elem.tag].value == elem.value, elem


def test_datasets_are_independent() -> None:
    first, second = list(generate_cohort(patients=1, series_per_study=1, instances_per_series=2))
    first.PatientName = "Changed^Name"
    first.SeriesDescription = "changed"
    assert second.PatientName == "Müller^Jürgen"
    assert second.SeriesDescription != "changed"
    assert _parse(to_part10_bytes(first)).PatientName == "Changed^Name"
    assert _parse(to_part10_bytes(second)).SeriesDescription != "changed"


def test_write_cohort_layout(tmp_path: Path) -> None:
    paths = write_cohort(tmp_path, patients=2, series_per_study=2, instances_per_series=3)
    assert len(paths) == 12
    for path in paths:
        ds = pydicom.dcmread(path)
        rel = path.relative_to(tmp_path).parts
        assert rel == (
            ds.PatientID,
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            f"{ds.InstanceNumber}.dcm",
        )


@pytest.mark.parametrize("bad", [{"patients": -1}, {"patients": 1, "rows": 0}])
def test_rejects_bad_arguments(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        list(generate_cohort(**bad))

"""Small synthetic CT studies for seeding a reference DICOMweb server.

Each study holds one axial CT series of a few slices showing an elliptical
"body" phantom with a bright "spine" and two darker "lungs", so that a rendered
viewport is clearly not blank. Values are stored as signed 16-bit with a
rescale to Hounsfield units.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

UID_PREFIX = "1.2.826.0.1.3680043.8.498."


@dataclass(frozen=True)
class StudySpec:
    patient_name: str
    patient_id: str
    study_description: str
    series_description: str
    study_date: str
    slices: int = 8
    size: int = 128


DEFAULT_STUDIES: tuple[StudySpec, ...] = (
    StudySpec("PHANTOM^ALPHA", "E2E-0001", "E2E CT CHEST ALPHA", "AXIAL 2.5MM", "20240105"),
    StudySpec("PHANTOM^BRAVO", "E2E-0002", "E2E CT ABDOMEN BRAVO", "AXIAL 5MM", "20240212", 6, 96),
)


def phantom_slice(size: int, z_index: int, n_slices: int) -> np.ndarray:
    """Return one int16 slice in stored values (HU + 1024)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2.0
    xn = (x - c) / (size / 2.0)
    yn = (y - c) / (size / 2.0)
    hu = np.full((size, size), -1000.0, dtype=np.float32)  # air
    # body grows slightly along z so scrolling shows change
    scale = 0.8 + 0.1 * np.sin(np.pi * (z_index + 0.5) / max(n_slices, 1))
    body = (xn / (0.85 * scale)) ** 2 + (yn / (0.65 * scale)) ** 2 <= 1.0
    hu[body] = 40.0  # soft tissue
    for side in (-1, 1):
        lung = ((xn - side * 0.33) / 0.22) ** 2 + ((yn + 0.02) / 0.33) ** 2 <= 1.0
        hu[lung & body] = -800.0
    spine = (xn / 0.1) ** 2 + ((yn - 0.4) / 0.1) ** 2 <= 1.0
    hu[spine] = 700.0
    # a small lesion whose position depends on the slice
    lx = -0.3 + 0.6 * z_index / max(n_slices - 1, 1)
    lesion = ((xn - lx) / 0.07) ** 2 + ((yn + 0.1) / 0.07) ** 2 <= 1.0
    hu[lesion & body] = 120.0
    return np.clip(hu + 1024.0, -32768, 32767).astype(np.int16)


def build_study(spec: StudySpec) -> list[Dataset]:
    study_uid = generate_uid(prefix=UID_PREFIX)
    series_uid = generate_uid(prefix=UID_PREFIX)
    frame_of_ref = generate_uid(prefix=UID_PREFIX)
    spacing = 300.0 / spec.size
    thickness = 2.5
    now = _dt.datetime(2024, 1, 1, 12, 0, 0)
    out: list[Dataset] = []
    for i in range(spec.slices):
        sop_uid = generate_uid(prefix=UID_PREFIX)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyDate = spec.study_date
        ds.SeriesDate = spec.study_date
        ds.ContentDate = spec.study_date
        ds.StudyTime = now.strftime("%H%M%S")
        ds.SeriesTime = ds.StudyTime
        ds.ContentTime = ds.StudyTime
        ds.AccessionNumber = spec.patient_id.replace("-", "")
        ds.Modality = "CT"
        ds.Manufacturer = "SYNTHETIC"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = spec.study_description
        ds.SeriesDescription = spec.series_description
        ds.PatientName = spec.patient_name
        ds.PatientID = spec.patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = thickness
        ds.KVP = 120
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.FrameOfReferenceUID = frame_of_ref
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [-150.0, -150.0, -i * thickness]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceLocation = -i * thickness
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = spec.size
        ds.Columns = spec.size
        ds.PixelSpacing = [spacing, spacing]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.PixelData = phantom_slice(spec.size, i, spec.slices).tobytes()
        out.append(ds)
    return out


def iter_datasets(specs: tuple[StudySpec, ...] = DEFAULT_STUDIES) -> Iterator[Dataset]:
    for spec in specs:
        yield from build_study(spec)

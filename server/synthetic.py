"""Synthetic cancer-imaging cohort generator.

Produces deterministic, standards-shaped CT / MR / PT Image Storage instances with
a recognisable phantom in the pixel data. Used by the demo, the benchmark and the
viewer tests; no real patient data is involved anywhere.

Everything is derived from ``seed``: the same arguments always give byte-identical
datasets (UIDs included), different seeds give disjoint UIDs.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

__all__ = [
    "CANCER_TYPES",
    "CancerType",
    "generate_cohort",
    "to_part10_bytes",
    "write_cohort",
]

UID_PREFIX = "1.2.826.0.1.3680043.8.498."
"""UID root used for every generated UID (pydicom's documented root)."""

IMPLEMENTATION_VERSION_NAME = "SYNTH_COHORT_1"


@dataclass(frozen=True)
class CancerType:
    """A tumour type and how its imaging is typically described."""

    name: str
    body_part: str
    study_description: str
    # Modality of the second and later series (the first is always CT).
    follow_up_modality: str
    # Which phantom anatomy to draw.
    anatomy: str


CANCER_TYPES: tuple[CancerType, ...] = (
    CancerType("Breast cancer", "BREAST", "CT CHEST BREAST STAGING", "MR", "chest"),
    CancerType("Colon cancer", "COLON", "CT ABDOMEN PELVIS COLON", "PT", "abdomen"),
    CancerType("Lung cancer", "CHEST", "CT CHEST LUNG STAGING", "PT", "chest"),
    CancerType("Lung cancer", "LUNG", "CT THORAX LOW DOSE", "CT", "chest"),
    CancerType("Prostate cancer", "PROSTATE", "MR PELVIS PROSTATE", "MR", "pelvis"),
    CancerType("Rectal cancer", "RECTUM", "MR PELVIS RECTUM STAGING", "MR", "pelvis"),
    CancerType("Liver cancer", "LIVER", "CT ABDOMEN LIVER TRIPHASIC", "CT", "abdomen"),
    CancerType("Glioma", "BRAIN", "MR BRAIN TUMOUR", "MR", "head"),
    CancerType("Neuroblastoma", "ABDOMEN", "CT ABDOMEN NEUROBLASTOMA", "PT", "abdomen"),
    CancerType("Glioblastoma", "HEAD", "MR HEAD GLIOBLASTOMA", "MR", "head"),
)

# Family^Given names; the first ones are always used so every cohort has accented
# names to exercise character-set handling and wildcard matching.
_FIXED_NAMES: tuple[str, ...] = (
    "Müller^Jürgen",
    "Åström^Märta",
    "García^José",
    "Øvergård^Søren",
    "Dvořák^Antonín",
    "Łukasiewicz^Zoë",
    "Nguyễn^Thị",
    "O'Brien^Siobhán",
)
_FAMILY_NAMES: tuple[str, ...] = (
    "Müller", "Möller", "Åström", "García", "Martínez", "Smith", "Johnson", "Andersson",
    "Nilsson", "Dubois", "Lefèvre", "Rossi", "Bianchi", "Kowalski", "Nowak", "Novák",
    "Schröder", "Fischer", "Jensen", "Hansen", "Virtanen", "Korhonen", "Papadopoulos",
    "Yilmaz", "Kaya", "Silva", "Santos", "Peña", "Ibáñez", "Brown", "Wilson", "Taylor",
    "Murphy", "Kelly", "Tanaka", "Suzuki", "Kim", "Lee", "Chen", "Wang", "Singh", "Patel",
    "Ahmed", "Haddad", "Cohen", "Levi", "Ivanova", "Petrov", "Horváth", "Nagy",
)  # fmt: skip
_GIVEN_NAMES: tuple[str, ...] = (
    "Anna", "Björn", "Chloé", "David", "Élodie", "Fatima", "Günter", "Hélène", "Ingrid",
    "Javier", "Kari", "Laura", "Magnus", "Noël", "Olga", "Pål", "Renée", "Sofía", "Tomás",
    "Ulla", "Viktor", "Wiebke", "Xavier", "Yusuf", "Zsófia", "Jürgen", "Märta", "José",
)  # fmt: skip
_INSTITUTIONS: tuple[str, ...] = (
    "Synthetic University Hospital",
    "Hôpital Synthétique de Lyon",
    "Klinikum Musterstadt",
    "Sjukhuset i Exempelby",
)
_PHYSICIANS: tuple[str, ...] = (
    "Referrer^Alice",
    "Überweiser^Jörg",
    "Remitente^Inés",
    "Henvisende^Åse",
)

_FIRST_STUDY_DAY = date(2015, 1, 1)
_STUDY_DAY_SPAN = (date(2025, 12, 31) - _FIRST_STUDY_DAY).days

# (Hounsfield units for CT, arbitrary signal for MR, activity for PT)
_HU_AIR = -1000
_CT_INTERCEPT = -1024


def _uid(seed: int, *parts: object) -> str:
    """A deterministic UID under UID_PREFIX derived from the seed and the given parts."""
    return generate_uid(UID_PREFIX, entropy_srcs=[f"synthetic-cohort:{seed}", *map(str, parts)])


def _rng(seed: int, *parts: object) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{':'.join(map(str, parts))}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# ---------------------------------------------------------------------------
# Phantom
# ---------------------------------------------------------------------------

# Each ellipse: (centre x, centre y, semi-axis a, semi-axis b, angle deg, value, z-extent).
# Coordinates are in a unit square [-1, 1]; values are CT numbers (HU). Later ellipses
# overwrite earlier ones. z-extent scales how quickly an ellipse shrinks towards the
# ends of the series (a spheroid-like volume rather than a cylinder).
_Ellipse = tuple[float, float, float, float, float, float, float]

_ANATOMY: dict[str, tuple[_Ellipse, ...]] = {
    "chest": (
        (0.0, 0.0, 0.85, 0.62, 0.0, 40.0, 3.0),  # body (soft tissue)
        (0.0, 0.0, 0.80, 0.57, 0.0, -80.0, 3.0),  # subcutaneous fat
        (-0.38, -0.02, 0.28, 0.42, 8.0, -820.0, 1.6),  # right lung
        (0.38, -0.02, 0.28, 0.42, -8.0, -820.0, 1.6),  # left lung
        (0.06, 0.08, 0.17, 0.15, 20.0, 45.0, 1.2),  # heart
        (0.0, 0.48, 0.07, 0.07, 0.0, 700.0, 4.0),  # vertebra
        (0.0, -0.50, 0.16, 0.03, 0.0, 650.0, 2.0),  # sternum
    ),
    "abdomen": (
        (0.0, 0.0, 0.88, 0.66, 0.0, 40.0, 3.0),
        (0.0, 0.0, 0.83, 0.61, 0.0, -90.0, 3.0),
        (0.0, 0.0, 0.72, 0.52, 0.0, 35.0, 3.0),  # abdominal wall / bowel
        (-0.35, -0.10, 0.32, 0.26, -15.0, 60.0, 1.5),  # liver
        (0.40, 0.05, 0.14, 0.10, 30.0, 45.0, 1.3),  # spleen
        (-0.25, 0.30, 0.08, 0.11, 0.0, 30.0, 1.2),  # right kidney
        (0.25, 0.30, 0.08, 0.11, 0.0, 30.0, 1.2),  # left kidney
        (0.0, 0.45, 0.08, 0.08, 0.0, 700.0, 4.0),  # vertebra
        (0.08, 0.28, 0.04, 0.04, 0.0, 180.0, 4.0),  # aorta (contrast)
    ),
    "pelvis": (
        (0.0, 0.0, 0.90, 0.62, 0.0, 40.0, 3.0),
        (0.0, 0.0, 0.84, 0.57, 0.0, -90.0, 3.0),
        (0.0, 0.0, 0.74, 0.48, 0.0, 35.0, 3.0),
        (-0.50, 0.10, 0.14, 0.20, 10.0, 750.0, 2.0),  # right iliac
        (0.50, 0.10, 0.14, 0.20, -10.0, 750.0, 2.0),  # left iliac
        (0.0, -0.15, 0.16, 0.12, 0.0, 5.0, 1.2),  # bladder
        (0.0, 0.30, 0.07, 0.06, 0.0, 700.0, 4.0),  # sacrum
        (0.0, 0.12, 0.06, 0.06, 0.0, -400.0, 1.5),  # rectal gas
    ),
    "head": (
        (0.0, 0.0, 0.70, 0.86, 0.0, 900.0, 2.0),  # skull
        (0.0, 0.0, 0.64, 0.80, 0.0, 35.0, 2.0),  # brain (grey matter)
        (0.0, 0.0, 0.50, 0.65, 0.0, 25.0, 1.6),  # white matter
        (-0.12, 0.0, 0.05, 0.22, 12.0, 5.0, 1.2),  # ventricle
        (0.12, 0.0, 0.05, 0.22, -12.0, 5.0, 1.2),  # ventricle
    ),
}

_TUMOUR_VALUE = {"CT": 90.0, "MR": 1400.0, "PT": 9000.0}


class _Phantom:
    """One series' volume: ellipses whose size varies along z, plus a spherical lesion.

    The per-pixel quadratic form of every ellipse is computed once per series, so a
    slice costs one comparison per ellipse.
    """

    def __init__(
        self,
        *,
        anatomy: str,
        modality: str,
        rows: int,
        columns: int,
        slices: int,
        tumour: tuple[float, float, float, float],
        noise_seed: int,
    ) -> None:
        self.modality = modality
        self.slices = slices
        self.shape = (rows, columns)
        yy = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
        xx = np.linspace(-1.0, 1.0, columns, dtype=np.float32)[None, :]
        self._ellipses: list[tuple[np.ndarray, float, float]] = []
        for cx, cy, a, b, angle, value, extent in _ANATOMY[anatomy]:
            theta = math.radians(angle)
            cos_t, sin_t = math.cos(theta), math.sin(theta)
            dx, dy = xx - cx, yy - cy
            u = (dx * cos_t + dy * sin_t) / a
            v = (dy * cos_t - dx * sin_t) / b
            self._ellipses.append((u * u + v * v, _signal(value, modality), extent))
        self._tumour_x, self._tumour_y, self._tumour_r, self._tumour_z = tumour
        self._tumour_d2 = (xx - self._tumour_x) ** 2 + (yy - self._tumour_y) ** 2
        self._background = {"CT": float(_HU_AIR), "MR": 0.0, "PT": 0.0}[modality]
        self._sigma = {"CT": 6.0, "MR": 12.0, "PT": 60.0}[modality]
        self._rng = np.random.default_rng(noise_seed)

    def slice(self, index: int) -> np.ndarray:
        """Stored pixel values (int16) of slice ``index``; call in increasing order."""
        # z in [-1, 1] along the series.
        z = 0.0 if self.slices <= 1 else -1.0 + 2.0 * index / (self.slices - 1)
        img = np.full(self.shape, self._background, dtype=np.float32)
        for quad, value, extent in self._ellipses:
            scale_sq = 1.0 - (z / extent) ** 2
            if scale_sq > 0.0:
                img[quad <= scale_sq] = value
        dz = (z - self._tumour_z) / max(self._tumour_r * 2.0, 1e-6)
        if abs(dz) < 1.0:
            r_sq = self._tumour_r * self._tumour_r * (1.0 - dz * dz)
            img[self._tumour_d2 <= r_sq] = _TUMOUR_VALUE[self.modality]
        img += self._rng.standard_normal(self.shape, dtype=np.float32) * self._sigma
        if self.modality == "CT":
            img -= _CT_INTERCEPT
            high = 4095
        else:
            high = 4095 if self.modality == "MR" else 32767
        return np.clip(np.rint(img), 0, high).astype("<i2")


def _signal(hu: float, modality: str) -> float:
    """Map a CT number to a plausible MR / PET signal so other modalities look right."""
    if modality == "CT":
        return hu
    if modality == "MR":
        if hu <= -500:
            return 20.0
        if hu >= 500:
            return 150.0
        if hu < -50:
            return 1100.0  # fat is bright
        return 600.0 + hu * 4.0
    # PT: bone and air dark, organs moderate uptake.
    if hu <= -500:
        return 50.0
    if hu >= 500:
        return 400.0
    return 1200.0 + hu * 10.0


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------


class _Template:
    """Shared series-level attributes, encoded once as Explicit VR Little Endian.

    Instances are built from the encoded (raw) elements, so pydicom writes them back
    without re-encoding and only decodes what a caller actually reads. Raw elements
    are immutable and decoded into fresh objects per dataset, so every dataset
    produced is independent.
    """

    def __init__(self, ds: Dataset) -> None:
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = False
        write_dataset(fp, ds)
        raw = read_dataset(BytesIO(fp.getvalue()), is_implicit_VR=False, is_little_endian=True)
        self._elements: dict[BaseTag, Any] = dict(raw._dict)
        self._charset = ds._character_set

    def instance(self) -> Dataset:
        ds = Dataset(dict(self._elements))
        ds.set_original_encoding(False, True, self._charset)
        return ds


def _da(d: date) -> str:
    return d.strftime("%Y%m%d")


def _ds_str(value: float) -> str:
    """A DS string no longer than 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _patient_name(seed: int, index: int) -> str:
    if index < len(_FIXED_NAMES):
        return _FIXED_NAMES[index]
    rng = _rng(seed, "name", index)
    family = _FAMILY_NAMES[int(rng.integers(len(_FAMILY_NAMES)))]
    given = _GIVEN_NAMES[int(rng.integers(len(_GIVEN_NAMES)))]
    return f"{family}^{given}"


def _sop_class(modality: str) -> str:
    return {
        "CT": CTImageStorage,
        "MR": MRImageStorage,
        "PT": PositronEmissionTomographyImageStorage,
    }[modality]


def _series_template(
    *,
    patient: dict[str, str],
    study: dict[str, str],
    cancer: CancerType,
    modality: str,
    series_index: int,
    series_uid: str,
    frame_uid: str,
    rows: int,
    columns: int,
    pixel_spacing: float,
    slice_thickness: float,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = _sop_class(modality)
    ds.StudyDate = study["date"]
    ds.SeriesDate = study["date"]
    ds.AcquisitionDate = study["date"]
    ds.ContentDate = study["date"]
    ds.StudyTime = study["time"]
    ds.SeriesTime = study["time"]
    ds.AccessionNumber = study["accession"]
    ds.Modality = modality
    ds.Manufacturer = "Synthetic Imaging"
    ds.InstitutionName = study["institution"]
    ds.ReferringPhysicianName = study["referrer"]
    ds.StudyDescription = study["description"]
    ds.SeriesDescription = _series_description(cancer, modality, series_index)
    ds.ManufacturerModelName = {"CT": "PhantomCT", "MR": "PhantomMR", "PT": "PhantomPET"}[modality]
    ds.PatientName = patient["name"]
    ds.PatientID = patient["id"]
    ds.IssuerOfPatientID = "SYNTHETIC"
    ds.PatientBirthDate = patient["birth_date"]
    ds.PatientSex = patient["sex"]
    ds.PatientAge = patient["age"]
    ds.AdmittingDiagnosesDescription = cancer.name
    ds.BodyPartExamined = cancer.body_part
    ds.SliceThickness = _ds_str(slice_thickness)
    if modality == "CT":
        ds.KVP = "120"
    elif modality == "MR":
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "500"
        ds.EchoTime = "15"
        ds.EchoTrainLength = "1"
        ds.MagneticFieldStrength = "1.5"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study["uid"]
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study["id"]
    ds.SeriesNumber = series_index + 1
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [_ds_str(pixel_spacing), _ds_str(pixel_spacing)]
    ds.BitsAllocated = 16
    if modality == "PT":
        ds.BitsStored = 16
        ds.HighBit = 15
    else:
        ds.BitsStored = 12
        ds.HighBit = 11
    ds.PixelRepresentation = 1
    if modality == "CT":
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = str(_CT_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
    elif modality == "MR":
        ds.WindowCenter = "700"
        ds.WindowWidth = "1400"
    else:
        ds.WindowCenter = "4000"
        ds.WindowWidth = "8000"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.CorrectedImage = ["ATTN", "DECY"]
        ds.DecayCorrection = "START"
        ds.NumberOfSlices = 0  # fixed up by the caller
        ds.FrameReferenceTime = "0"
        ds.ActualFrameDuration = 120000
        radiopharm = Dataset()
        radiopharm.Radiopharmaceutical = "Fluorodeoxyglucose F^18^"
        radiopharm.RadionuclideTotalDose = "350000000"
        radiopharm.RadionuclideHalfLife = "6586.2"
        ds.RadiopharmaceuticalInformationSequence = [radiopharm]
    return ds


def _series_description(cancer: CancerType, modality: str, series_index: int) -> str:
    if modality == "CT":
        return ("AXIAL 5MM", "AXIAL 2.5MM POST CONTRAST", "AXIAL 1MM LUNG")[series_index % 3]
    if modality == "MR":
        return ("AX T2 TSE", "AX T1 POST GD", "AX DWI")[series_index % 3]
    return "PET AC WB"


def generate_cohort(
    *,
    patients: int,
    studies_per_patient: int = 1,
    series_per_study: int = 2,
    instances_per_series: int = 10,
    rows: int = 64,
    columns: int = 64,
    seed: int = 0,
) -> Iterator[pydicom.Dataset]:
    """Yield synthetic image instances, patient by patient, study by study, series by series.

    The total count is ``patients * studies_per_patient * series_per_study *
    instances_per_series``. Every yielded dataset is independent (safe to mutate).
    Datasets carry no file meta; see :func:`to_part10_bytes`.
    """
    for name, value in (
        ("patients", patients),
        ("studies_per_patient", studies_per_patient),
        ("series_per_study", series_per_study),
        ("instances_per_series", instances_per_series),
        ("rows", rows),
        ("columns", columns),
    ):
        if value < (0 if name == "patients" else 1):
            raise ValueError(f"{name} must be positive, got {value}")

    for p in range(patients):
        prng = _rng(seed, "patient", p)
        cancer = CANCER_TYPES[int(prng.integers(len(CANCER_TYPES)))]
        if cancer.body_part == "PROSTATE":
            sex = "M"
        elif cancer.body_part == "BREAST":
            sex = "F"
        else:
            sex = "F" if prng.random() < 0.5 else "M"
        paediatric = cancer.name == "Neuroblastoma"
        age_years = int(prng.integers(1, 12)) if paediatric else int(prng.integers(30, 86))
        first_day = _FIRST_STUDY_DAY + timedelta(days=int(prng.integers(_STUDY_DAY_SPAN + 1)))
        birth = first_day - timedelta(days=age_years * 365 + int(prng.integers(365)))
        patient = {
            "name": _patient_name(seed, p),
            "id": f"SYN{seed:03d}-{p:06d}",
            "birth_date": _da(birth),
            "sex": sex,
        }
        for s in range(studies_per_patient):
            srng = _rng(seed, "study", p, s)
            # Follow-up studies after the first, still inside 2015-2025.
            day = first_day + timedelta(days=int(srng.integers(60, 400)) * s)
            last = _FIRST_STUDY_DAY + timedelta(days=_STUDY_DAY_SPAN)
            if day > last:
                day = last - timedelta(days=int(srng.integers(0, 30)) + studies_per_patient - s)
            age = max(0, (day - birth).days // 365)
            patient["age"] = f"{age:03d}Y"
            seconds = int(srng.integers(7 * 3600, 19 * 3600))
            study = {
                "uid": _uid(seed, "study", p, s),
                "date": _da(day),
                "time": f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
                "accession": f"A{seed % 1000:03d}{p:07d}{s:02d}",
                "id": f"S{s + 1}",
                "description": cancer.study_description,
                "institution": _INSTITUTIONS[int(srng.integers(len(_INSTITUTIONS)))],
                "referrer": _PHYSICIANS[int(srng.integers(len(_PHYSICIANS)))],
            }
            frame_uid = _uid(seed, "frame", p, s)
            tumour = (
                float(srng.uniform(-0.3, 0.3)),
                float(srng.uniform(-0.25, 0.25)),
                float(srng.uniform(0.06, 0.14)),
                float(srng.uniform(-0.3, 0.3)),
            )
            for r in range(series_per_study):
                yield from _series(
                    seed=seed,
                    p=p,
                    s=s,
                    r=r,
                    patient=patient,
                    study=study,
                    cancer=cancer,
                    frame_uid=frame_uid,
                    tumour=tumour,
                    instances=instances_per_series,
                    rows=rows,
                    columns=columns,
                )


def _series(
    *,
    seed: int,
    p: int,
    s: int,
    r: int,
    patient: dict[str, str],
    study: dict[str, str],
    cancer: CancerType,
    frame_uid: str,
    tumour: tuple[float, float, float, float],
    instances: int,
    rows: int,
    columns: int,
) -> Iterator[Dataset]:
    modality = "CT" if r == 0 else cancer.follow_up_modality
    field_of_view = 250.0 if cancer.anatomy == "head" else 400.0
    pixel_spacing = field_of_view / max(rows, columns)
    slice_thickness = (5.0, 2.5, 1.25)[r % 3]
    series_uid = _uid(seed, "series", p, s, r)
    template_ds = _series_template(
        patient=patient,
        study=study,
        cancer=cancer,
        modality=modality,
        series_index=r,
        series_uid=series_uid,
        frame_uid=frame_uid,
        rows=rows,
        columns=columns,
        pixel_spacing=pixel_spacing,
        slice_thickness=slice_thickness,
    )
    if modality == "PT":
        template_ds.NumberOfSlices = instances
    template = _Template(template_ds)
    phantom = _Phantom(
        anatomy=cancer.anatomy,
        modality=modality,
        rows=rows,
        columns=columns,
        slices=instances,
        tumour=tumour,
        noise_seed=int(_rng(seed, "noise", p, s, r).integers(2**31)),
    )
    x0 = -pixel_spacing * (columns - 1) / 2.0
    y0 = -pixel_spacing * (rows - 1) / 2.0
    z0 = -slice_thickness * (instances - 1) / 2.0
    position_xy = f"{_ds_str(x0)}\\{_ds_str(y0)}\\"
    for n in range(instances):
        ds = template.instance()
        z = _ds_str(z0 + n * slice_thickness)
        _put(ds, 0x00080018, "UI", _uid(seed, "instance", p, s, r, n).encode(), b"\0")
        _put(ds, 0x00200013, "IS", str(n + 1).encode())
        _put(ds, 0x00200032, "DS", (position_xy + z).encode())
        _put(ds, 0x00201041, "DS", z.encode())
        if modality == "PT":
            _put(ds, 0x00541330, "US", struct.pack("<H", n + 1))
        _put(ds, 0x7FE00010, "OW", phantom.slice(n).tobytes())
        yield ds


def _put(ds: Dataset, tag: int, vr: str, value: bytes, pad: bytes = b" ") -> None:
    """Add an already-encoded (Explicit VR Little Endian) element."""
    if len(value) % 2:
        value += pad
    ds[tag] = RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True)


_EXPLICIT_LE = (False, True)
_LONG_LENGTH_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)


def _character_set(ds: Dataset) -> str | list[str]:
    """Python codecs for the dataset's Specific Character Set, without decoding it in place."""
    elem = ds.get_item(0x00080005)
    if elem is None:
        return ds._character_set
    if isinstance(elem, RawDataElement):
        terms = (elem.value or b"").decode("ascii").strip(" \0").split("\\")
        value: str | list[str] = terms[0] if len(terms) == 1 else terms
    else:
        value = elem.value
    return convert_encodings(value) if value else ds._character_set


def _encode_body(ds: Dataset) -> bytes:
    """The dataset encoded as Explicit VR Little Endian.

    Elements still in raw form (as produced by :func:`generate_cohort` or read from an
    Explicit VR Little Endian file) are copied through without decoding; everything
    else is encoded by pydicom. Falls back to pydicom entirely when the dataset's
    original encoding or character set differ.
    """
    encodings = _character_set(ds)
    if ds.original_encoding != _EXPLICIT_LE or ds.original_character_set != encodings:
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = False
        write_dataset(fp, ds)
        return fp.getvalue()
    out: list[bytes] = []
    pack_short = struct.Struct("<HH2sH").pack
    pack_long = struct.Struct("<HH2s2xI").pack
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # retired group lengths (PS3.5 7.2)
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement) and elem.VR and elem.length != 0xFFFFFFFF:
            value = elem.value or b""
            vr = elem.VR
            if vr in _LONG_LENGTH_VRS:
                out.append(pack_long(tag.group, tag.element, vr.encode(), len(value)))
            else:
                out.append(pack_short(tag.group, tag.element, vr.encode(), len(value)))
            out.append(value)
        else:
            fp = DicomBytesIO()
            fp.is_little_endian = True
            fp.is_implicit_VR = False
            write_data_element(fp, ds[tag], encodings)  # decodes raw if needed
            out.append(fp.getvalue())
    return b"".join(out)


def _meta_element(element: int, vr: str, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    if vr in _LONG_LENGTH_VRS:
        return struct.pack("<HH2s2xI", 0x0002, element, vr.encode(), len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr.encode(), len(value)) + value


_META_TAIL = (
    _meta_element(0x0010, "UI", ExplicitVRLittleEndian.encode(), b"\0")
    + _meta_element(0x0012, "UI", PYDICOM_IMPLEMENTATION_UID.encode(), b"\0")
    + _meta_element(0x0013, "SH", IMPLEMENTATION_VERSION_NAME.encode(), b" ")
)


def _file_meta(sop_class: str, sop_instance: str) -> bytes:
    """Group 0002 (PS3.10 7.1), always Explicit VR Little Endian."""
    body = (
        _meta_element(0x0001, "OB", b"\x00\x01", b"\0")
        + _meta_element(0x0002, "UI", sop_class.encode(), b"\0")
        + _meta_element(0x0003, "UI", sop_instance.encode(), b"\0")
        + _META_TAIL
    )
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def to_part10_bytes(ds: pydicom.Dataset) -> bytes:
    """Encode as a DICOM Part 10 file: preamble, ``DICM``, file meta, Explicit VR LE body.

    The dataset itself is not modified (any file meta it carries is ignored; a new
    one is written for Explicit VR Little Endian).
    """
    meta = _file_meta(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
    return b"\x00" * 128 + b"DICM" + meta + _encode_body(ds)


def write_cohort(out_dir: Path, **kwargs: Any) -> list[Path]:
    """Write :func:`generate_cohort` output as ``out_dir/<patient>/<study>/<series>/<n>.dcm``.

    Keyword arguments are passed to :func:`generate_cohort`. Returns the written paths
    in generation order.
    """
    out_dir = Path(out_dir)
    paths: list[Path] = []
    made: set[Path] = set()
    for ds in generate_cohort(**kwargs):
        folder = out_dir / str(ds.PatientID) / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID)
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        path = folder / f"{int(ds.InstanceNumber)}.dcm"
        path.write_bytes(to_part10_bytes(ds))
        paths.append(path)
    return paths

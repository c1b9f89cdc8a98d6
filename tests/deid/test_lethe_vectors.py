"""EUCAIM/LETHE compatibility: pseudonyms computed here, from RSNA CTP's definitions.

The expected values are computed in this file with hashlib, from the definitions read
in CTP's source (``AnonymizerFunctions.hashPtID``/``hashUID``/``modifyDate``,
``DICOMAnonymizer.hashuid``/``hashdate``, RSNA Util's ``DigestUtil.getUSMD5``) and
LETHE's ``anon.script`` rules; never by calling the gateway's code:

- getUSMD5(s): MD5 of the UTF-8 bytes of s, as an unsigned integer in base 10.
- @hashptid(site, id): getUSMD5("[" + trim(site) + "]" + trim(id)), Java ``String.trim``
  (removes every character up to U+0020 at both ends, nothing else).
- PatientID: ``EUCAIM-`` + @hashptid(SECRET, PatientID); PatientName: the same + ``^Anonymous``.
- @hashuid(root, uid, PatientID): root + "." + getUSMD5(uid + <anonymised PatientID>),
  a ``9`` inserted when the digits start with ``0``, cut to 64 characters.
- @modifydate(this, *, *, 1): day of month set to 01, anything after the date kept.
- @hashdate(this, PatientID): dates moved by -(int(last 4 digits of getUSMD5(PatientID))
  mod 3650) days, -1 when that is 0.
- @hash(this, 16) (AccessionNumber): the first 16 digits of getUSMD5(value), unkeyed.
- InstitutionName: the SHA-256 hex digest of the site id (LETHE's PROVIDERID).

The same vectors are compared with what the gateway stores (the blob on disk) and serves
(WADO-RS, metadata, QIDO) for an ``eucaim`` dataset, and with ``server.core.deid.ctp``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from server.core.deid import ctp
from tests.deid.phi_corpus import to_part10
from tests.helpers import multipart_body
from tests.live import LiveServer

ROOT = "1.3.6.1.4.1.58108.2023"
SITE = "EUCAIM-SITE-0042"
HEX = "0123456789abcdef"


def java_trim(text: str) -> str:
    start, end = 0, len(text)
    while start < end and ord(text[start]) <= 0x20:
        start += 1
    while end > start and ord(text[end - 1]) <= 0x20:
        end -= 1
    return text[start:end]


def getusmd5(text: str) -> str:
    return str(int.from_bytes(hashlib.md5(text.encode("utf-8")).digest(), "big"))


def pseudonym(secret: str, patient_id: str) -> str:
    return "EUCAIM-" + getusmd5(f"[{java_trim(secret)}]{java_trim(patient_id)}")


def hashed_uid(uid: str, anonymised_patient_id: str) -> str:
    digits = getusmd5(uid + anonymised_patient_id)
    return (f"{ROOT}." + ("9" if digits.startswith("0") else "") + digits)[:64]


def first_of_month(value: str) -> str:
    return value[:6] + "01" + value[8:]


def hashdate(value: str, source: str) -> str:
    inc = -(int(getusmd5(source)[-4:]) % 3650) or -1
    day = dt.date(int(value[:4]), int(value[4:6]), int(value[6:8])) + dt.timedelta(days=inc)
    return day.strftime("%Y%m%d") + value[8:]


def lethe_secret(body: str) -> str:
    """LETHE's secret format: 32 hex digits + a Luhn mod-16 check digit."""
    total = 0
    for i, char in enumerate(reversed(body)):
        value = HEX.index(char) * (2 if i % 2 == 0 else 1)
        total += value // 16 + value % 16
    return body + HEX[(16 - total % 16) % 16]


SECRETS = [
    lethe_secret("0190a1b2c3d47e5f8a9b0c1d2e3f4a5b"),
    lethe_secret("0193ffeeddcc7bbaa99887766554433f"),
    lethe_secret("018f000000007000800000000000000a"),
]
PATIENT_IDS = [
    "12345",
    "  00012345  ",  # leading/trailing spaces: trimmed (leading zeros are kept)
    "PAT-Ärzte-Zürich-42",  # non-ASCII: UTF-8 bytes
    "患者-0042",
    "Ωμέγα 7",  # inner space kept
    "\tTAB-ID\t",  # Java trim removes every character up to U+0020
]
SECRETS_WITH_SPACES = [" padded-site-secret ", "secret", "sécret-ü"]


# --- the vectors themselves -------------------------------------------------------------


def test_vectors_are_what_ctp_defines_for_a_known_case() -> None:
    # MD5("[s]1") = 0x5c8b... written in base 10 (no leading zeros); checked by hand once
    assert getusmd5("[s]1") == str(int(hashlib.md5(b"[s]1").hexdigest(), 16))
    assert pseudonym(" s ", " 1 ") == pseudonym("s", "1")
    assert all(len(secret) == 33 for secret in SECRETS)
    assert hashed_uid("1.2.3", "EUCAIM-1").startswith(ROOT + ".")
    assert len(hashed_uid("1.2.3" * 20, "EUCAIM-1")) <= 64
    assert first_of_month("20190823134209.123") == "20190801134209.123"


@pytest.mark.parametrize(
    ("secret", "patient_id"), itertools.product(SECRETS + SECRETS_WITH_SPACES, PATIENT_IDS)
)
def test_core_ctp_gives_the_vectors(secret: str, patient_id: str) -> None:
    anonymised = pseudonym(secret, patient_id)
    assert ctp.hash_patient_id(secret, patient_id) == anonymised
    uid = "1.2.826.0.1.3680043.8.498.1234567890123456789012345678901234"
    assert ctp.hash_uid(ROOT, uid, anonymised) == hashed_uid(uid, anonymised)
    assert ctp.hash_date_shift("20190823", patient_id) == hashdate("20190823", patient_id)


@pytest.mark.parametrize(
    "value", ["20190823", "19370411", "20000229", "20190823134209.123456+0100", "2019-08-23"]
)
def test_core_ctp_modifies_dates_as_ctp(value: str) -> None:
    expected = value[:8] + "01" + value[10:] if "-" in value else first_of_month(value)
    assert ctp.modify_date(value) == expected


def test_non_breaking_space_is_not_trimmed_as_java_does_not() -> None:
    # Java's String.trim removes only characters <= U+0020; CTP keeps U+00A0 and hashes it
    assert ctp.hash_patient_id(SECRETS[0], "\u00a0123\u00a0") == pseudonym(
        SECRETS[0], "\u00a0123\u00a0"
    )


# --- what the gateway stores and serves -----------------------------------------------


def _instance(patient_id: str, n: int, charset: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    base = f"1.2.826.0.1.3680043.8.498.{n}"
    ds.SOPInstanceUID, ds.StudyInstanceUID = f"{base}.3", f"{base}.1"
    ds.SeriesInstanceUID, ds.FrameOfReferenceUID = f"{base}.2", f"{base}.4"
    ds.PatientID, ds.PatientName = patient_id, "Vectorqa^Patient"
    ds.PatientBirthDate, ds.StudyDate, ds.AcquisitionDateTime = (
        "19370411",
        "20190823",
        "20190823134209.5",
    )
    ds.AccessionNumber, ds.InstitutionName = f"ACC{n:05d}", "Vector Hospital"
    ds.Modality, ds.BurnedInAnnotation = "CT", "NO"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, f"{base}.9"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.zeros(16, dtype="<u2").tobytes()
    return ds


def _expected(secret: str, original: Dataset) -> dict[str, Any]:
    anonymised = pseudonym(secret, original.PatientID)
    return {
        "PatientID": anonymised,
        "PatientName": anonymised + "^Anonymous",
        "StudyInstanceUID": hashed_uid(original.StudyInstanceUID, anonymised),
        "SeriesInstanceUID": hashed_uid(original.SeriesInstanceUID, anonymised),
        "SOPInstanceUID": hashed_uid(original.SOPInstanceUID, anonymised),
        "FrameOfReferenceUID": hashed_uid(original.FrameOfReferenceUID, anonymised),
        "ReferencedSOPInstanceUID": hashed_uid(
            original.ReferencedImageSequence[0].ReferencedSOPInstanceUID, anonymised
        ),
        "PatientBirthDate": first_of_month(original.PatientBirthDate),
        "StudyDate": first_of_month(original.StudyDate),
        "AcquisitionDateTime": first_of_month(original.AcquisitionDateTime),
        "AccessionNumber": getusmd5(original.AccessionNumber)[:16],
        "InstitutionName": hashlib.sha256(SITE.encode()).hexdigest(),
    }


def _actual(ds: Dataset) -> dict[str, Any]:
    return {
        "PatientID": ds.PatientID,
        "PatientName": str(ds.PatientName),
        "StudyInstanceUID": ds.StudyInstanceUID,
        "SeriesInstanceUID": ds.SeriesInstanceUID,
        "SOPInstanceUID": ds.SOPInstanceUID,
        "FrameOfReferenceUID": ds.FrameOfReferenceUID,
        "ReferencedSOPInstanceUID": ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID,
        "PatientBirthDate": ds.PatientBirthDate,
        "StudyDate": ds.StudyDate,
        "AcquisitionDateTime": ds.AcquisitionDateTime,
        "AccessionNumber": ds.AccessionNumber,
        "InstitutionName": ds.InstitutionName,
    }


def _cases() -> Iterator[tuple[str, str, Dataset]]:
    n = 0
    for d, secret in enumerate(SECRETS):
        for patient_id in PATIENT_IDS:
            n += 1
            charset = "ISO_IR 100" if patient_id.isascii() or "Ä" in patient_id else "ISO_IR 192"
            yield f"lethe{d}", secret, _instance(patient_id, n, charset)


CASES = list(_cases())


@pytest.fixture(scope="module")
def eucaim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("lethe") / "data")
    for d, secret in enumerate(SECRETS):
        done = live.cli("dataset", "create", f"lethe{d}", "--title", f"LETHE {d}", "--deidentify",
                        "eucaim", "--pseudonym-secret", secret, "--provider-id", SITE)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    live.start()
    for dataset in {c[0] for c in CASES}:
        parts = [to_part10(ds) for name, _, ds in CASES if name == dataset]
        r = httpx.post(
            f"{live.url}/datasets/{dataset}/dicom-web/studies",
            content=multipart_body(parts, "vec"),
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=vec'},
            timeout=120,
        )
        assert r.status_code == 200, r.text[:2000]
    yield live
    live.stop()


def _served(live: LiveServer, expected: dict[str, Any]) -> Dataset:
    url = (f"{live.dicomweb}/studies/{expected['StudyInstanceUID']}/series/"
           f"{expected['SeriesInstanceUID']}/instances/{expected['SOPInstanceUID']}")  # fmt: skip
    r = httpx.get(
        url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    )
    assert r.status_code == 200, r.text[:500]
    boundary = r.headers["content-type"].split("boundary=")[1].strip('"').split(";")[0]
    part = r.content.split(f"--{boundary}".encode())[1].partition(b"\r\n\r\n")[2]
    return pydicom.dcmread(io.BytesIO(part.removesuffix(b"\r\n")))


def _stored(data_dir: Path, sop_uid: str) -> Dataset:
    for path in (data_dir / "blobs").rglob("*"):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if ds.get("SOPInstanceUID") == sop_uid:
                return ds
    raise AssertionError(f"no stored blob holds {sop_uid}")


@pytest.mark.parametrize(
    ("dataset", "secret", "original"), CASES, ids=[f"{c[0]}-{c[2].PatientID!r}" for c in CASES]
)
def test_gateway_stores_and_serves_lethe_pseudonyms(
    eucaim_server: LiveServer, dataset: str, secret: str, original: Dataset
) -> None:
    expected = _expected(secret, original)
    assert _actual(_served(eucaim_server, expected)) == expected
    assert _actual(_stored(eucaim_server.data_dir, expected["SOPInstanceUID"])) == expected
    found = httpx.get(
        f"{eucaim_server.dicomweb}/studies", params={"PatientID": expected["PatientID"]}
    ).json()
    assert [s["0020000D"]["Value"][0] for s in found] == [expected["StudyInstanceUID"]]
    metadata = httpx.get(
        f"{eucaim_server.dicomweb}/studies/{expected['StudyInstanceUID']}/metadata"
    ).json()[0]
    assert metadata["00100010"]["Value"][0]["Alphabetic"] == expected["PatientName"]
    assert metadata["00200052"]["Value"][0] == expected["FrameOfReferenceUID"]

"""A planted-PHI corpus: identifying values placed wherever a DICOM instance can carry them.

Three kinds of planted value, each distinct and greppable:

- ``phi``: names, IDs, addresses, phone numbers, institution and physician names,
  accession numbers and free text. They go into the attributes that hold them by
  definition (PatientName, PatientAddress, ...), into free text, SR TEXT items,
  private elements (with and without a private creator), overlays (60xx), curves
  (50xx) and sequences nested three deep. No profile may let one through.
- ``uids`` and ``dates``: every original instance UID and every original date. No
  profile may let one through (dates: unless Retain Longitudinal Full Dates).
- ``markers``: one value per attribute of pydicom's data dictionary whose VR is
  PN/LO/SH/ST/LT/UT/UC/TM (``PHIQ`` + location + tag, so a leak names its attribute).
  A marker may survive only in an attribute the profile keeps by definition (see
  ``tests/deid/profiles.py``), e.g. a descriptor LETHE keeps.

``pydicom_files()`` adds every file of pydicom's own test data (and its character-set
files) with the identifying values they carry.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

PLANT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC", "DA", "DT", "TM", "UI", "AS"}
# root of every planted UID: finding the root anywhere means an original UID leaked
UID_ROOT = "2.25.271828182845904523536028747135"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
# UI attributes naming registry objects (SOP classes, transfer syntaxes, coding schemes,
# templates): not identifying, kept by every profile; nothing is planted in them
REGISTRY_UID = re.compile(
    r"Class|TransferSyntax|CodingScheme|MappingResource|ContextGroupExtensionCreator|"
    r"ContextUID|TemplateExtension|CreatorVersion|SegmentationTemplate|RepositoryUniqueID|"
    r"HomeCommunityID|RetrieveLocationUID"
)
# set by the generator itself (valid values a store needs) or meaningless in an instance
RESERVED = {
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
    "SeriesInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "Modality",
}  # fmt: skip


class Phi:
    """The identifying values planted in their natural attributes (and in free text)."""

    FAMILY = "Qzwalskiewicz"
    GIVEN = "Carlquintina"
    MIDDLE = "Vorbelinda"
    FAMILY_UTF8 = "Żółtkowskaqa"
    GIVEN_UTF8 = "Jérômelinqe"
    FAMILY_LATIN1 = "Müqllerstein"
    GIVEN_LATIN1 = "Jürqenhold"
    PATIENT_IDS = ("PHIQ-PID-48213977", "PHIQ-PID-59120448", "PHIQ-PID-61734052")
    OTHER_ID = "PHIQ-OID-55120931"
    ISSUER = "Qzwalski Regional Registry"
    BIRTH_DATE = "19370411"
    BIRTH_TIME = "061512.428193"
    ADDRESS = "17 Qzwarnicka Gardens, Kraqowiec 31-337"
    PHONE = "+48 601 777 901"
    INSTITUTION = "Saint Qorbertine Oncology Clinic"
    INSTITUTION_ADDRESS = "2 Hospitalqa Lane, Qorbertine"
    DEPARTMENT = "Qorbertine Thoracic Imaging Unit"
    PHYSICIAN_FAMILY = "Drqavicova"
    PHYSICIAN_GIVEN = "Milenqarda"
    OPERATOR_FAMILY = "Techqarnik"
    ACCESSION = "PHIQACC77310"
    STUDY_ID = "PHIQSID19"
    STATION = "PHIQSTN-CT07"
    SERIAL = "PHIQSN-88123"
    AGE = "093Y"

    @classmethod
    def free_text(cls) -> str:
        return (
            f"Patient {cls.FAMILY} {cls.GIVEN}, born 11 April 1937, lives at {cls.ADDRESS}, "
            f"phone {cls.PHONE}, seen at {cls.INSTITUTION} by Dr {cls.PHYSICIAN_FAMILY}."
        )

    @classmethod
    def strings(cls) -> set[str]:
        return {
            cls.FAMILY, cls.GIVEN, cls.MIDDLE, cls.FAMILY_UTF8, cls.GIVEN_UTF8,
            cls.FAMILY_LATIN1, cls.GIVEN_LATIN1, *cls.PATIENT_IDS, cls.OTHER_ID, cls.ISSUER,
            cls.BIRTH_TIME, cls.ADDRESS, "Qzwarnicka", cls.PHONE, cls.INSTITUTION,
            "Qorbertine", cls.INSTITUTION_ADDRESS, cls.DEPARTMENT, cls.PHYSICIAN_FAMILY,
            cls.PHYSICIAN_GIVEN, cls.OPERATOR_FAMILY, cls.ACCESSION, cls.STUDY_ID,
            cls.STATION, cls.SERIAL,
        }  # fmt: skip


@dataclass
class Planted:
    """Everything planted in (or found in) a set of instances, by kind."""

    phi: set[str] = field(default_factory=set)
    uids: set[str] = field(default_factory=set)
    dates: set[str] = field(default_factory=set)  # YYYYMMDD
    markers: dict[str, tuple[int, str]] = field(default_factory=dict)  # value -> (tag, where)
    ages: set[str] = field(default_factory=set)

    def update(self, other: Planted) -> None:
        self.phi |= other.phi
        self.uids |= other.uids
        self.dates |= other.dates
        self.markers.update(other.markers)
        self.ages |= other.ages


@dataclass
class CorpusFile:
    name: str
    data: bytes


@dataclass
class Corpus:
    files: list[CorpusFile]
    planted: Planted


class _Planter:
    """Builds marker, date and UID values, remembering each one."""

    def __init__(self, planted: Planted) -> None:
        self.planted = planted
        self.count = 0

    def uid(self) -> str:
        self.count += 1
        value = f"{UID_ROOT}.{self.count}"
        self.planted.uids.add(value)
        return value

    def date(self) -> str:
        self.count += 1
        n = self.count
        value = f"{1911 + n % 80}{n % 12 + 1:02d}{11 + n % 17:02d}"  # never the 1st
        self.planted.dates.add(value)
        return value

    def time(self, tag: int, where: str) -> str:
        self.count += 1
        value = f"134209.{100000 + self.count}"
        self.planted.markers[value] = (tag, where)
        return value

    def text(self, tag: int, where: str, vr: str) -> str:
        marker = f"PHIQ{where}{tag:08X}"
        self.planted.markers[marker] = (tag, where)
        if vr == "PN":
            return f"{marker}^G{marker}"
        if vr in ("ST", "LT", "UT", "UC"):
            return f"{marker} free text"
        return marker

    def value(self, tag: int, vr: str, where: str) -> str | None:
        if vr == "UI":
            return self.uid()
        if vr == "DA":
            return self.date()
        if vr == "DT":
            return self.date() + "134209"
        if vr == "TM":
            return self.time(tag, where)
        if vr == "AS":
            self.planted.ages.add(Phi.AGE)
            return Phi.AGE
        return self.text(tag, where, vr)


def dictionary_attributes() -> list[tuple[int, str, str]]:
    """(tag, VR, keyword) of every pydicom dictionary attribute an instance can carry."""
    found = []
    for tag, (vr, _vm, _name, _retired, keyword) in sorted(DicomDictionary.items()):
        group = tag >> 16
        if vr not in PLANT_VRS or group in (0x0000, 0x0002, 0x0004) or group >= 0xFFFA:
            continue
        if keyword in RESERVED or (vr == "UI" and REGISTRY_UID.search(keyword)):
            continue
        if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
            continue  # curves and overlays: planted by _graphics()
        found.append((tag, vr, keyword))
    return found


def _plant_all(ds: Dataset, planter: _Planter, where: str) -> None:
    for tag, vr, _keyword in dictionary_attributes():
        ds.add_new(tag, vr, planter.value(tag, vr, where))


def _plant_core(ds: Dataset, planter: _Planter, patient_id: str, family: str, given: str) -> None:
    """The identifying values in the attributes that hold them by definition."""
    ds.PatientName = f"{family}^{given}^{Phi.MIDDLE}"
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = Phi.ISSUER
    ds.PatientBirthDate = Phi.BIRTH_DATE
    ds.PatientBirthTime = Phi.BIRTH_TIME
    ds.OtherPatientIDs = Phi.OTHER_ID
    ds.OtherPatientNames = f"{Phi.FAMILY}^{Phi.GIVEN}"
    ds.PatientAddress = Phi.ADDRESS
    ds.PatientTelephoneNumbers = Phi.PHONE
    ds.PatientComments = Phi.free_text()
    ds.AdditionalPatientHistory = Phi.free_text()
    ds.ImageComments = Phi.free_text()
    ds.InstitutionName = Phi.INSTITUTION
    ds.InstitutionAddress = Phi.INSTITUTION_ADDRESS
    ds.InstitutionalDepartmentName = Phi.DEPARTMENT
    ds.ReferringPhysicianName = f"{Phi.PHYSICIAN_FAMILY}^{Phi.PHYSICIAN_GIVEN}"
    ds.PerformingPhysicianName = f"{Phi.PHYSICIAN_FAMILY}^{Phi.PHYSICIAN_GIVEN}"
    ds.OperatorsName = f"{Phi.OPERATOR_FAMILY}^{Phi.GIVEN}"
    ds.AccessionNumber = Phi.ACCESSION
    ds.StudyID = Phi.STUDY_ID
    ds.StationName = Phi.STATION
    ds.DeviceSerialNumber = Phi.SERIAL
    ds.PatientAge = Phi.AGE
    planter.planted.ages.add(Phi.AGE)
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        setattr(ds, keyword, planter.date())


def _item(planter: _Planter, where: str, everything: bool) -> Dataset:
    item = Dataset()
    if everything:
        _plant_all(item, planter, where)
    _plant_core(item, planter, Phi.PATIENT_IDS[0], Phi.FAMILY, Phi.GIVEN)
    item.ReferencedSOPClassUID = CT_IMAGE
    item.ReferencedSOPInstanceUID = planter.uid()
    return item


def _nested(planter: _Planter, chain: tuple[str, str, str], code: str) -> Sequence:
    """Three sequences nested in each other; every level carries PHI, the deepest all of it."""
    inner = _item(planter, f"{code}3", everything=True)
    middle = _item(planter, f"{code}2", everything=False)
    setattr(middle, chain[2], Sequence([inner]))
    outer = _item(planter, f"{code}1", everything=False)
    setattr(outer, chain[1], Sequence([middle]))
    return Sequence([outer])


def _private(ds: Dataset, planter: _Planter) -> None:
    """Private elements in a block with a creator, one without, and one inside a sequence."""
    text = Phi.free_text()
    ds.add_new(0x00090010, "LO", "PHIQ PRIVATE CREATOR")
    ds.add_new(0x00091001, "LO", Phi.PATIENT_IDS[0])
    ds.add_new(0x00091002, "PN", f"{Phi.FAMILY}^{Phi.GIVEN}")
    ds.add_new(0x00091003, "LT", text)
    ds.add_new(0x00091004, "UN", f"{Phi.ADDRESS} ".encode())
    ds.add_new(0x00091005, "OB", f"{Phi.INSTITUTION} ".encode())
    ds.add_new(0x00091006, "DA", planter.date())
    ds.add_new(0x00091007, "UI", planter.uid())
    ds.add_new(0x00111001, "LO", Phi.OTHER_ID)  # no creator for block 10 of group 0011
    ds.add_new(0x00111002, "UN", f"{Phi.PHONE} ".encode())
    inner = Dataset()
    inner.add_new(0x00130010, "LO", "PHIQ NESTED CREATOR")
    inner.add_new(0x00131001, "LO", Phi.ACCESSION)
    inner.add_new(0x00131002, "ST", text)
    ds.add_new(0x00090010 + 1, "LO", "PHIQ SEQUENCE CREATOR")
    ds.add_new(0x00091101, "SQ", Sequence([inner]))


def _graphics(ds: Dataset, planter: _Planter) -> None:
    """An overlay (group 6000) and a retired curve (group 5000), both carrying text."""
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60000022, "LO", planter.text(0x60000022, "G", "LO"))
    ds.add_new(0x60001500, "LO", planter.text(0x60001500, "G", "LO"))
    ds.add_new(0x60004000, "LT", Phi.free_text())
    bits = (f"{Phi.FAMILY} {Phi.PATIENT_IDS[0]} ".encode() * 2)[:32]
    ds.add_new(0x60003000, "OW", bits)
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50000010, "US", 4)
    ds.add_new(0x50000020, "CS", "TAC")
    ds.add_new(0x50000022, "LO", Phi.free_text()[:64])
    ds.add_new(0x50000030, "SH", Phi.STUDY_ID)
    ds.add_new(0x50002500, "LO", planter.text(0x50002500, "C", "LO"))
    ds.add_new(0x5000200E, "LT", Phi.free_text())
    ds.add_new(0x50003000, "OB", f"{Phi.ADDRESS} {Phi.PHONE} ".encode())


def _base(sop_class: str, planter: _Planter, charset: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = planter.uid()
    ds.StudyInstanceUID = planter.uid()
    ds.SeriesInstanceUID = planter.uid()
    ds.FrameOfReferenceUID = planter.uid()
    return ds


def _pixels(ds: Dataset) -> None:
    ds.Modality = "CT"
    ds.BurnedInAnnotation = "NO"
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(256, dtype="<u2").tobytes()


def to_part10(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def everything_instance(planter: _Planter) -> Dataset:
    """A CT image with a value in every dictionary attribute, nested PHI, private and graphics."""
    ds = _base(CT_IMAGE, planter, "ISO_IR 192")
    _plant_all(ds, planter, "T")
    _plant_core(ds, planter, Phi.PATIENT_IDS[0], Phi.FAMILY_UTF8, Phi.GIVEN_UTF8)
    _pixels(ds)
    ds.AnatomicRegionSequence = _nested(
        planter, ("", "PrimaryAnatomicStructureSequence", "DerivationCodeSequence"), "A"
    )
    ds.ReferencedImageSequence = _nested(
        planter, ("", "SourceImageSequence", "ReferencedStudySequence"), "B"
    )
    ds.OtherPatientIDsSequence = _nested(
        planter, ("", "RequestAttributesSequence", "ReferencedSeriesSequence"), "C"
    )
    _private(ds, planter)
    _graphics(ds, planter)
    return ds


def latin1_instance(planter: _Planter) -> Dataset:
    """A plain CT image in ISO_IR 100 (Latin-1) with the core PHI only."""
    ds = _base(CT_IMAGE, planter, "ISO_IR 100")
    _plant_core(ds, planter, Phi.PATIENT_IDS[1], Phi.FAMILY_LATIN1, Phi.GIVEN_LATIN1)
    _pixels(ds)
    return ds


def _content_item(relationship: str, value_type: str, name: str, **values: object) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = name, "99PHIQ", name
    item.ConceptNameCodeSequence = Sequence([concept])
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def sr_instance(planter: _Planter) -> Dataset:
    """A Comprehensive SR whose TEXT, PNAME, DATE and UIDREF items carry PHI, three deep."""
    ds = _base(COMPREHENSIVE_SR, planter, "ISO_IR 192")
    _plant_core(ds, planter, Phi.PATIENT_IDS[2], Phi.FAMILY, Phi.GIVEN)
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    deepest = _content_item("CONTAINS", "TEXT", "T3", TextValue=Phi.free_text())
    middle = _content_item("CONTAINS", "CONTAINER", "C2", ContinuityOfContent="SEPARATE")
    middle.ContentSequence = Sequence(
        [
            _content_item("CONTAINS", "TEXT", "T2", TextValue=f"{Phi.ADDRESS}; {Phi.PHONE}"),
            _content_item("CONTAINS", "CONTAINER", "C3", ContinuityOfContent="SEPARATE"),
        ]
    )
    middle.ContentSequence[1].ContentSequence = Sequence([deepest])
    ds.ContentSequence = Sequence(
        [
            _content_item("CONTAINS", "TEXT", "T1", TextValue=Phi.free_text()),
            _content_item("CONTAINS", "PNAME", "P1", PersonName=f"{Phi.FAMILY}^{Phi.GIVEN}"),
            _content_item("CONTAINS", "DATE", "D1", Date=planter.date()),
            _content_item("CONTAINS", "UIDREF", "U1", UID=planter.uid()),
            middle,
        ]
    )
    return ds


def planted_corpus() -> Corpus:
    """The generated instances (Part 10 bytes) and everything planted in them."""
    planted = Planted(phi=Phi.strings())
    planter = _Planter(planted)
    planted.dates.add(Phi.BIRTH_DATE)
    files = [
        CorpusFile("everything.dcm", to_part10(everything_instance(planter))),
        CorpusFile("latin1.dcm", to_part10(latin1_instance(planter))),
        CorpusFile("sr.dcm", to_part10(sr_instance(planter))),
    ]
    return Corpus(files, planted)


# --- pydicom's own test data ------------------------------------------------------------

_SKIP_SUFFIX = (".json", ".txt", ".dump", ".gz", ".icc", ".bz2", ".zip")
# generic words some test files put in name fields; they also occur in kept code meanings
_DUMMY_NAMES = {
    "anonymized", "anonymous", "test", "last", "first", "name", "mid", "pre", "observer",
    "doctor", "verifying", "operator", "citizen", "first name", "last name", "enter text",
}  # fmt: skip


def _identifying(ds: Dataset, planted: Planted) -> None:
    """Record the identifying values a real file carries (at any depth)."""
    for elem in ds.iterall():
        if elem.value in (None, "", b"") or elem.tag.group == 0x0002:
            continue
        values = elem.value if elem.VM > 1 else [elem.value]
        if elem.VR == "PN":
            for name in values:
                for part in re.split(r"[\^=]", str(name)):
                    strong = len(part) >= 5 or (len(part) >= 2 and not part.isascii())
                    if strong and part.lower().strip() not in _DUMMY_NAMES:
                        planted.phi.add(part.strip())
        elif elem.VR == "UI" and not REGISTRY_UID.search(elem.keyword or "Private"):
            for uid in values:
                if len(str(uid)) >= 20 and UID(str(uid)).name == str(uid):
                    planted.uids.add(str(uid))
        elif elem.VR == "DA":
            for date in values:
                if re.fullmatch(r"\d{8}", str(date)) and str(date) != "00000000":
                    planted.dates.add(str(date))
        elif elem.keyword in ("PatientID", "AccessionNumber") and (len(str(elem.value)) >= 6):
            planted.phi.add(str(elem.value).strip())


def pydicom_files() -> Corpus:
    """Every file of pydicom's test data and character-set files, as found."""
    planted = Planted()
    files = []
    for name in sorted({*get_testdata_files(), *get_charset_files()}):
        path = Path(name)
        if not path.is_file() or path.name.endswith(_SKIP_SUFFIX) or "DICOMDIR" in path.name:
            continue
        files.append(CorpusFile(f"pydicom/{path.name}", path.read_bytes()))
        try:
            _identifying(pydicom.dcmread(path, force=True), planted)
        except Exception:  # a deliberately broken file: its bytes are still sent
            continue
    return Corpus(files, planted)

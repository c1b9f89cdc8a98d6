"""Synthetic instances with planted identifying values, for the engine's property tests."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
NAME = "Kowalski^Carla"
PID = "PAT-001"
STUDY_UID = "1.2.826.0.1.3680043.99.1.1"
SERIES_UID = "1.2.826.0.1.3680043.99.1.2"
FOR_UID = "1.2.826.0.1.3680043.99.1.3"


def _item(**values: object) -> Dataset:
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


def base(sop_uid: str, sop_class: str = CTImageStorage, series: str = SERIES_UID) -> Dataset:
    """An instance of patient PAT-001 carrying identifying values in many places."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = FOR_UID
    ds.Modality = "CT"
    ds.BurnedInAnnotation = "NO"
    ds.PatientName = NAME
    ds.PatientID = PID
    ds.PatientBirthDate = "19610412"
    ds.PatientSex = "F"
    ds.PatientAge = "063Y"
    ds.PatientWeight = "70"
    ds.InstitutionName = "St Mary Hospital"
    ds.StationName = "CT01"
    ds.DeviceSerialNumber = "SN12345"
    ds.Manufacturer = "ACME"
    ds.StudyDescription = "CT chest Kowalski"
    ds.SeriesDescription = "Axial Kowalski"
    ds.StudyDate = "20240117"
    ds.ContentDate = "20240119"
    ds.StudyTime = "101010"
    ds.AccessionNumber = "ACC123"
    ds.ReferringPhysicianName = "Doe^John"
    ds.ImageComments = "seen by Dr Kowalski"
    ds.OperatorsName = "Smith^Ann"
    ds.AcquisitionContextSequence = Sequence(
        [_item(ValueType="TEXT", TextValue="context", ConceptNameCodeSequence=Sequence())]
    )
    ds.RequestAttributesSequence = Sequence(
        [_item(RequestedProcedureDescription="Kowalski chest", ScheduledProcedureStepID="S1")]
    )
    # depth 3: ReferencedImage > SourceImage > ReferencedImage, pointing at this instance
    deep = _item(
        PersonName="Nested^Name",
        ReferencedSOPInstanceUID=sop_uid,
        ReferencedSOPClassUID=sop_class,
    )
    middle = _item(
        ReferencedSOPInstanceUID=STUDY_UID,
        ReferencedSOPClassUID=CTImageStorage,
        ReferencedImageSequence=Sequence([deep]),
    )
    ds.ReferencedImageSequence = Sequence(
        [
            _item(
                ReferencedSOPInstanceUID=FOR_UID,
                ReferencedSOPClassUID=CTImageStorage,
                InstitutionName="St Mary Hospital",  # nested copies of identifying values
                AccessionNumber="ACC123",
                SourceImageSequence=Sequence([middle]),
            )
        ]
    )
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    ds.add_new(0x00091001, "LO", "Kowalski private")
    ds.add_new(0x00111010, "LO", "creatorless Carla")  # no (0011,0010) creator
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    ds.add_new(0x0019100C, "IS", "1000")  # on the shipped safe-list (B_value)
    ds.add_new(0x0019100D, "CS", "DIRECTIONAL")  # not on the safe-list
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60003000, "OW", b"\x0f\x00")
    ds.add_new(0x60004000, "LT", "overlay by Kowalski")
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.SamplesPerPixel = 1
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    return ds


def reference_to(target: Dataset, sop_uid: str) -> Dataset:
    """A SEG-like instance that references ``target`` the way SEG/RTSTRUCT/KOS do."""
    ds = base(sop_uid, SEG_STORAGE, series="1.2.826.0.1.3680043.99.1.7")
    ds.ReferencedSeriesSequence = Sequence(
        [
            _item(
                SeriesInstanceUID=target.SeriesInstanceUID,
                ReferencedInstanceSequence=Sequence(
                    [
                        _item(
                            ReferencedSOPClassUID=target.SOPClassUID,
                            ReferencedSOPInstanceUID=target.SOPInstanceUID,
                        )
                    ]
                ),
            )
        ]
    )
    return ds


def write(ds: Dataset, path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "HOSPITAL_PACS"
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def new_uid() -> str:
    return generate_uid(prefix="1.2.826.0.1.3680043.99.2.")

"""A DICOMDIR (PS3.10 8.6, PS3.3 F.3) for instances written under PS3.10 file IDs.

Built from the instances' headers, in memory and in linear time, before the instances
themselves are streamed (pydicom's FileSet stages every instance on disk and checks each
addition against all earlier ones, which is quadratic). Four record levels, PATIENT,
STUDY, SERIES, IMAGE; file IDs ``PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn``. Record offsets
are byte positions in the DICOMDIR file; they have a fixed size (UL), so the file is
encoded once with zeros, the item positions read back, and encoded again with them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_KEYS = {
    "PATIENT": ("PatientID", "PatientName"),
    "STUDY": ("StudyDate", "StudyTime", "StudyDescription", "StudyInstanceUID", "StudyID",
              "AccessionNumber"),
    "SERIES": ("Modality", "SeriesInstanceUID", "SeriesNumber"),
    "IMAGE": ("InstanceNumber",),
}  # fmt: skip
_REQUIRED_EMPTY = {"PatientID", "StudyDate", "StudyTime", "StudyID", "Modality", "SeriesNumber",
                   "StudyDescription", "AccessionNumber", "InstanceNumber"}  # fmt: skip


@dataclass
class _Node:
    record: Dataset
    children: dict[str, _Node] = field(default_factory=dict)


def _record(kind: str, header: Dataset) -> Dataset:
    record = Dataset()
    record.OffsetOfTheNextDirectoryRecord = 0
    record.RecordInUseFlag = 0xFFFF
    record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    record.DirectoryRecordType = kind
    for keyword in _KEYS[kind]:
        value = header.get(keyword)
        if value not in (None, "") or keyword in _REQUIRED_EMPTY:
            setattr(record, keyword, value if value is not None else "")
    return record


class DicomdirBuilder:
    """Add headers in any order; :meth:`encode` gives the DICOMDIR bytes."""

    def __init__(self) -> None:
        self._patients: dict[str, _Node] = {}
        self._counts = {"PT": 0}

    def add(self, header: Dataset, transfer_syntax: str) -> str:
        """Register one instance; returns its file ID (``/``-separated path in the archive)."""
        patient_key = (
            str(header.get("PatientID") or "") + "\\" + str(header.get("PatientName") or "")
        )
        patient = self._patients.get(patient_key)
        if patient is None:
            patient = self._patients[patient_key] = _Node(_record("PATIENT", header))
        path = [f"PT{list(self._patients).index(patient_key):06d}"]
        node = patient
        for kind, uid, prefix in (("STUDY", "StudyInstanceUID", "ST"),
                                  ("SERIES", "SeriesInstanceUID", "SE")):  # fmt: skip
            key = str(header.get(uid) or "")
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Node(_record(kind, header))
            path.append(f"{prefix}{list(node.children).index(key):06d}")
            node = child
        image = _record("IMAGE", header)
        path.append(f"IM{len(node.children):06d}")
        image.ReferencedFileID = path
        image.ReferencedSOPClassUIDInFile = header.SOPClassUID
        image.ReferencedSOPInstanceUIDInFile = header.SOPInstanceUID
        image.ReferencedTransferSyntaxUIDInFile = transfer_syntax
        node.children[str(header.SOPInstanceUID)] = _Node(image)
        return "/".join(path)

    def encode(self, fileset_id: str = "GATEWAY") -> bytes:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = UID(MEDIA_STORAGE_DIRECTORY)
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.FileSetID = fileset_id
        ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
        ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
        ds.FileSetConsistencyFlag = 0
        levels: list[list[_Node]] = []  # sibling groups, in file order (depth first)
        records: list[Dataset] = []

        def walk(siblings: list[_Node]) -> None:
            levels.append(siblings)
            for node in siblings:
                records.append(node.record)
                if node.children:
                    walk(list(node.children.values()))

        walk(list(self._patients.values()))
        ds.DirectoryRecordSequence = Sequence(records)
        positions = _item_positions(ds)
        where = {id(record): positions[i] for i, record in enumerate(records)}
        for siblings in levels:
            for node, following in zip(siblings, [*siblings[1:], None], strict=True):
                node.record.OffsetOfTheNextDirectoryRecord = (
                    where[id(following.record)] if following else 0
                )
                first_child = next(iter(node.children.values()), None)
                node.record.OffsetOfReferencedLowerLevelDirectoryEntity = (
                    where[id(first_child.record)] if first_child else 0
                )
        roots = levels[0] if levels else []
        if roots:
            ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = where[id(roots[0].record)]
            ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = where[id(roots[-1].record)]
        return _write(ds)


def _write(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _item_positions(ds: Dataset) -> list[int]:
    """File offsets of the Directory Record Sequence items (encoded with the current values)."""
    read = pydicom.dcmread(io.BytesIO(_write(ds)))
    return [int(item.seq_item_tell) for item in read.DirectoryRecordSequence]

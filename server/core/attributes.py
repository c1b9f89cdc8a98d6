"""Queryable and returned attributes per level (PS3.18 10.6.1.2, Tables 10.6.3-3/4/5).

One table drives the index schema of every backend, the QIDO parser and the
level JSON stored for QIDO responses. Tags and VRs come from pydicom's data
dictionary, never typed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword


class Level(StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute the index stores as a column and QIDO can match on."""

    keyword: str
    tag: int
    vr: str
    level: Level
    column: str

    @property
    def tag_hex(self) -> str:
        return f"{self.tag:08X}"


def _spec(keyword: str, level: Level) -> AttributeSpec:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    column = keyword.lower()
    return AttributeSpec(keyword, tag, dictionary_VR(tag), level, column)


_STUDY_MATCHING = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDescription",
    "InstitutionName",
)
_SERIES_MATCHING = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "Laterality",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "Manufacturer",
)
_INSTANCE_MATCHING = (
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "ContentDate",
    "ContentTime",
    "NumberOfFrames",
    "Rows",
    "Columns",
)

MATCHING: dict[str, AttributeSpec] = {
    kw: _spec(kw, level)
    for level, keywords in (
        (Level.STUDY, _STUDY_MATCHING),
        (Level.SERIES, _SERIES_MATCHING),
        (Level.INSTANCE, _INSTANCE_MATCHING),
    )
    for kw in keywords
}
MATCHING_BY_TAG: dict[int, AttributeSpec] = {spec.tag: spec for spec in MATCHING.values()}

# Extra attributes kept in each level's stored JSON (returned by QIDO, not matchable).
_STUDY_RETURN_ONLY = (
    "SpecificCharacterSet",
    "TimezoneOffsetFromUTC",
    "OtherPatientIDs",
    "PatientAge",  # age at the study: the federated search's age when the birth date is gone
)
_SERIES_RETURN_ONLY = (
    "StudyInstanceUID",
    "SpecificCharacterSet",
    "TimezoneOffsetFromUTC",
    "FrameOfReferenceUID",
)
_INSTANCE_RETURN_ONLY = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SpecificCharacterSet",
    "TimezoneOffsetFromUTC",
    "BitsAllocated",
    "ImageType",
    "AcquisitionNumber",
)


def _tags(keywords: tuple[str, ...]) -> tuple[int, ...]:
    out = []
    for kw in keywords:
        tag = tag_for_keyword(kw)
        assert tag is not None, kw
        out.append(tag)
    return tuple(out)


LEVEL_TAGS: dict[Level, tuple[int, ...]] = {
    Level.STUDY: _tags(_STUDY_MATCHING + _STUDY_RETURN_ONLY),
    Level.SERIES: _tags(_SERIES_MATCHING + _SERIES_RETURN_ONLY),
    Level.INSTANCE: _tags(_INSTANCE_MATCHING + _INSTANCE_RETURN_ONLY),
}

# Computed attributes (PS3.18 Table 10.6.3-3/4): answered from counters kept by the index.
MODALITIES_IN_STUDY = 0x00080061
NUMBER_OF_STUDY_RELATED_SERIES = 0x00201206
NUMBER_OF_STUDY_RELATED_INSTANCES = 0x00201208
NUMBER_OF_SERIES_RELATED_INSTANCES = 0x00201209
RETRIEVE_URL = 0x00081190
INSTANCE_AVAILABILITY = 0x00080056

COMPUTED_KEYWORDS = {
    "ModalitiesInStudy": MODALITIES_IN_STUDY,
    "NumberOfStudyRelatedSeries": NUMBER_OF_STUDY_RELATED_SERIES,
    "NumberOfStudyRelatedInstances": NUMBER_OF_STUDY_RELATED_INSTANCES,
    "NumberOfSeriesRelatedInstances": NUMBER_OF_SERIES_RELATED_INSTANCES,
}


def parse_tag(text: str) -> int | None:
    """Resolve a QIDO attribute ID (PS3.18 8.3.4.1): a keyword or 8 hex digits."""
    if len(text) == 8:
        try:
            return int(text, 16)
        except ValueError:
            pass
    return tag_for_keyword(text)


def keyword_of(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag:08X}"

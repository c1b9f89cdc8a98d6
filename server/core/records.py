"""A parsed instance as the index stores it (PS3.18 10.6.3 level attributes, 10.4 metadata).

``read_instance`` parses a Part-10 file once at ingest and precomputes
everything later requests need: matching columns per level, each level's
QIDO JSON, the full metadata JSON with BulkDataURIs, and the frame index.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from server.core import pixels
from server.core.attributes import LEVEL_TAGS, MATCHING, Level
from server.core.decoded_size import check_codestreams, check_inflated_size, frame_bytes
from server.core.fhir import imaging
from server.core.fhir.search import date_range
from server.core.instance_json import TooDeep, metadata_json
from server.core.limits import PixelLimits, TooLarge
from server.core.uids import check_uid
from server.core.values import fuzzy_name_column, normalize_da, normalize_is, normalize_tm
from server.errors import BadRequest

DEFER_SIZE = 1024  # values larger than this are not read while parsing
PIXEL_DATA = 0x7FE00010
LEVEL_KEYS = {level: tuple(f"{tag:08X}" for tag in tags) for level, tags in LEVEL_TAGS.items()}


class UnreadableInstance(BadRequest):
    """The bytes are not a DICOM Part-10 instance this gateway can understand (0xC000)."""

    def __init__(self, message: str, sop_class_uid: str = "", sop_uid: str = "") -> None:
        super().__init__(message)
        self.sop_class_uid = sop_class_uid
        self.sop_uid = sop_uid


@dataclass
class InstanceRecord:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    columns: dict[Level, dict[str, Any]]
    level_json: dict[Level, bytes]
    metadata: bytes
    size: int = 0
    sha256: str = ""
    blob_key: str = ""
    pixel_index: bytes | None = None
    warnings: list[int] = field(default_factory=list)
    dataset: str | None = None  # set by ingest from the STOW URL / import option / default
    patient_key: str = ""  # pseudonymous FHIR Patient id (server.core.fhir.imaging.patient_id)
    started: tuple[str | None, str | None] = (None, None)  # StudyDate/Time as an instant range
    deid: bytes | None = None  # DeidRecord JSON (names of attributes, never values); admin-only

    @property
    def modality(self) -> str | None:
        value = self.columns[Level.SERIES].get("modality")
        return str(value) if value else None


def blob_key_for(sop_uid: str, sha256: str) -> str:
    """Content-addressed key: one SOP Instance UID, one file per distinct content."""
    uid_hash = hashlib.sha256(sop_uid.encode()).hexdigest()
    return f"{uid_hash}.{sha256[:16]}.dcm"


def read_instance(
    path: Path, sha256: str, limits: PixelLimits | None = None, *, patient_secret: bytes
) -> InstanceRecord:
    """PS3.10 7.1: parse a Part-10 file and build its index record (UnreadableInstance if not).

    Nothing but UnreadableInstance escapes: any failure of the parser or of a
    conversion on hostile bytes (deep nesting, bombs, broken values) is that.
    ``patient_secret`` keys the pseudonymous Patient id (server.core.fhir.imaging.patient_id).
    """
    limits = limits or PixelLimits()
    with _unreadable():
        return _read_instance(path, sha256, limits, patient_secret)


def record_from_parsed(
    path: Path,
    ds: Dataset,
    pixel_offset: int | None,
    sha256: str,
    limits: PixelLimits | None = None,
    *,
    patient_secret: bytes,
) -> InstanceRecord:
    """As ``read_instance``, from a header already in memory: ``ds`` is what parsing
    ``path`` (not deflated) before its pixel data gives, ``pixel_offset`` where its pixel
    element starts in ``path`` (None: none). The de-identification engine has that
    header after writing the file, so the file is not parsed a second time."""
    limits = limits or PixelLimits()
    with _unreadable(), path.open("rb") as f:
        f.seek(0 if pixel_offset is None else pixel_offset, 2 if pixel_offset is None else 0)
        return _from_parsed(f, ds, path, sha256, limits, patient_secret)


@contextmanager
def _unreadable() -> Iterator[None]:
    """Every failure of reading an instance as UnreadableInstance, with a reason."""
    try:
        yield
    except UnreadableInstance:
        raise
    except TooLarge as exc:
        raise UnreadableInstance(exc.message) from exc
    except RecursionError as exc:
        raise UnreadableInstance("the data set is nested too deeply to be read") from exc
    except Exception as exc:
        raise UnreadableInstance(f"DICOM parse error: {type(exc).__name__}: {exc}") from exc


def _read_instance(
    path: Path, sha256: str, limits: PixelLimits, patient_secret: bytes
) -> InstanceRecord:
    with path.open("rb") as f:
        if limits.max_inflated_bytes is not None:
            check_inflated_size(f, limits.max_inflated_bytes)
        ds = _parse(f)
        return _from_parsed(f, ds, path, sha256, limits, patient_secret)


def _from_parsed(
    f: BinaryIO, ds: Dataset, path: Path, sha256: str, limits: PixelLimits, patient_secret: bytes
) -> InstanceRecord:
    """The record of ``ds`` parsed from ``f``, which stands where the header ends."""
    size = os.fstat(f.fileno()).st_size
    study, series, sop, sop_class = _uids(ds)
    try:
        pixel_index = pixels.index_parsed(f, ds, path)
    except Exception as exc:  # a pixel layout we cannot index is unreadable for frame access
        raise UnreadableInstance(f"pixel data cannot be read: {exc}", sop_class, sop) from exc
    if pixel_index is not None:
        _check_pixels_fit(pixel_index, size, sop_class, sop)
        _check_decoded_size(pixel_index, limits, sop_class, sop)
        try:
            check_codestreams(path, pixel_index, limits)
        except TooLarge as exc:
            raise UnreadableInstance(exc.message, sop_class, sop) from exc
    prefix = f"/studies/{study}/series/{series}/instances/{sop}"
    meta = _metadata(ds, prefix, pixel_index, limits.inline_binary_max_bytes)
    record = _record(ds, meta, pixel_index, size, sha256, (study, series, sop, sop_class))
    record.patient_key = patient_key(patient_secret, meta)
    return record


def _record(
    ds: Dataset,
    meta: dict[str, Any],
    pixel_index: pixels.PixelIndex | None,
    size: int,
    sha256: str,
    uids: tuple[str, str, str, str],
) -> InstanceRecord:
    study, series, sop, sop_class = uids
    record = InstanceRecord(
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid=sop_class,
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "") or ""),
        columns={level: _columns(meta, level) for level in Level},
        level_json={level: orjson.dumps(_level_json(meta, level)) for level in Level},
        metadata=orjson.dumps(meta),
        size=size,
        sha256=sha256,
        blob_key=blob_key_for(sop, sha256),
        pixel_index=pixel_index.to_bytes() if pixel_index is not None else None,
    )
    record.started = _started(meta)
    media_class = ds.file_meta.get("MediaStorageSOPClassUID")
    if media_class and str(media_class) != sop_class:
        record.warnings.append(0xB007)  # PS3.4 B.2.3: data set does not match SOP class
    return record


def _check_decoded_size(
    index: pixels.PixelIndex, limits: PixelLimits, sop_class: str, sop: str
) -> None:
    """Compressed or deflated frames whose decoded size exceeds the cap are bombs: refused.

    Native frames are stored as sent (their size is real); only decoding them is capped.
    """
    if limits.max_frame_bytes is None or not (index.encapsulated or not index.frames):
        return
    size = frame_bytes(index.rows, index.columns, index.samples_per_pixel, index.bits_allocated)
    if size > limits.max_frame_bytes:
        raise UnreadableInstance(
            f"frames decode past GATEWAY_PIXELS__MAX_FRAME_BYTES: {index.rows}x{index.columns}"
            f"x{index.samples_per_pixel} at {index.bits_allocated} bits, {size} bytes each",
            sop_class,
            sop,
        )


def patient_key(secret: bytes, data: dict[str, Any]) -> str:
    """The pseudonymous Patient id of DICOM JSON holding Patient ID / Issuer of Patient ID."""
    return imaging.patient_id(
        secret, _json_text(data.get("00100020")), _json_text(data.get("00100021"))
    )


def _parse(f: BinaryIO) -> Dataset:
    try:
        ds = pydicom.dcmread(f, stop_before_pixels=True, defer_size=DEFER_SIZE)
    except InvalidDicomError as exc:
        raise UnreadableInstance(f"not a DICOM Part-10 file: {exc}") from exc
    except RecursionError as exc:
        raise UnreadableInstance("the data set is nested too deeply to be read") from exc
    except Exception as exc:
        raise UnreadableInstance(f"DICOM parse error: {type(exc).__name__}: {exc}") from exc
    if not ds.preamble and not getattr(ds, "file_meta", None):
        raise UnreadableInstance("not a DICOM Part-10 file: no preamble and no File Meta")
    if "TransferSyntaxUID" not in ds.file_meta:
        raise UnreadableInstance("File Meta Information has no Transfer Syntax UID")
    return ds


def _uids(ds: Dataset) -> tuple[str, str, str, str]:
    out = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        value = str(ds.get(keyword, "") or "").strip().rstrip("\x00")
        if not value:
            raise UnreadableInstance(f"required attribute {keyword} is missing or empty")
        try:
            out.append(check_uid(value, keyword))
        except BadRequest as exc:
            raise UnreadableInstance(exc.message) from exc
    return out[0], out[1], out[2], out[3]


def _check_pixels_fit(index: pixels.PixelIndex, size: int, sop_class: str, sop: str) -> None:
    for frame in index.frames:
        for offset, length in frame:
            if offset + length > size:
                raise UnreadableInstance(
                    "the file is truncated: pixel data runs past its end", sop_class, sop
                )


def _started(meta: dict[str, Any]) -> tuple[str | None, str | None]:
    """StudyDate + StudyTime as the instant range FHIR date search compares against."""
    date = normalize_da(_json_text(meta.get("00080020")) or "")
    if date is None:
        return None, None
    day = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    main, _, frac = (_json_text(meta.get("00080030")) or "").strip().replace(":", "").partition(".")
    if not main.isdigit() or len(main) not in (2, 4, 6):
        return date_range(day)
    if len(main) == 2:  # hour precision: the whole hour
        return f"{day}T{main}:00:00.000000", f"{day}T{main}:59:59.999999"
    text = f"{day}T{main[:2]}:{main[2:4]}"
    if len(main) == 6:
        text += f":{main[4:6]}" + (f".{frac}" if frac.isdigit() else "")
    return date_range(text)


def _json_text(element: dict[str, Any] | None) -> str | None:
    """The value of a DICOM JSON element as DICOM text (multi-values joined by backslash)."""
    values = element.get("Value") if element else None
    if not values:
        return None
    parts = []
    for v in values:
        if isinstance(v, dict):  # PN: component groups (PS3.18 F.2.2)
            groups = [v.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
            parts.append("=".join(groups).rstrip("="))
        else:
            parts.append(str(v))
    text = "\\".join(parts)
    return text or None


def _columns(meta: dict[str, Any], level: Level) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in MATCHING.values():
        if spec.level is not level:
            continue
        text = _json_text(meta.get(spec.tag_hex))
        if text is None:
            out[spec.column] = None
        elif spec.vr == "DA":
            out[spec.column] = normalize_da(text)
        elif spec.vr == "TM":
            out[spec.column] = normalize_tm(text)
        elif spec.vr in ("IS", "US"):
            number = normalize_is(text)  # out of 64-bit range: stored, but not matchable
            out[spec.column] = number if number is not None and abs(number) < 2**63 else None
        elif spec.vr == "PN":
            out[spec.column] = text.lower()
            out[spec.column + "_fuzzy"] = fuzzy_name_column(text)
        else:
            out[spec.column] = text
    return out


def _level_json(meta: dict[str, Any], level: Level) -> dict[str, Any]:
    return {key: meta[key] for key in LEVEL_KEYS[level] if key in meta}


def _metadata(
    ds: Dataset, prefix: str, index: pixels.PixelIndex | None, threshold: int
) -> dict[str, Any]:
    pixel_vr = None
    if index is not None:
        pixel_vr = "OB" if index.encapsulated or index.bits_allocated <= 8 else "OW"
    try:
        return metadata_json(ds, prefix, pixel_vr, threshold)
    except TooDeep as exc:
        raise UnreadableInstance(exc.message) from exc

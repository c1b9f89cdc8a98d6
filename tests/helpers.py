"""Small helpers shared by tests: instances, multipart bodies, store inspection, cohorts."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from server.synthetic import generate_cohort, to_part10_bytes
from tests.live import LiveServer

_seed = [1000]


def cohort(**kwargs: Any) -> list[pydicom.Dataset]:
    """A small synthetic cohort with UIDs no other test uses."""
    _seed[0] += 1
    args = {
        "patients": 1,
        "series_per_study": 1,
        "instances_per_series": 2,
        "rows": 16,
        "columns": 16,
    }
    args.update(kwargs)
    seed = args.pop("seed", _seed[0] * 7919)
    # Round-trip through Part-10 bytes so each dataset carries its File Meta, as a client's would.
    return [
        pydicom.dcmread(io.BytesIO(to_part10_bytes(ds)))
        for ds in generate_cohort(seed=seed, **args)
    ]


CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def instance(**attrs: Any) -> Dataset:
    """One instance with File Meta (Explicit VR Little Endian), of a CT image unless
    ``SOPClassUID`` says otherwise, with new study, series and instance UIDs unless given,
    and the given attributes (keyword=value)."""
    ds = Dataset()
    ds.SOPClassUID = attrs.pop("SOPClassUID", CT_IMAGE)
    for uid in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(ds, uid, attrs.pop(uid, generate_uid()))
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def multipart_body(
    parts: list[bytes], boundary: str, part_type: str = "application/dicom"
) -> bytes:
    body = bytearray()
    for data in parts:
        body += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body)


def stow(
    server: LiveServer, parts: list[bytes], study: str | None = None, **kw: Any
) -> httpx.Response:
    boundary = kw.pop("boundary", uuid.uuid4().hex)
    ctype = kw.pop(
        "content_type", f'multipart/related; type="application/dicom"; boundary={boundary}'
    )
    body = kw.pop("body", None) or multipart_body(parts, boundary)
    url = f"{server.dicomweb}/studies" + (f"/{study}" if study else "")
    return httpx.post(url, content=body, headers={"Content-Type": ctype}, timeout=120, **kw)


def part10(ds: pydicom.Dataset) -> bytes:
    return to_part10_bytes(ds)


def store_state(server: LiveServer) -> dict[str, Any]:
    """What is in the store and index right now (to prove nothing partial was left)."""
    data: Path = server.data_dir
    blobs = sorted(p.name for p in (data / "blobs").rglob("*") if p.is_file())
    spool = sorted(str(p) for p in (data / "journal").glob("*/spool/*"))
    counts = httpx.get(f"{server.url}/healthz").json()
    return {
        "blobs": blobs,
        "spool": spool,
        "counts": {k: counts[k] for k in ("study", "series", "instance")},
    }


def seq(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return list(body.get(tag, {}).get("Value", []))


def value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None

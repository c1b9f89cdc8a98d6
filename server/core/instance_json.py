"""A parsed instance as DICOM JSON metadata (PS3.18 F.2), and its bulk data values (10.4.1.1.5).

Binary values become BulkDataURIs by the rule of :mod:`server.core.bulkdata`;
the URIs are paths of tags and 1-based item numbers under the instance's
``/bulkdata/`` resource, which :func:`read_bulk_value` follows back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from server.core import bulkdata, dicom_json
from server.core.limits import MAX_SEQUENCE_DEPTH, TooLarge
from server.errors import BadRequest, NotFound

_UNDEFINED = 0xFFFFFFFF
_READ_DEFER = 4096  # bulk reads parse values larger than this only when reached


class TooDeep(BadRequest):
    """Sequences nested deeper than MAX_SEQUENCE_DEPTH."""


def metadata_json(ds: Dataset, prefix: str, pixel_vr: str | None, threshold: int) -> dict[str, Any]:
    """PS3.18 10.4.1.1.2: the instance's metadata; ``pixel_vr`` set when it has Pixel Data."""
    bulk_prefix = prefix + "/bulkdata/"
    body = _dataset_json(ds, bulk_prefix, "", threshold, False, None, 0)
    if pixel_vr is not None:
        body["7FE00010"] = {"vr": pixel_vr, "BulkDataURI": f"{bulk_prefix}7FE00010"}
    bulkdata.sanitize(body, bulk_prefix, threshold)  # the one rule, whatever pydicom produced
    return body


def _dataset_json(
    ds: Dataset,
    bulk_prefix: str,
    path: str,
    threshold: int,
    in_icon: bool,
    codec: str | None,
    depth: int,
) -> dict[str, Any]:
    """PS3.18 F.2: a dataset as DICOM JSON, bulk binary values as BulkDataURIs."""
    if depth > MAX_SEQUENCE_DEPTH:
        raise TooDeep(f"sequences are nested more than {MAX_SEQUENCE_DEPTH} levels deep")
    if not path or 0x00080005 in ds:  # top level, or an item with its own character set
        codec = dicom_json.codec_for(_charset(ds))
    out: dict[str, Any] = {}
    for tag in sorted(ds.keys()):  # in tag order, as written (also after in-memory changes)
        key = f"{int(tag):08X}"
        raw = ds.get_item(tag)
        vr = _vr_of(raw, int(tag))
        length = _length(raw)
        undefined_un = vr == "UN" and length is None  # pydicom reads it as a sequence
        if not undefined_un and bulkdata.needs_uri(int(tag), vr, length, threshold, in_icon):
            out[key] = {"vr": vr if len(vr) == 2 else "OW", "BulkDataURI": bulk_prefix + path + key}
            continue
        if isinstance(raw, RawDataElement) and vr != "SQ":
            fast = dicom_json.raw_element_json(raw, codec)
            if fast is not None:
                out[key] = fast
                continue
        try:
            elem = ds[tag]
        except Exception:
            continue  # an element pydicom cannot decode is left out of the metadata
        if elem.VR == "SQ":
            icon = in_icon or key == bulkdata.ICON_IMAGE_SEQUENCE
            items = [
                _dataset_json(
                    item, bulk_prefix, f"{path}{key}/{i + 1}/", threshold, icon, codec, depth + 1
                )
                for i, item in enumerate(elem.value)
            ]
            out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        else:
            out[key] = _element_json(elem)
    return out


def _element_json(elem: DataElement) -> dict[str, Any]:
    try:
        out: dict[str, Any] = elem.to_json_dict(None, 2**62)
    except Exception:
        return {"vr": elem.VR}
    values = out.get("Value")
    if isinstance(values, list) and any(dicom_json.beyond_64_bits(v) for v in values):
        out["Value"] = [float(v) if dicom_json.beyond_64_bits(v) else v for v in values]
    return out


def _charset(ds: Dataset) -> Any:
    try:
        return ds.get("SpecificCharacterSet")
    except Exception:
        return ["?"]  # undecodable: forces pydicom's own conversion


def _vr_of(raw: DataElement | RawDataElement | None, tag: int) -> str:
    vr = getattr(raw, "VR", None)
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(Tag(tag)))
    except KeyError:
        return "UN"


def _length(raw: DataElement | RawDataElement | None) -> int | None:
    """Value length in bytes; None for undefined length or a value not read (deferred)."""
    if isinstance(raw, RawDataElement):
        if raw.length == _UNDEFINED:
            return None
        return int(raw.length)
    value = getattr(raw, "value", None)
    return len(value) if isinstance(value, bytes | bytearray) else 0


def read_bulk_value(path: Path, bulk_path: str, max_bytes: int | None = None) -> bytes:
    """Follow a BulkDataURI path (``TAG`` or ``SEQ/item/TAG...``, items 1-based) to a binary value.

    Values are read lazily, so only the addressed one is loaded; TooLarge past ``max_bytes``.
    """
    parts = [p for p in bulk_path.strip("/").split("/") if p]
    if not parts or len(parts) % 2 == 0 or len(parts) > 2 * MAX_SEQUENCE_DEPTH + 1:
        raise NotFound(f"bulk data path {bulk_path[:200]!r} is not a tag path")
    try:
        ds = pydicom.dcmread(path, defer_size=_READ_DEFER)
        current: Dataset = ds
        for i in range(0, len(parts) - 1, 2):
            current = current[int(parts[i], 16)].value[int(parts[i + 1]) - 1]
        raw = current.get_item(int(parts[-1], 16))
        if raw is None:
            raise KeyError(parts[-1])
        length = _length(raw)
        if max_bytes is not None and length is not None and length > max_bytes:
            raise TooLarge(f"the bulk data value holds {length} bytes, above {max_bytes}")
        elem = current[int(parts[-1], 16)]
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
        raise NotFound(f"no bulk data at {bulk_path[:200]!r}") from exc
    if not bulkdata.is_binary_vr(elem.VR) or not isinstance(elem.value, bytes | bytearray):
        raise NotFound(f"{bulk_path[:200]!r} is not a binary element")
    return bytes(elem.value)

"""Byte-level fuzzing (atheris, libFuzzer) of DICOM part parsing and multipart framing.

    python -m tests.fuzz.run TARGET [libFuzzer options] [CORPUS_DIR ...]

Targets: ``read_instance`` (a STOW part: Part-10 parsing, metadata JSON, pixel index,
bomb checks), ``element_json`` (the fast raw-element JSON converter) and ``multipart``
(the STOW body reader). Only the gateway's domain errors may escape a target; anything
else is a crash, which libFuzzer reports with the input that caused it.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import atheris
import numpy  # noqa: F401 - imported before instrumentation: only pydicom and the gateway are
import orjson  # noqa: F401
import PIL.Image  # noqa: F401

with atheris.instrument_imports(
    include=["pydicom", "server"],
    exclude=["pydicom._dicom_dict", "pydicom._private_dict", "pydicom._uid_dict"],
):
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    from server.core import bulkdata, dicom_json
    from server.core.limits import PixelLimits
    from server.core.multipart import MultipartSpooler
    from server.core.records import UnreadableInstance, read_instance
    from server.errors import MalformedMultipart, PayloadTooLarge

LIMITS = PixelLimits(max_frame_bytes=8 << 20, max_inflated_bytes=16 << 20, max_transcode_bytes=None)
_WORK = Path(tempfile.mkdtemp(prefix="gateway-fuzz-"))
_VRS = sorted({"AE", "AS", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF",
               "OL", "OV", "OW", "PN", "SH", "SL", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
               "UR", "US", "UT", "UV"})  # fmt: skip


def read_instance_target(data: bytes) -> None:
    path = _WORK / "part.dcm"
    path.write_bytes(data)
    try:
        record = read_instance(path, "0" * 64, LIMITS, patient_secret=bytes(32))
    except UnreadableInstance:
        return
    assert record.metadata.startswith(b"{")
    assert not bulkdata.blob_may_leak(record.metadata, LIMITS.inline_binary_max_bytes)


def element_json_target(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    vr = _VRS[fdp.ConsumeIntInRange(0, len(_VRS) - 1)]
    tag = Tag(fdp.ConsumeIntInRange(0x00080000, 0x7FE00010))
    codec = [None, "latin_1", "UTF8", "iso8859_2"][fdp.ConsumeIntInRange(0, 3)]
    value = fdp.ConsumeBytes(fdp.remaining_bytes())
    raw = RawDataElement(tag, vr, len(value), value, 0, False, True)
    out = dicom_json.raw_element_json(raw, codec)
    assert out is None or out["vr"] == vr


def multipart_target(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    boundary = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80))
    chunk = fdp.ConsumeIntInRange(1, 4096)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    folder = Path(tempfile.mkdtemp(dir=_WORK))
    spooler = None
    try:
        spooler = MultipartSpooler(boundary, folder, max_bytes=1 << 20, max_parts=64)
        for start in range(0, len(body), chunk):
            spooler.feed(body[start : start + chunk])
        parts = spooler.finish()
        assert 0 < len(parts) <= 64
    except (MalformedMultipart, PayloadTooLarge):
        pass
    finally:
        if spooler is not None:
            spooler.close()
        for item in folder.iterdir():
            item.unlink()
        folder.rmdir()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "read_instance": read_instance_target,
    "element_json": element_json_target,
    "multipart": multipart_target,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.run {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv.pop(1)]
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    sys.setrecursionlimit(1000)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

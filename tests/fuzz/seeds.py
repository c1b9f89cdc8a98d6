"""Seed corpora for the fuzz targets: real files, synthetic instances, bombs, hostile bodies."""

from __future__ import annotations

import uuid
from pathlib import Path

from pydicom.data import get_testdata_file

from tests.core import bombs
from tests.core.deep import deep_sequence
from tests.helpers import cohort, multipart_body, part10

SAMPLES = ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm",
           "image_dfl.dcm", "rtplan.dcm")  # fmt: skip


def instances() -> list[bytes]:
    out = [part10(ds) for ds in cohort(instances_per_series=1, rows=8, columns=8)]
    for name in SAMPLES:
        path = get_testdata_file(name)
        if isinstance(path, str) and Path(path).stat().st_size < 200_000:
            out.append(Path(path).read_bytes())
    out += [deep_sequence(70), bombs.rle(64, 64), bombs.jpeg_declaring(9000, 9000),
            bombs.j2k_declaring(9000, 9000), bombs.deflated(1 << 20)]  # fmt: skip
    return out


def multipart_bodies() -> list[bytes]:
    boundary = uuid.uuid4().hex[:16]
    small = [b"A", b"", part10(cohort(instances_per_series=1, rows=4, columns=4)[0])[:300]]
    body = multipart_body(small, boundary)
    # the target reads its boundary length and text, then a chunk size, from the front
    return [bytes([len(boundary)]) + boundary.encode() + b"\x00\x40" + body]


def write(target: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    seeds = multipart_bodies() if target == "multipart" else instances()
    if target == "element_json":
        seeds = [b"\x05\x00" + b"1.2.840.10008\\3", b"\x10\x03" + b"\x01\x02\x03\x04"]
    for n, data in enumerate(seeds):
        (folder / f"seed-{n:03d}").write_bytes(data)
    return folder


if __name__ == "__main__":
    import sys

    write(sys.argv[1], Path(sys.argv[2]))

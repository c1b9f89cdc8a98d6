"""Study and series download as a ZIP archive (what Orthanc and dcm4chee offer next to WADO-RS).

Two layouts: ``flat`` (``<SOPInstanceUID>.dcm``, the default) and ``dicomdir``
(PS3.10 media: a DICOMDIR at the root and the instances under PS3.10 file IDs,
``PT000000/ST000000/SE000000/IM000000``). The DICOMDIR is built from the
instances' headers (:mod:`server.core.dicomdir`) before the first byte goes out,
so the archive is still written as one stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pydicom

from server.core.dicomdir import DicomdirBuilder
from server.core.ziparchive import ZipStream, file_chunks
from server.errors import NotFound
from server.index.base import StoredInstance
from server.services.retrieve import RetrieveService

log = logging.getLogger("gateway.archive")
LAYOUTS = ("flat", "dicomdir")


def stream_archive(
    retrieve: RetrieveService,
    instances: list[StoredInstance],
    layout: str,
    transfer_syntax: str | None,
) -> Iterator[bytes]:
    """The instances as a stored ZIP, in ``layout``; sent as stored unless a syntax is asked."""
    names = {inst.sop_uid: f"{inst.sop_uid}.dcm" for inst in instances}
    dicomdir = None
    if layout == "dicomdir":
        dicomdir, names = _dicomdir(retrieve, instances)
    archive = ZipStream()
    if dicomdir is not None:
        yield from archive.add_bytes("DICOMDIR", dicomdir)
    for inst in instances:
        yield from _entry(retrieve, archive, inst, names[inst.sop_uid], transfer_syntax)
    yield from archive.close()


def _entry(
    retrieve: RetrieveService,
    archive: ZipStream,
    inst: StoredInstance,
    name: str,
    transfer_syntax: str | None,
) -> Iterator[bytes]:
    data, _ = retrieve.converted(inst, transfer_syntax or "*")
    if data is not None:
        yield from archive.add_bytes(name, data)
        return
    try:
        f = retrieve.store.open(inst.blob_key)
    except NotFound:
        log.error("blob %s of %s is missing; run 'check'", inst.blob_key, inst.sop_uid)
        return
    with f:
        yield from archive.add_file(name, inst.size, file_chunks(f))


def _dicomdir(
    retrieve: RetrieveService, instances: list[StoredInstance]
) -> tuple[bytes, dict[str, str]]:
    """PS3.10 8.6 / PS3.3 F: the DICOMDIR and each instance's file ID, from the headers."""
    builder = DicomdirBuilder()
    names: dict[str, str] = {}
    for inst in instances:
        try:
            with retrieve.store.open(inst.blob_key) as f:
                header = pydicom.dcmread(f, stop_before_pixels=True)
            names[inst.sop_uid] = builder.add(header, inst.transfer_syntax)
        except (NotFound, OSError, ValueError, AttributeError, KeyError) as exc:
            log.warning("instance %s left out of the DICOMDIR: %s", inst.sop_uid, exc)
            names[inst.sop_uid] = f"OTHER/{inst.sop_uid}.dcm"
    return builder.encode(), names

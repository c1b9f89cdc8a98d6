"""QIDO-RS search and WADO-RS retrieval (PS3.18 10.4, 10.6) over the index and blob store."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import orjson

from server.core import bulkdata, encode, pixels, rendering
from server.core.decoded_size import check_frame_decodable, check_instance_decodable
from server.core.instance_json import read_bulk_value
from server.core.limits import PixelLimits
from server.core.multipart import close_delimiter, coalesce, iter_file, write_part_header
from server.core.qido import QidoQuery
from server.core.transcode import (
    is_lossy,
    transcode_frame,
    transcode_instance,
    transcode_to_explicit_le,
)
from server.errors import BadRequest, Forbidden, NotAcceptable, NotFound, PayloadTooLarge
from server.index.base import Index, Scope, SearchPage, StoredInstance
from server.security.enforce import require
from server.security.model import Action, Principal
from server.storage.base import BlobStore
from server.storage.bodies import body_key

log = logging.getLogger("gateway.retrieve")
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
CHUNK = 4 * 1024 * 1024
BATCH = 1024 * 1024  # bytes per chunk handed to the server, at least (see coalesce)


class StoredFile(NamedTuple):
    """A whole stored file that goes out as it is (the server may send it without a copy);
    a plain (path, size) tuple for the server (``server/serving.py``)."""

    path: str
    size: int


@dataclass(frozen=True)
class FramePart:
    content_type: str
    data: bytes


class InSituOnly(Forbidden):
    """The caller sees the study's metadata, but its agreement releases no pixel data (403)."""


class RetrieveService:
    def __init__(self, store: BlobStore, index: Index, limits: PixelLimits | None = None) -> None:
        self.store = store
        self.index = index
        self.limits = limits or PixelLimits()

    # -- authorisation -----------------------------------------------------
    def authorize(self, principal: Principal, scope: Scope, action: Action) -> None:
        """The study must be in a dataset the caller may ``action``; else 404 (no existence hint).

        A caller who may read the metadata but not retrieve (an in-situ-processing grant)
        gets 403 for instances, frames, rendered images and bulk data: it already knows the
        study exists, and 404 would only make viewers show black viewports.
        """
        require(principal, "ImagingStudy", "r")
        if principal.unrestricted:
            return
        exists, dataset = self.index.study_dataset(scope.study_uid)
        if exists and principal.allows(action, dataset):
            return
        if exists and action is Action.RETRIEVE and principal.allows(Action.METADATA, dataset):
            raise InSituOnly(
                "the data-access agreement for this study's dataset allows in-situ processing "
                "only: metadata may be read, but instances, frames, rendered images and bulk "
                "data are not released"
            )
        raise NotFound(_not_found(scope))

    # -- QIDO --------------------------------------------------------------
    def search(
        self, query: QidoQuery, dicomweb_root: str, principal: Principal
    ) -> tuple[list[dict[str, Any]], bool]:
        """PS3.18 10.6.1: matching objects with their RetrieveURL, within the caller's datasets."""
        require(principal, "ImagingStudy", "s")
        query = replace(query, datasets=principal.datasets_for(Action.SEARCH))
        page: SearchPage = self.index.search(query)
        threshold = self.limits.inline_binary_max_bytes
        for row in page.rows:
            prefix = bulkdata.instance_prefix(row)
            bulkdata.sanitize(row, dicomweb_root + prefix if prefix else None, threshold)
            bulkdata.absolute_uris(row, dicomweb_root)
            url = _retrieve_url(row, dicomweb_root, query)
            if url:
                row["00081190"] = {"vr": "UR", "Value": [url]}
        return page.rows, page.has_more

    # -- WADO --------------------------------------------------------------
    def instances(self, scope: Scope) -> list[StoredInstance]:
        found = self.index.instances(scope)
        if not found:
            raise NotFound(_not_found(scope))
        return found

    def stream_instances(
        self, instances: list[StoredInstance], boundary: str, transfer_syntax: str | None
    ) -> Iterator[bytes]:
        """PS3.18 10.4.1.1.1: instances as multipart/related parts, streamed from storage.

        Parts are framed into chunks of at least ``BATCH`` bytes (several small instances
        a chunk: each chunk is one hand-off between the reading thread and the server's
        event loop); an instance larger than ``CHUNK`` is read in pieces of that size.
        """
        return coalesce(self._parts(instances, boundary, transfer_syntax), BATCH)

    def stored_body(
        self, instances: list[StoredInstance], transfer_syntax: str | None
    ) -> tuple[str, list[bytes | StoredFile]] | None:
        """(boundary, pieces) of the body :meth:`stream_instances` would stream, as framing
        bytes and whole stored files, or one kept body file
        (``server/storage/bodies.py``) when the same instances were sent so before; None
        unless every instance goes out as stored, from a file on this machine."""
        if transfer_syntax != "*" and not all(
            self._wanted(inst, transfer_syntax) is None for inst in instances
        ):
            return None
        bodies = self.store.kept_bodies()
        key = None
        if bodies is not None and len(instances) > 1:
            key = body_key((inst.blob_key, inst.transfer_syntax) for inst in instances)
            kept = bodies.get(key)
            if kept is not None:
                return kept.boundary, [StoredFile(kept.path, kept.size)]
        boundary = uuid.uuid4().hex
        pieces = self._pieces(instances, boundary)
        if pieces is None:
            return None
        whole = len(pieces) == 2 * len(instances) + 1  # no blob missing
        if bodies is not None and key is not None and whole and bodies.want(key):
            bodies.put_later(key, pieces, [inst.blob_key for inst in instances])
        return boundary, pieces

    def _pieces(
        self, instances: list[StoredInstance], boundary: str
    ) -> list[bytes | StoredFile] | None:
        """The body of ``instances`` as stored, as framing bytes and whole stored files, so
        that its length is known before the first byte; None unless every file is on this
        machine. A blob missing now leaves out its part, as in the stream (and the length
        does not count it)."""
        files = self.store.local_files([inst.blob_key for inst in instances])
        if files is None:
            return None
        pieces: list[bytes | StoredFile] = []
        heads: dict[tuple[str, int], bytes] = {}  # the slices of a series mostly share both
        tail = b""
        for inst, found in zip(instances, files, strict=True):
            if found is None:
                log.error("blob %s of %s is missing; run 'check'", inst.blob_key, inst.sop_uid)
                continue
            key = (inst.transfer_syntax, found[1])
            head = heads.get(key)
            if head is None:
                ctype = f"application/dicom; transfer-syntax={key[0]}"
                head = heads[key] = b"\r\n" + write_part_header(boundary, ctype, key[1])
            pieces.append(head if tail else head[2:])
            pieces.append(StoredFile(*found))
            tail = b"\r\n"
        pieces.append(tail + close_delimiter(boundary))
        return pieces

    def _parts(
        self, instances: list[StoredInstance], boundary: str, transfer_syntax: str | None
    ) -> Iterator[bytes]:
        for inst in instances:
            data, ts = self.converted(inst, transfer_syntax)
            size = len(data) if data is not None else inst.size
            head = write_part_header(boundary, f"application/dicom; transfer-syntax={ts}", size)
            if data is not None:
                yield head
                yield data
                yield b"\r\n"
                continue
            try:
                with self.store.open(inst.blob_key) as f:
                    yield head  # after open(): a missing blob leaves out the whole part
                    if inst.size <= CHUNK:
                        yield f.read()
                    else:
                        yield from iter_file(f, CHUNK)
            except NotFound:  # raised by open(), before any byte of this part was sent
                log.error("blob %s of %s is missing; run 'check'", inst.blob_key, inst.sop_uid)
                continue
            yield b"\r\n"
        yield close_delimiter(boundary)

    def converted(
        self, inst: StoredInstance, transfer_syntax: str | None
    ) -> tuple[bytes | None, str]:
        """Bytes re-encoded for the wanted syntax, or None to send the stored bytes."""
        ts = inst.transfer_syntax
        wanted = self._wanted(inst, transfer_syntax)
        if wanted is None:
            return None, ts
        path = self.store.path(inst.blob_key)
        if wanted in encode.TARGETS:  # checked by check_syntax before the response started
            return transcode_instance(path, wanted), wanted
        if inst.pixel_index is not None:
            index = pixels.PixelIndex.from_bytes(inst.pixel_index)
            if not check_instance_decodable(path, index, self.limits):
                return None, ts  # too large to decode in memory: sent as stored
        implicit = wanted == IMPLICIT_LE
        data = transcode_to_explicit_le(path, implicit)
        return (data, wanted if implicit else EXPLICIT_LE) if data is not None else (None, ts)

    @staticmethod
    def _wanted(inst: StoredInstance, transfer_syntax: str | None) -> str | None:
        """The syntax ``inst`` must be converted to for ``transfer_syntax``; None: as stored."""
        ts = inst.transfer_syntax
        wanted = EXPLICIT_LE if transfer_syntax is None else transfer_syntax
        if transfer_syntax is None and is_lossy(ts):
            wanted = ts  # PS3.18 8.7.3.5.2: lossy data may be sent as received
        return None if wanted in ("*", ts) else wanted

    def check_syntax(self, instances: list[StoredInstance], transfer_syntax: str | None) -> None:
        """PS3.18 8.7.3.5: NotAcceptable (406) before any byte is sent unless every instance
        can go out in ``transfer_syntax`` (as stored, Explicit VR LE, or an encoder target)."""
        if transfer_syntax in (None, "*", EXPLICIT_LE, IMPLICIT_LE):
            return
        offered = f"as stored (*), {EXPLICIT_LE}, {IMPLICIT_LE}, {encode.supported_list()}"
        for inst in instances:
            if inst.transfer_syntax == transfer_syntax:
                continue
            if transfer_syntax not in encode.TARGETS:
                raise NotAcceptable(
                    f"instances cannot be converted to {transfer_syntax[:80]}; offered: {offered}"
                )
            if inst.pixel_index is None:
                continue
            index = self._pixel_index(inst)
            reason = encode.why_not(transfer_syntax, index.bits_allocated,
                                    index.bits_allocated, index.samples_per_pixel)  # fmt: skip
            path = self.store.path(inst.blob_key)
            if reason is None and not check_instance_decodable(path, index, self.limits):
                reason = "it is too large to decode in memory (GATEWAY_PIXELS__*)"
            if reason:
                raise NotAcceptable(f"instance {inst.sop_uid} cannot be sent in "
                                    f"{transfer_syntax}: {reason}; offered: {offered}")  # fmt: skip

    def metadata(self, scope: Scope, dicomweb_root: str) -> Iterator[bytes]:
        """PS3.18 10.4.1.1.2: precomputed metadata, BulkDataURIs made absolute."""
        blobs = self.index.metadata(scope)
        first = next(blobs, None)
        if first is None:
            raise NotFound(_not_found(scope))
        needle, absolute = b'"BulkDataURI":"', b'"BulkDataURI":"' + dicomweb_root.encode()

        def generate() -> Iterator[bytes]:
            yield b"[" + self._safe_metadata(first).replace(needle, absolute)
            for blob in blobs:
                yield b"," + self._safe_metadata(blob).replace(needle, absolute)
            yield b"]"

        return coalesce(generate(), BATCH)

    def _safe_metadata(self, blob: bytes) -> bytes:
        """Stored metadata with the bulk data rule applied again (records of older versions)."""
        threshold = self.limits.inline_binary_max_bytes
        if not bulkdata.blob_may_leak(blob, threshold):
            return blob
        meta = orjson.loads(blob)
        bulkdata.sanitize(meta, bulkdata.instance_prefix(meta), threshold)
        return orjson.dumps(meta)

    def one_instance(self, scope: Scope) -> StoredInstance:
        found = self.instances(scope)
        return found[0]

    def frames(
        self,
        inst: StoredInstance,
        numbers: list[int],
        want_stored: bool,
        media_type: str | None,
        target: str | None = None,
    ) -> list[FramePart]:
        """PS3.18 10.4.1.1.3: frames of ``inst`` (from :meth:`one_instance`) as stored
        (compressed) or decoded to native bytes; each stored frame is a seek and a read."""
        index = self._pixel_index(inst)
        stored_type = pixels.frame_media_type(inst.transfer_syntax)
        parts: list[FramePart] = []
        for number in numbers:
            if number < 1 or number > index.number_of_frames:
                raise NotFound(
                    f"frame {number} does not exist (the instance has {index.number_of_frames})"
                )
        native = not index.encapsulated and index.transfer_syntax != pixels.EXPLICIT_VR_BE
        if target is not None and target != inst.transfer_syntax:
            return [self._encoded_frame(inst, index, n, target) for n in numbers]
        if target is not None:
            want_stored = True
        elif media_type not in (None, stored_type, "application/octet-stream"):
            raise NotAcceptable(
                f"frames of this instance are stored as {stored_type}; {media_type} cannot be produced"
            )
        for number in numbers:
            if native or want_stored:
                data = self._read_frame(inst, index, number)
                label = EXPLICIT_LE if native else inst.transfer_syntax
                ctype = f"{stored_type}; transfer-syntax={label}"
            else:
                data = self._decode_frame(inst, index, number)
                ctype = "application/octet-stream; transfer-syntax=" + EXPLICIT_LE
            parts.append(FramePart(ctype, data))
        return parts

    def _encoded_frame(
        self, inst: StoredInstance, index: pixels.PixelIndex, number: int, target: str
    ) -> FramePart:
        """PS3.18 8.7.3.5.3: one frame decoded, then encoded in ``target``."""
        path = self.store.path(inst.blob_key)
        check_frame_decodable(path, index, number, self.limits)
        frame = pixels.decode_frame_array(path, index, number, rgb=True)
        data = transcode_frame(path, frame, target)
        return FramePart(f"{encode.TARGETS[target].media_type}; transfer-syntax={target}", data)

    def _pixel_index(self, inst: StoredInstance) -> pixels.PixelIndex:
        if inst.pixel_index is None:
            raise NotFound("the instance has no pixel data frames")
        return pixels.PixelIndex.from_bytes(inst.pixel_index)

    def _read_frame(self, inst: StoredInstance, index: pixels.PixelIndex, number: int) -> bytes:
        if not index.frames:
            return self._decode_frame(inst, index, number)
        with self.store.open(inst.blob_key) as f:
            return pixels.read_frame(f, index, number)

    def _decode_frame(self, inst: StoredInstance, index: pixels.PixelIndex, number: int) -> bytes:
        path = self.store.path(inst.blob_key)
        check_frame_decodable(path, index, number, self.limits)
        return pixels.decode_frame_native(path, index, number)

    def bulk_pixel_data(self, scope: Scope) -> list[FramePart]:
        inst = self.one_instance(scope)
        index = self._pixel_index(inst)
        numbers = list(range(1, index.number_of_frames + 1))
        if index.encapsulated and not pixels.is_video(index.transfer_syntax):
            return self.frames(inst, numbers, want_stored=True, media_type=None)
        if not index.frames:  # deflated: every frame is inflated
            check_frame_decodable(self.store.path(inst.blob_key), index, 1, self.limits)
        with self.store.open(inst.blob_key) as f:
            data = pixels.read_pixel_data(f, index)
        media = pixels.frame_media_type(index.transfer_syntax)
        return [FramePart(f"{media}; transfer-syntax={index.transfer_syntax}", data)]

    def bulk_element(self, scope: Scope, path: str) -> FramePart:
        """PS3.18 10.4.1.1.5: the value of a (possibly nested) binary element."""
        inst = self.one_instance(scope)
        cap = self.limits.max_frame_bytes
        value = read_bulk_value(self.store.path(inst.blob_key), path, cap)
        return FramePart("application/octet-stream", value)

    def render(self, scope: Scope, frame: int, params: rendering.RenderParams) -> bytes:
        """PS3.18 10.4.1.1.4 rendered resources."""
        inst = self.one_instance(scope)
        if inst.pixel_index is None:
            raise NotAcceptable("the instance has no pixel data to render")
        index = self._pixel_index(inst)
        path = self.store.path(inst.blob_key)
        return rendering.render_frame(path, frame, params, self.limits, index)

    def render_each(
        self, instances: list[StoredInstance], params: rendering.RenderParams
    ) -> Iterator[bytes]:
        """PS3.18 10.4.1.1.4 rendered study/series: each image instance's first frame, in
        order; instances without pixel data or that cannot be rendered are left out."""
        for inst in instances:
            if inst.pixel_index is None:
                continue
            index = pixels.PixelIndex.from_bytes(inst.pixel_index)
            try:
                yield rendering.render_frame(
                    self.store.path(inst.blob_key), 1, params, self.limits, index
                )
            except (NotAcceptable, NotFound, PayloadTooLarge, BadRequest) as exc:
                log.warning("rendered series: %s left out: %s", inst.sop_uid, exc)

    def thumbnail(self, scope: Scope, size: int, media_type: str) -> bytes:
        """PS3.18 10.4.1.1.5: a thumbnail of the middle image of the scope."""
        candidates = [i for i in self.instances(scope) if i.pixel_index is not None]
        if not candidates:
            raise NotFound("no image in this scope to make a thumbnail from")
        inst = candidates[len(candidates) // 2]
        index = pixels.PixelIndex.from_bytes(inst.pixel_index or b"")
        frame = (index.number_of_frames + 1) // 2 if scope.sop_uid is None else 1
        path = self.store.path(inst.blob_key)
        return rendering.render_thumbnail(path, frame, size, media_type, self.limits, index)


def _not_found(scope: Scope) -> str:
    if scope.sop_uid:
        return f"instance {scope.sop_uid} not found"
    if scope.series_uid:
        return f"series {scope.series_uid} not found"
    return f"study {scope.study_uid} not found"


def _value(row: dict[str, Any], tag: str) -> str | None:
    values = row.get(tag, {}).get("Value")
    return str(values[0]) if values else None


def _retrieve_url(row: dict[str, Any], root: str, query: QidoQuery) -> str | None:
    study = _value(row, "0020000D") or query.study_uid
    series = _value(row, "0020000E") or query.series_uid
    sop = _value(row, "00080018")
    if query.level.value == "study" and study:
        return f"{root}/studies/{study}"
    if query.level.value == "series" and study and series:
        return f"{root}/studies/{study}/series/{series}"
    if study and series and sop:
        return f"{root}/studies/{study}/series/{series}/instances/{sop}"
    return None

"""A DIMSE peer as a pull source (PS3.4 Annex C, Study Root): C-FIND, then C-GET or C-MOVE.

Enumeration is C-FIND at STUDY, SERIES and IMAGE level. Instances are fetched with C-GET
by default: the peer sends them back on the association the gateway opened, so only the
peer's port has to be reachable and only the gateway's AE title must be known to it.
With ``move`` the gateway asks for a C-MOVE to its own AE title and receives the
C-STOREs on a Storage SCP this source opens for the duration of the pull (the peer must
know that AE title with this host and port, e.g. Orthanc's ``DicomModalities``); it
accepts only the peer's AE title and only the instances asked for.

A study never fetched before is retrieved with one study-level request; a study partly
fetched by an earlier run is retrieved instance by instance (IMAGE level), so a resumed
pull asks for nothing it already has. Each SOP class found is proposed once per transfer
syntax, so the peer can send every instance as it stores it (no transcoding).

DICOM TLS (PS3.15 B.9): with ``tls`` every association the source opens is TLS, the
peer's certificate verified against that context's CAs and its host name; with ``move``,
``move_tls`` makes the receiving Storage SCP speak only TLS too.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from server.dimse.service import QUERY_TRANSFER_SYNTAXES, STORAGE_TRANSFER_SYNTAXES
from server.peers.base import Deliver, Pacer, PeerError, RemoteInstance, Selection

log = logging.getLogger("gateway.pull")
_PENDING = (0xFF00, 0xFF01)
_MAX_CONTEXTS = 127  # PS3.8 9.3.2.2: odd context ids 1..255; one is the Q/R context


class DimseSource:
    """Study Root Q/R against ``called_ae`` at ``host:port``, as ``calling_ae``."""

    def __init__(
        self, called_ae: str, host: str, port: int, *, calling_ae: str,
        move: bool = False, move_port: int | None = None, move_host: str = "0.0.0.0",
        timeout: float = 60.0, pacer: Pacer | None = None,
        tls: ssl.SSLContext | None = None, move_tls: ssl.SSLContext | None = None,
    ) -> None:  # fmt: skip
        self.called_ae, self.host, self.port = called_ae, host, port
        self.calling_ae = calling_ae
        self.name = f"dicom://{called_ae}@{host}:{port}"
        self.move, self.move_port, self.move_host = move, move_port, move_host
        self.timeout = timeout
        self.pacer = pacer or Pacer(None)
        self.tls, self.move_tls = tls, move_tls
        self._classes: dict[str, str] = {}  # SOP Instance UID -> SOP Class UID (from C-FIND)
        self._studies: dict[str, set[str]] = {}  # Study UID -> its SOP Instance UIDs (C-FIND)

    def close(self) -> None:
        pass

    # -- C-FIND ---------------------------------------------------------------------------

    def search_for_studies(self, selection: Selection) -> list[str]:
        query = _query("STUDY", StudyInstanceUID="\\".join(selection.studies))
        if selection.patient_id is not None:
            query.PatientID = selection.patient_id
        if (dates := selection.date_range()) is not None:
            query.StudyDate = dates
        found = [str(m.get("StudyInstanceUID", "")) for m in self._find(query)]
        return list(dict.fromkeys(uid for uid in found if uid))

    def search_for_instances(self, study_uid: str) -> list[RemoteInstance]:
        out: list[RemoteInstance] = []
        series = [str(m.get("SeriesInstanceUID", "")) for m in
                  self._find(_query("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=""))]  # fmt: skip
        for series_uid in dict.fromkeys(s for s in series if s):
            query = _query("IMAGE", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid,
                           SOPInstanceUID="", SOPClassUID="")  # fmt: skip
            for match in self._find(query):
                sop = str(match.get("SOPInstanceUID", ""))
                if sop:
                    self._classes[sop] = str(match.get("SOPClassUID", ""))
                    out.append(RemoteInstance(study_uid, series_uid, sop))
        self._studies[study_uid] = {i.sop_uid for i in out}
        return list(dict.fromkeys(out))

    def _find(self, query: Dataset) -> Iterator[Dataset]:
        ae = self._ae()
        ae.add_requested_context(
            StudyRootQueryRetrieveInformationModelFind, QUERY_TRANSFER_SYNTAXES
        )
        assoc = self._associate(ae)
        try:
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            ):
                code = int(getattr(status, "Status", -1))
                if code in _PENDING and identifier is not None:
                    yield identifier
                elif code != 0x0000:
                    raise PeerError(f"{self.name}: C-FIND failed (status 0x{code & 0xFFFF:04X})")
        finally:
            assoc.release()

    # -- C-GET / C-MOVE -------------------------------------------------------------------

    def retrieve_instances(
        self, study_uid: str, wanted: list[RemoteInstance], spool: Path, deliver: Deliver
    ) -> dict[str, str]:
        expected = {i.sop_uid for i in wanted}
        received: set[str] = set()
        counter = iter(range(1 << 30))
        lock = threading.Lock()

        def on_store(event: Any) -> int:
            sop = str(event.request.AffectedSOPInstanceUID or "")
            with lock:
                if sop not in expected or sop in received:
                    return 0xA900  # not asked for (or twice): refused, nothing stored
                received.add(sop)
                n = next(counter)
            self.pacer.wait()
            path = spool / f"dimse-{n:06d}.dcm"
            data = event.encoded_dataset(include_meta=True)
            path.write_bytes(data)
            deliver(sop, path, _sha256(data))
            return 0x0000

        whole = expected == self._studies.get(study_uid)
        queries = ([_query("STUDY", StudyInstanceUID=study_uid)] if whole else
                   [_query("IMAGE", StudyInstanceUID=i.study_uid, SeriesInstanceUID=i.series_uid,
                           SOPInstanceUID=i.sop_uid) for i in wanted])  # fmt: skip
        try:
            if self.move:
                statuses = self._move(queries, on_store, {i.sop_uid for i in wanted})
            else:
                statuses = self._get(queries, on_store, wanted)
        except PeerError as exc:
            statuses = [exc.message]
        reason = "not received" + (f" ({'; '.join(statuses)})" if statuses else "")
        return {sop: reason for sop in expected - received}

    def _get(
        self, queries: list[Dataset], on_store: Any, wanted: list[RemoteInstance]
    ) -> list[str]:
        """PS3.4 C.4.3: C-GET on one association; the C-STOREs come back on it."""
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet, QUERY_TRANSFER_SYNTAXES)
        classes = sorted({self._classes.get(i.sop_uid, "") for i in wanted} - {""})
        syntaxes = STORAGE_TRANSFER_SYNTAXES[: max(1, _MAX_CONTEXTS // max(len(classes), 1))]
        for sop_class in classes[:_MAX_CONTEXTS]:
            for syntax in syntaxes:
                ae.add_requested_context(sop_class, [syntax])
        roles = [build_role(c, scp_role=True) for c in classes[:_MAX_CONTEXTS]]
        assoc = self._associate(ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        try:
            return self._retrieve(assoc, queries, StudyRootQueryRetrieveInformationModelGet, None)
        finally:
            assoc.release()

    def _move(self, queries: list[Dataset], on_store: Any, sops: set[str]) -> list[str]:
        """PS3.4 C.4.2: C-MOVE to our own AE title; a Storage SCP receives for the pull's time."""
        scp = self._ae()
        scp.require_calling_aet = [self.called_ae]
        for sop_class in sorted({self._classes.get(s, "") for s in sops} - {""}):
            scp.add_supported_context(sop_class, STORAGE_TRANSFER_SYNTAXES)
        if self.move_port is None:
            raise PeerError("C-MOVE needs the port the peer sends to (--move-port)")
        try:
            server = scp.start_server((self.move_host, self.move_port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, on_store)],
                                      ssl_context=self.move_tls)  # fmt: skip
        except OSError as exc:
            raise PeerError(f"cannot listen on port {self.move_port} for C-MOVE: {exc}") from exc
        assert server is not None
        try:
            ae = self._ae()
            ae.add_requested_context(
                StudyRootQueryRetrieveInformationModelMove, QUERY_TRANSFER_SYNTAXES
            )
            assoc = self._associate(ae)
            try:
                return self._retrieve(assoc, queries, StudyRootQueryRetrieveInformationModelMove,
                                      self.calling_ae)  # fmt: skip
            finally:
                assoc.release()
        finally:
            server.shutdown()

    def _retrieve(
        self, assoc: Any, queries: list[Dataset], model: str, move_to: str | None
    ) -> list[str]:
        """Send each query; the final statuses that were not Success."""
        problems: list[str] = []
        for query in queries:
            if move_to is None:
                responses = assoc.send_c_get(query, model)
            else:
                responses = assoc.send_c_move(query, move_to, model)
            for status, _ in responses:
                code = int(getattr(status, "Status", -1))
                if code in _PENDING:
                    continue
                if code != 0x0000:
                    problems.append(
                        f"{'C-MOVE' if move_to else 'C-GET'} status 0x{code & 0xFFFF:04X}"
                    )
            if not assoc.is_established:
                problems.append("association lost")
                break
        return list(dict.fromkeys(problems))

    # -- association ----------------------------------------------------------------------

    def _ae(self) -> AE:
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.maximum_pdu_size = 0
        return ae

    def _associate(self, ae: AE, **kwargs: Any) -> Any:
        if self.tls is not None:
            kwargs["tls_args"] = (self.tls, self.host)
        assoc = ae.associate(self.host, self.port, ae_title=self.called_ae, **kwargs)
        if not assoc.is_established:
            state = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
            raise PeerError(f"{self.name}: association {state}")
        return assoc


def _query(level: str, **keys: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()

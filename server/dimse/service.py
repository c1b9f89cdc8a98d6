"""The DIMSE listener: one pynetdicom Application Entity, started by ``imaging-gateway serve``.

Every association runs in its own thread (a slow peer holds only its own), at most
``max_associations`` at once (further requests are rejected, transient, local limit
exceeded); a peer silent for ``idle_timeout`` seconds is aborted. Only calling AE
titles registered with ``imaging-gateway clients add --ae-title`` are accepted; any
other is rejected at association (A-ASSOCIATE-RJ, permanent, calling AE title not
recognised) and audited.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import ssl
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import ThreadedAssociationServer

from server.dimse.find import handle_find
from server.dimse.identifiers import install as install_identifiers
from server.dimse.move import handle_get, handle_move
from server.dimse.processes import SLOT_ATTR, SharedLoad, on_close, on_open, wait_for_turn
from server.dimse.reactor import install as install_wakeups
from server.dimse.reactor import on_connection_close, on_connection_open
from server.dimse.session import REFUSED_NOT_AUTHORISED, SUCCESS, audit, calling_ae
from server.dimse.store import OUT_OF_RESOURCES, handle_store
from server.dimse.store import on_connection_close as store_closed
from server.settings import DimseSettings

if TYPE_CHECKING:
    from server.app import Gateway

log = logging.getLogger("gateway.dimse")

# Transfer syntaxes a C-STORE may arrive in (PS3.5 Annex A / PS3.6 Table A-1).
STORAGE_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
]
QUERY_TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
VERIFICATION = "1.2.840.10008.1.1"
# PS3.4 C.6: Patient Root (…2.1.x) and Study Root (…2.2.x) FIND (1), MOVE (2), GET (3)
QUERY_RETRIEVE = [f"1.2.840.10008.5.1.4.1.2.{root}.{op}" for root in (1, 2) for op in (1, 2, 3)]
_NEVER = "\x00"  # not an AE title: with no AE registered, nobody is accepted


class RegisteredPeersAE(AE):
    """An AE whose accepted calling AE titles are the registry's, read at each request."""

    def __init__(self, gateway: Gateway, ae_title: str) -> None:
        super().__init__(ae_title=ae_title)
        self._gateway = gateway

    @property
    def require_calling_aet(self) -> list[str]:
        titles = [n.ae_title for n in self._gateway.clients.dicom_nodes()]
        return titles or [_NEVER]

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        pass  # the registry decides (imaging-gateway clients add --ae-title)


class _SupportedContext(PresentationContext):
    """A supported context whose deep copy copies only what negotiation may change.

    pynetdicom deep-copies the listener's supported contexts for every association it
    accepts; with 170 storage classes in 15 transfer syntaxes, that reconstructed 2,550
    UID objects per association (tens of milliseconds: in every ``findscu`` query and
    ``echoscu``). Every attribute is a scalar or an immutable UID except the list of
    transfer syntaxes, which gets a list of its own: the same independence for less.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> _SupportedContext:
        twin = copy.copy(self)
        twin._transfer_syntax = list(self._transfer_syntax)
        return twin


def cheap_copies(contexts: list[PresentationContext]) -> None:
    for context in contexts:
        assert type(context) is PresentationContext
        context.__class__ = _SupportedContext


class SharedLimitAE(RegisteredPeersAE):
    """An AE whose association limit is the shared slots' (one of several listener processes).

    pynetdicom rejects an association (transient, local limit exceeded) when its own
    process has more acceptors than ``maximum_associations``; it asks from the
    association's thread, so the answer here is that association's: unlimited if it
    holds a shared slot (``processes.on_open``), none if every slot was taken.
    """

    @property
    def maximum_associations(self) -> int:
        holds = getattr(threading.current_thread(), SLOT_ATTR, None) is not None
        return 1_000_000 if holds else 0

    @maximum_associations.setter
    def maximum_associations(self, value: int) -> None:
        pass  # the shared slots decide (GATEWAY_DIMSE__MAX_ASSOCIATIONS of them)


class _SharedSocketServer(ThreadedAssociationServer):
    """An association server on a listening socket shared with other processes."""

    shared: socket.socket
    load: SharedLoad

    def server_bind(self) -> None:
        if self.socket is not None:
            self.socket.close()  # the one socketserver made: the shared one replaces it
        self.socket = self.shared
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        pass  # already listening

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        if not wait_for_turn(self.shared, self.load):
            raise BlockingIOError("a less busy process took the connection")
        client, address = self.shared.accept()  # BlockingIOError if another process was first
        client.setblocking(True)
        self.load.accepted()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True)
        return client, address

    def server_close(self) -> None:
        pass  # the socket belongs to the serving process: other processes still accept on it


def build_ae(gateway: Gateway, shared_limit: bool = False) -> AE:
    settings = gateway.settings.dimse
    ae_class = SharedLimitAE if shared_limit else RegisteredPeersAE
    ae = ae_class(gateway, settings.ae_title)
    ae.require_called_aet = True
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu
    ae.network_timeout = settings.idle_timeout
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.add_supported_context(VERIFICATION, QUERY_TRANSFER_SYNTAXES)
    for sop_class in QUERY_RETRIEVE:
        ae.add_supported_context(sop_class, QUERY_TRANSFER_SYNTAXES)
    for cx in AllStoragePresentationContexts:
        # SCP role for C-STORE; the peer's SCP role accepted too, for C-GET sub-operations
        assert cx.abstract_syntax is not None
        ae.add_supported_context(
            cx.abstract_syntax, STORAGE_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
        )
    return ae


def tls_context(settings: DimseSettings) -> ssl.SSLContext | None:
    """PS3.15 B.9 (BCP 195): TLS 1.2 or later; with a CA file, client certificates required."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    if settings.tls_ca_file is not None:
        context.load_verify_locations(str(settings.tls_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _on_rejected(event: Any, gateway: Gateway) -> None:
    """Audit a rejection: unknown calling AE or wrong called AE (refused), else the limit."""
    known = gateway.clients.dicom_node(calling_ae(event)) is not None
    request = getattr(event.assoc.requestor, "primitive", None)
    called = str(getattr(request, "called_ae_title", "") or "").strip()
    refused = not known or called != gateway.settings.dimse.ae_title
    log.info("association from %r to %r rejected", calling_ae(event), called)
    audit(gateway, event, None, action="associate", method="A-ASSOCIATE",
          status=REFUSED_NOT_AUTHORISED if refused else OUT_OF_RESOURCES)  # fmt: skip


def _on_accepted(event: Any, gateway: Gateway) -> None:
    log.info("association from %r accepted (process %d)", calling_ae(event), os.getpid())
    audit(gateway, event, None, action="associate", method="A-ASSOCIATE", status=SUCCESS)


def _echo(event: Any) -> int:
    return SUCCESS


class DimseService:
    """Start and stop the listener (non-blocking; associations run in their own threads)."""

    def __init__(self, gateway: Gateway, load: SharedLoad | None = None) -> None:
        self.gateway = gateway
        self.load = load  # one of several listener processes (server.dimse.processes)
        self.ae = build_ae(gateway, shared_limit=load is not None)
        self.server: ThreadedAssociationServer | None = None
        # pynetdicom's reactors wait for work instead of polling every millisecond
        self.wakeups = install_wakeups()
        install_identifiers()  # C-FIND answers encoded from index rows pass through as they are

    def handlers(self) -> list[Any]:
        gw = self.gateway
        return [
            (evt.EVT_C_ECHO, _echo),
            (evt.EVT_C_STORE, partial(handle_store, gateway=gw)),
            (evt.EVT_C_FIND, partial(handle_find, gateway=gw)),
            (evt.EVT_C_MOVE, partial(handle_move, gateway=gw)),
            (evt.EVT_C_GET, partial(handle_get, gateway=gw)),
            (evt.EVT_REJECTED, partial(_on_rejected, gateway=gw)),
            (evt.EVT_ACCEPTED, partial(_on_accepted, gateway=gw)),
            (evt.EVT_CONN_CLOSE, partial(store_closed, gateway=gw)),
            *(
                [(evt.EVT_CONN_OPEN, on_connection_open), (evt.EVT_CONN_CLOSE, on_connection_close)]
                if self.wakeups
                else []
            ),
            *(
                [
                    (evt.EVT_CONN_OPEN, partial(on_open, load=self.load)),
                    (evt.EVT_CONN_CLOSE, partial(on_close, load=self.load)),
                ]
                if self.load is not None
                else []
            ),
        ]

    def start(self, listener: socket.socket | None = None) -> tuple[str, int]:
        """Listen on the DICOM port, or accept on ``listener`` (shared with other processes)."""
        settings = self.gateway.settings
        assert settings.dimse.port is not None
        host = settings.dimse.host or settings.host
        if listener is None:
            self.server = self.ae.start_server(
                (host, settings.dimse.port), block=False, evt_handlers=self.handlers(),
                ssl_context=tls_context(settings.dimse),
            )  # fmt: skip
        else:
            assert self.load is not None
            server_class = type(
                "SharedSocketServer",
                (_SharedSocketServer,),
                {"shared": listener, "load": self.load},
            )
            self.server = self.ae.make_server(
                (host, settings.dimse.port), evt_handlers=self.handlers(),
                ssl_context=tls_context(settings.dimse), server_class=server_class,
            )  # fmt: skip
            threading.Thread(
                target=self.server.serve_forever, name="AcceptorServer", daemon=True
            ).start()
            self.ae._servers.append(self.server)
        assert self.server is not None
        cheap_copies(self.server.contexts)
        address = self.server.server_address
        log.info("DIMSE AE %s listening on %s:%d (process %d)",
                 settings.dimse.ae_title, address[0], address[1], os.getpid())  # fmt: skip
        return str(address[0]), int(address[1])

    def stop(self, abort: bool = False) -> None:
        """Stop accepting; with ``abort``, abort the open associations too."""
        if self.server is not None:
            if abort:
                for assoc in self.server.active_associations:
                    assoc.abort()
            self.server.shutdown()
            self.server = None

    def close(self) -> None:
        """Stop, and close the gateway this service was built with."""
        self.stop()
        self.gateway.close()

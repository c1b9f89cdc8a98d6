"""pynetdicom's two reactor threads per association wait for work instead of polling.

pynetdicom (3.0) runs two loops per association: the DUL reactor (socket in, PDUs out)
and the association reactor (DIMSE messages to the handlers). Both sleep one
millisecond whenever they find nothing to do, so each open association wakes the
process 2,000 times a second; with four associations storing at once, a profile put
40% of the gateway's CPU in those loops (README, bench "DIMSE vs Orthanc").

Here each accepted association gets two wake-ups, installed when its connection opens
(``EVT_CONN_OPEN``, before either thread starts):

- the DUL thread's one-millisecond sleep becomes a ``select`` on the peer's socket and
  a pipe, written whenever the association queues something for the DUL to send;
- the association thread's one-millisecond sleep becomes a wait on an event, set
  whenever the DUL hands it a DIMSE message or an ACSE primitive (release, abort).

Both waits are bounded (``MAX_WAIT``), so whatever the loops check by time (ARTIM and
idle timers, a killed DUL, a stopped server) is still seen within that bound. Only
those two sleeps change: the loops' other short sleeps (an SCU waiting for its reactor
to pause, a DUL stopping) are left as they are, and associations without the wake-ups
(the SCU side, C-MOVE sub-associations) poll as before.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from pynetdicom import __version__ as pynetdicom_version
from pynetdicom import association as _association
from pynetdicom import dul as _dul

MAX_WAIT = 0.05  # seconds: the latency of anything the loops notice only by polling
_POLL = 0.001  # the loops' idle sleep in pynetdicom 3.0 (DULServiceProvider._run_loop_delay)
_ATTR = "_gateway_wake"


class _PipeWake:
    """Wakes the DUL thread: a pipe ``select`` watches beside the peer's socket."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()
        self._closed = False

    def set(self) -> None:
        with self._lock:
            if self._closed:
                return
            # a full pipe is already full of wake-ups: the reader is due anyway
            with contextlib.suppress(BlockingIOError):
                os.write(self._write, b"!")

    def wait(self, dul: Any, timeout: float) -> None:
        sock = getattr(getattr(dul, "socket", None), "socket", None)
        with self._lock:
            if self._closed:
                time.sleep(_POLL)
                return
            watched: list[Any] = [self._read]
        if sock is not None:
            pending = getattr(sock, "pending", None)  # TLS: decrypted bytes select cannot see
            if pending is not None and pending():
                return
            if sock.fileno() >= 0:
                watched.append(sock)
        try:
            ready, _, _ = select.select(watched, [], [], timeout)
        except (OSError, ValueError):  # the socket closed under us: let the DUL find out
            return
        if self._read in ready:
            self._drain()

    def _drain(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                while os.read(self._read, 4096):
                    pass
            except BlockingIOError:
                pass

    def __del__(self) -> None:
        if hasattr(self, "_closed"):
            self.close()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._read)
                os.close(self._write)


class _EventWake:
    """Wakes the association thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> None:
        # cleared after waking and before the loop looks at its queues: an item put in
        # between is seen by that look, one put later sets the event again
        self._event.wait(timeout)
        self._event.clear()


def _wake_on_put(queue: Any, wake: Callable[[], None]) -> None:
    put = queue.put

    def put_and_wake(item: Any, block: bool = True, timeout: float | None = None) -> None:
        put(item, block, timeout)
        wake()

    queue.put = put_and_wake


class _Clock:
    """Stands in for the ``time`` module inside one of pynetdicom's modules.

    Only the idle sleep of that module's own reactor thread waits for a wake-up: the
    dul module's sleeps in the DUL thread, the association module's in the association
    thread. Any other sleep (another length, or another thread: the association thread
    waiting in the dul module for the DUL to stop) is the real one.
    """

    def __init__(self, real: ModuleType, wake_type: type[_PipeWake | _EventWake]) -> None:
        self._real = real
        self._wake_type = wake_type

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sleep(self, seconds: float) -> None:
        thread = threading.current_thread()
        wake = getattr(thread, _ATTR, None)
        if seconds != _POLL or not isinstance(wake, self._wake_type):
            self._real.sleep(seconds)
        elif isinstance(wake, _PipeWake):
            wake.wait(thread, MAX_WAIT)
        else:
            wake.wait(MAX_WAIT)


_installed = False
_install_lock = threading.Lock()


def install() -> bool:
    """Route the two reactors' idle sleeps through ``_Clock`` (idempotent).

    False (and nothing changed) on a pynetdicom other than 3.0, whose loops this was
    written against: associations then poll as pynetdicom does by itself.
    """
    global _installed
    with _install_lock:
        if _installed:
            return True
        if not pynetdicom_version.startswith("3.0."):
            return False
        _dul.time = _Clock(time, _PipeWake)  # type: ignore[assignment]
        _association.time = _Clock(time, _EventWake)  # type: ignore[assignment]
        _installed = True
        return True


def on_connection_open(event: Any) -> None:
    """EVT_CONN_OPEN (acceptor, before the threads start): give both loops their wake-ups."""
    assoc = event.assoc
    dul = assoc.dul
    pipe, flag = _PipeWake(), _EventWake()
    _wake_on_put(dul.to_provider_queue, pipe.set)  # something to send
    _wake_on_put(dul.event_queue, pipe.set)  # a state machine event from another thread
    _wake_on_put(dul.to_user_queue, flag.set)  # ACSE primitive (release, abort)
    _wake_on_put(assoc.dimse.msg_queue, flag.set)  # a complete DIMSE message
    setattr(dul, _ATTR, pipe)
    setattr(assoc, _ATTR, flag)


def on_connection_close(event: Any) -> None:
    """EVT_CONN_CLOSE: the DUL's pipe is closed (later wake-ups are no-ops)."""
    pipe = getattr(event.assoc.dul, _ATTR, None)
    if isinstance(pipe, _PipeWake):
        pipe.close()

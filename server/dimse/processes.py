"""DIMSE associations spread over listener processes (``GATEWAY_DIMSE__PROCESSES``).

One Python process runs one association's C-STORE at a time on the interpreter lock, so
``imaging-gateway serve`` can run the DIMSE listener in several processes, as it runs
HTTP in several workers. The serving process binds the DICOM port itself (a port that
cannot be opened is a start-up error, as with one process) and starts the listener
processes (``python -m server.dimse.processes``), which inherit the listening socket
and each build their own gateway from the same settings. Each process accepts
connections on the shared socket; one accepts a connection only when no other process
has fewer open associations, or when none of those took it within ``HANDOFF`` seconds
(so a stuck or restarting process never holds connections back): associations go to the
least busy process first.

The limits hold across processes. A small unlinked file shared by the processes holds
each process's count of open associations (for the balance above) and one byte per
association slot (``GATEWAY_DIMSE__MAX_ASSOCIATIONS`` of them): an association takes a
slot by locking its byte (a POSIX record lock, released by the kernel when the process
holding it dies) and is rejected (transient, local limit exceeded) when every slot is
taken, whichever process it landed in. Each listener process ends with the serving
process (parent-death signal and a check of the parent pid), is restarted if it dies,
and aborts its open associations when stopped (an interrupted C-STORE stores nothing).

    python -m server.dimse.processes   # what the server starts; not for operators
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from server.export_process import end_processes
from server.settings import Settings

log = logging.getLogger("gateway.dimse")

HANDOFF = 0.05  # seconds a busier process leaves a connection to a less busy one
_COUNT = struct.Struct("<i")
_ENV_LISTENER, _ENV_LOAD = "GATEWAY_DIMSE_LISTENER_FD", "GATEWAY_DIMSE_LOAD_FD"
_ENV_INDEX, _ENV_COUNT = "GATEWAY_DIMSE_PROCESS_INDEX", "GATEWAY_DIMSE_PROCESS_COUNT"
_ENV_PARENT = "GATEWAY_DIMSE_PARENT_PID"
SLOT_ATTR = "_gateway_slot"


class SharedLoad:
    """The shared file: one count per process, then one lockable byte per slot."""

    def __init__(self, fd: int, processes: int, slots: int, index: int) -> None:
        self.fd, self.processes, self.slots, self.index = fd, processes, slots, index
        self._base = processes * _COUNT.size
        self._lock = threading.Lock()
        self._held: dict[int, Any] = {}  # slot -> association holding it
        self._pending: list[float] = []  # accepted connections not yet open (monotonic)

    @staticmethod
    def create(processes: int, slots: int) -> int:
        """A new unlinked file of the right size (the serving process keeps it open)."""
        handle, path = tempfile.mkstemp(prefix="gateway-dimse-load-")
        os.unlink(path)
        os.ftruncate(handle, processes * _COUNT.size + slots)
        return handle

    def counts(self) -> list[int]:
        raw = os.pread(self.fd, self._base, 0)
        return [_COUNT.unpack_from(raw, i * _COUNT.size)[0] for i in range(self.processes)]

    def reset(self, index: int) -> None:
        """A dead process's count (the parent, before restarting it)."""
        os.pwrite(self.fd, _COUNT.pack(0), index * _COUNT.size)

    def _publish(self) -> None:
        os.pwrite(self.fd, _COUNT.pack(len(self._held)), self.index * _COUNT.size)

    def _pending_now(self) -> int:
        cutoff = time.monotonic() - 5.0  # an accept that never opened is forgotten
        self._pending = [t for t in self._pending if t > cutoff]
        return len(self._pending)

    def least_busy(self) -> bool:
        """No other process has fewer open associations than this one."""
        counts = self.counts()
        with self._lock:
            mine = len(self._held) + self._pending_now()
        others = [c for i, c in enumerate(counts) if i != self.index]
        return not others or mine <= min(others)

    def accepted(self) -> None:
        with self._lock:
            self._pending.append(time.monotonic())

    def acquire(self, assoc: Any) -> int | None:
        """A free slot for ``assoc`` (its byte locked), or None: every slot is taken."""
        with self._lock:
            if self._pending:
                self._pending.pop(0)
            for slot, holder in list(self._held.items()):  # a close that was never seen
                started = getattr(holder, "_started", None)
                if started is not None and started.is_set() and not holder.is_alive():
                    self._release(slot)
            for slot in range(self.slots):
                if slot in self._held:
                    continue
                try:
                    fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self._base + slot)
                except OSError:
                    continue  # another process holds it
                self._held[slot] = assoc
                self._publish()
                return slot
            return None

    def release(self, slot: int) -> None:
        with self._lock:
            self._release(slot)

    def _release(self, slot: int) -> None:
        if self._held.pop(slot, None) is not None:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self._base + slot)
            self._publish()


def on_open(event: Any, load: SharedLoad) -> None:
    """EVT_CONN_OPEN: the association takes a slot (None: it will be rejected)."""
    setattr(event.assoc, SLOT_ATTR, load.acquire(event.assoc))


def on_close(event: Any, load: SharedLoad) -> None:
    slot = getattr(event.assoc, SLOT_ATTR, None)
    if slot is not None:
        setattr(event.assoc, SLOT_ATTR, None)
        load.release(slot)


def wait_for_turn(listener: socket.socket, load: SharedLoad) -> bool:
    """Before accepting: False if a less busy process took the pending connection."""
    if load.least_busy():
        return True
    deadline = time.monotonic() + HANDOFF
    while time.monotonic() < deadline:
        try:
            ready, _, _ = select.select([listener], [], [], 0.005)
        except (OSError, ValueError):
            return False
        if not ready:
            return False  # taken
        if load.least_busy():
            return True
    return True  # nobody less busy took it: serve it here


# ---------------------------------------------------------------------- the serving process


class DimseProcesses:
    """Binds the DICOM port, starts, watches and stops the listener processes."""

    def __init__(self, settings: Settings, processes: int) -> None:
        self.settings = settings
        self.processes = processes
        self.listener: socket.socket | None = None
        self._load_fd: int | None = None
        self._load: SharedLoad | None = None
        self._children: list[subprocess.Popen[bytes] | None] = [None] * processes
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        dimse = self.settings.dimse
        assert dimse.port is not None
        host = dimse.host or self.settings.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, dimse.port))
            listener.listen(max(64, dimse.max_associations))
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)  # whoever is faster accepts: the others find nothing
        self.listener = listener
        self._load_fd = SharedLoad.create(self.processes, dimse.max_associations)
        self._load = SharedLoad(self._load_fd, self.processes, dimse.max_associations, -1)
        for index in range(self.processes):
            self._spawn(index)
        self._watcher = threading.Thread(target=self._watch, name="dimse-processes", daemon=True)
        self._watcher.start()
        address = listener.getsockname()
        log.info("DIMSE AE %s listening on %s:%d (%d processes)",
                 dimse.ae_title, address[0], address[1], self.processes)  # fmt: skip
        return str(address[0]), int(address[1])

    def _spawn(self, index: int) -> None:
        assert self.listener is not None and self._load_fd is not None
        env = {
            **os.environ,
            "GATEWAY_DATA_DIR": str(self.settings.data_dir),
            _ENV_LISTENER: str(self.listener.fileno()),
            _ENV_LOAD: str(self._load_fd),
            _ENV_INDEX: str(index),
            _ENV_COUNT: str(self.processes),
            _ENV_PARENT: str(os.getpid()),
        }
        self._children[index] = subprocess.Popen(
            [sys.executable, "-m", "server.dimse.processes"],
            env=env,
            close_fds=True,
            pass_fds=(self.listener.fileno(), self._load_fd),
        )

    def pids(self) -> list[int]:
        return [c.pid for c in self._children if c is not None]

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            for index, child in enumerate(self._children):
                if child is None or child.poll() is None or self._stop.is_set():
                    continue
                log.error("DIMSE listener process %d ended (%s); restarting it",
                          child.pid, child.returncode)  # fmt: skip
                assert self._load is not None
                self._load.reset(index)  # its slots were released with its locks
                if not self._stop.wait(1.0):  # no tight loop if it cannot start
                    self._spawn(index)

    def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        end_processes([c for c in self._children if c is not None])
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self._load_fd is not None:
            os.close(self._load_fd)
            self._load_fd = None


# ---------------------------------------------------------------------- a listener process


def main() -> None:
    from server.app import build_gateway
    from server.dimse.service import DimseService
    from server.export_process import die_with_parent
    from server.logs import configure

    die_with_parent()
    parent = int(os.environ.get(_ENV_PARENT, "0"))
    settings = Settings()
    configure(settings.log_level, settings.log_format)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    listener = socket.socket(fileno=int(os.environ[_ENV_LISTENER]))
    listener.setblocking(False)
    load = SharedLoad(
        int(os.environ[_ENV_LOAD]),
        int(os.environ[_ENV_COUNT]),
        settings.dimse.max_associations,
        int(os.environ[_ENV_INDEX]),
    )
    gateway = build_gateway(settings)
    service = DimseService(gateway, load=load)
    try:
        service.start(listener=listener)
        while not stop.wait(1.0):
            if parent and os.getppid() != parent:  # the server is gone
                break
    finally:
        with contextlib.suppress(Exception):
            service.stop(abort=True)
        gateway.close()


if __name__ == "__main__":
    main()

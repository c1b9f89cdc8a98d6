"""The bulk export workers in a process of their own, at a lower CPU priority.

An export is long CPU work (JSON for every resource). As threads of the server process it
shares the interpreter lock with every request; in a process of its own, niced
(``GATEWAY_BULK__NICE``), it takes the CPU the requests leave. The process is started by
each serving process (its lifespan), builds its own gateway from the same settings, runs
``GATEWAY_BULK__CONCURRENCY`` worker threads that claim jobs from the shared job store
(leases: a worker that dies leaves its job to be re-run) and the runner of queued reindex
jobs (server.services.reindex_runner), ends when its parent ends
(parent-death signal, and a check of the parent pid), and is restarted by its parent if
it dies.

    python -m server.export_process   # what the server starts; not for operators
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading

from server.settings import Settings

log = logging.getLogger("gateway.bulk")
_PR_SET_PDEATHSIG = 1


class ExportProcess:
    """Starts, watches and stops the export process of one serving process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._child: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="bulk-process", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        env = {**os.environ, "GATEWAY_DATA_DIR": str(self.settings.data_dir),
               "GATEWAY_BULK_PARENT_PID": str(os.getpid())}  # fmt: skip
        self._child = subprocess.Popen(
            [sys.executable, "-m", "server.export_process"], env=env, close_fds=True
        )

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            child = self._child
            if child is not None and child.poll() is not None and not self._stop.is_set():
                log.error("the bulk export process ended (%s); restarting it", child.returncode)
                self._stop.wait(2.0)  # no tight loop if it cannot start
                if not self._stop.is_set():
                    self._spawn()

    def stop(self) -> None:
        self._stop.set()
        end_processes([self._child] if self._child is not None else [])
        if self._watcher is not None:
            self._watcher.join(timeout=5)


def end_processes(children: list[subprocess.Popen[bytes]], grace: float = 15) -> None:
    """Terminate the children still running, wait ``grace`` seconds each, then kill."""
    live = [child for child in children if child.poll() is None]
    for child in live:
        child.terminate()
    for child in live:
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent-pid check below remains
        pass


def main() -> None:
    from server.app import build_gateway
    from server.logs import configure

    die_with_parent()
    parent = int(os.environ.get("GATEWAY_BULK_PARENT_PID", "0"))
    settings = Settings()
    configure(settings.log_level, settings.log_format)
    os.nice(settings.bulk.nice)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    from server import tracing

    gateway = build_gateway(settings)
    tracing.configure(settings.tracing.enabled)  # each export and reindex run: a trace
    gateway.bulk.start()
    gateway.reindexer.start()  # queued reindex jobs, niced like the exports
    try:
        while not stop.wait(1.0):
            if parent and os.getppid() != parent:  # the server is gone
                break
    finally:
        gateway.close()  # stops the workers (an unfinished job is re-run by the next one)
        tracing.shutdown()


if __name__ == "__main__":
    main()

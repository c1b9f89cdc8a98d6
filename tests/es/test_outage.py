"""Elasticsearch unreachable: STOW answers 503 with Retry-After and acknowledges nothing.

The gateway talks to a real Elasticsearch through a real TCP proxy that the test
cuts and restores (a network failure, not a mock).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import httpx

from tests.helpers import cohort, part10, stow
from tests.live import LiveServer, free_port


class Proxy:
    """Forwards 127.0.0.1:port to a target; ``cut()`` drops every connection and refuses new ones."""

    def __init__(self, target: str) -> None:
        url = urlparse(target)
        self.target = (url.hostname or "127.0.0.1", url.port or 9200)
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self._sockets.clear()


def test_stow_during_an_outage_is_503_and_leaves_nothing_stored(
    elasticsearch_url: str, tmp_path: Path
) -> None:
    proxy = Proxy(elasticsearch_url)
    proxy.start()
    env = {
        "GATEWAY_INDEX": "elasticsearch",
        "GATEWAY_ELASTICSEARCH__HOSTS": f'["http://127.0.0.1:{proxy.port}"]',
        "GATEWAY_ELASTICSEARCH__INDEX_PREFIX": f"outage{proxy.port}",
        "GATEWAY_ELASTICSEARCH__REQUEST_TIMEOUT": "3",
    }
    live = LiveServer(tmp_path / "data", extra_env=env).start()
    try:
        before = [part10(ds) for ds in cohort(instances_per_series=2)]
        assert stow(live, before).status_code == 200
        proxy.cut()
        during_ds = cohort(instances_per_series=2)
        r = stow(live, [part10(ds) for ds in during_ds])
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) > 0
        assert "Elasticsearch" in r.json()["message"]
        proxy.start()  # the cluster is back
        studies = httpx.get(f"{live.dicomweb}/studies").json()
        assert during_ds[0].StudyInstanceUID not in {s["0020000D"]["Value"][0] for s in studies}
        # The refused write's blobs wait in the journal; settling them never stores them.
        found = live.cli("check")
        assert "awaiting start-up recovery: 2" in found.stdout, found.stdout + found.stderr
        assert live.cli("check", "--repair").returncode == 0
        studies = httpx.get(f"{live.dicomweb}/studies").json()
        assert during_ds[0].StudyInstanceUID not in {s["0020000D"]["Value"][0] for s in studies}
        blobs = [p for p in (live.data_dir / "blobs").rglob("*") if p.is_file()]
        assert len(blobs) == 2  # those of the acknowledged instances only
        clean = live.cli("check")
        assert clean.returncode == 0 and "awaiting start-up recovery: 0" in clean.stdout
    finally:
        live.stop()
        proxy.cut()
        httpx.delete(f"{elasticsearch_url}/outage{proxy.port}-*", timeout=120)

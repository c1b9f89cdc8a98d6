"""DICOMweb servers the end-to-end tests can target.

* ``GatewayProcess`` runs ``imaging-gateway serve --demo`` on a free port.
* ``OrthancProcess`` runs a throw-away Orthanc with the DICOMweb plugin, used
  as a reference implementation. Orthanc sends no CORS headers, so it is put
  behind ``CorsShim``, a small pass-through proxy that adds them; the viewer
  then talks to it cross-origin exactly as it talks to the gateway.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset

ORTHANC_BIN = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
            last = e
        except OSError as e:
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def _stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def stow_datasets(dicomweb_root: str, datasets: Iterable[Dataset]) -> int:
    """Store datasets with one STOW-RS request; returns the HTTP status."""
    boundary = "e2e-stow-boundary-4b1d"
    body = BytesIO()
    for ds in datasets:
        part = BytesIO()
        dcmwrite(part, ds, enforce_file_format=True)
        body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        body.write(part.getvalue())
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    req = urllib.request.Request(
        dicomweb_root.rstrip("/") + "/studies",
        data=body.getvalue(),
        method="POST",
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status


class GatewayProcess:
    """``imaging-gateway serve --demo`` in a subprocess."""

    def __init__(self, data_dir: Path, log_path: Path, executable: str | None = None) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = log_path
        self.executable = executable or gateway_executable()
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_root(self) -> str:
        return self.base_url + "/dicom-web"

    def start(self, timeout: float = 120) -> GatewayProcess:
        env = dict(os.environ)
        env["GATEWAY_DATA_DIR"] = str(self.data_dir)
        env["GATEWAY_ENVIRONMENT"] = "development"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self.executable, "serve", "--port", str(self.port), "--demo"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_http(self.dicomweb_root + "/studies?limit=1", timeout, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
        self._log.close()


def gateway_executable() -> str:
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / ".venv" / "bin" / "imaging-gateway"]
    found = shutil.which("imaging-gateway")
    if found:
        candidates.insert(0, Path(found))
    for c in candidates:
        if c.is_file():
            return str(c)
    raise FileNotFoundError("imaging-gateway executable not found")


class OrthancProcess:
    """A temporary Orthanc with its DICOMweb plugin, on free loopback ports."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return Path(ORTHANC_BIN).is_file() and Path(ORTHANC_DICOMWEB_PLUGIN).is_file()

    @property
    def dicomweb_root(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def start(self, timeout: float = 60) -> OrthancProcess:
        storage = self.work_dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "e2e-reference",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpCompressionEnabled": False,
            "Plugins": [ORTHANC_DICOMWEB_PLUGIN],
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "Ssl": False,
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            },
        }
        cfg_path = self.work_dir / "orthanc.json"
        cfg_path.write_text(json.dumps(config, indent=2))
        self._log = open(self.work_dir / "orthanc.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [ORTHANC_BIN, str(cfg_path)], stdout=self._log, stderr=subprocess.STDOUT
        )
        wait_http(f"http://127.0.0.1:{self.http_port}/system", timeout, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
        self._log.close()


def _split_includefield(path: str) -> str:
    parts = urllib.parse.urlsplit(path)
    if "includefield" not in parts.query.lower():
        return path
    query: list[tuple[str, str]] = []
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() == "includefield":
            query.extend((key, v) for v in value.split(",") if v)
        else:
            query.append((key, value))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class CorsShim:
    """Pass-through HTTP proxy that adds permissive CORS headers.

    Only used in front of reference servers that lack CORS support. It also
    splits a comma-separated ``includefield`` into repeated parameters, which
    older Orthanc DICOMweb plugins need, and records every request it sees
    (including CORS preflights) in ``self.log``.
    """

    HOP_BY_HOP = {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.log: list[dict] = []
        shim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _cors(self) -> None:
                self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin") or "*")
                self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
                self.send_header(
                    "Access-Control-Allow-Headers",
                    self.headers.get("Access-Control-Request-Headers") or "*",
                )
                self.send_header("Access-Control-Expose-Headers", "Content-Type, Content-Length")
                self.send_header("Access-Control-Max-Age", "600")
                self.send_header("Vary", "Origin")

            def _record(self) -> None:
                shim.log.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "accept": self.headers.get("Accept"),
                        "origin": self.headers.get("Origin"),
                        "preflightMethod": self.headers.get("Access-Control-Request-Method"),
                        "preflightHeaders": self.headers.get("Access-Control-Request-Headers"),
                    }
                )

            def do_OPTIONS(self) -> None:
                self._record()
                self.send_response(204)
                self._cors()
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _forward(self) -> None:
                self._record()
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in shim.HOP_BY_HOP
                }
                req = urllib.request.Request(
                    shim.upstream + _split_includefield(self.path),
                    data=data,
                    method=self.command,
                    headers=headers,
                )
                try:
                    resp = urllib.request.urlopen(req, timeout=120)
                except urllib.error.HTTPError as e:
                    resp = e
                body = resp.read()
                self.send_response(resp.status)
                for k, v in resp.headers.items():
                    if k.lower() not in shim.HOP_BY_HOP:
                        self.send_header(k, v)
                self._cors()
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _forward
            do_POST = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> CorsShim:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

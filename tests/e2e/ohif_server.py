"""Serve the prebuilt OHIF viewer on loopback for end-to-end tests.

* Files come from ``@ohif/app/dist``; any path that is not a file (SPA routes
  such as ``/viewer`` or ``/studies``) gets ``index.html``.
* ``/app-config.js`` is replaced by generated text (see ``server/viewer_config.py``).
* Every response carries ``Cross-Origin-Opener-Policy: same-origin`` and
  ``Cross-Origin-Embedder-Policy: require-corp`` so the page is
  cross-origin isolated and ``SharedArrayBuffer`` is available, which the
  viewer's volume loading wants. Cross-origin DICOMweb requests are made with
  ``fetch``/``XMLHttpRequest`` in CORS mode, so under ``require-corp`` they
  only need CORS headers from the DICOMweb server.

Run standalone::

    python ohif_server.py --port 3000 --dicomweb-root http://127.0.0.1:8042/dicom-web
"""

from __future__ import annotations

import argparse
import contextlib
import mimetypes
import posixpath
import threading
import urllib.parse
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from server.viewer_config import app_config_js

HERE = Path(__file__).resolve().parent
DEFAULT_DIST = HERE.parent.parent / "viewer" / "node_modules" / "@ohif" / "app" / "dist"

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}

EXTRA_TYPES = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".json": "application/json",
    ".woff2": "font/woff2",
    ".svg": "image/svg+xml",
    ".map": "application/json",
}


class OhifHandler(SimpleHTTPRequestHandler):
    app_config: bytes = b""
    quiet: bool = True

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **EXTRA_TYPES}

    def end_headers(self) -> None:
        for k, v in ISOLATION_HEADERS.items():
            self.send_header(k, v)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    def _url_path(self) -> str:
        path = urllib.parse.urlsplit(self.path).path
        return posixpath.normpath(urllib.parse.unquote(path))

    def send_head(self) -> Any:
        path = self._url_path()
        if path == "/app-config.js":
            body = self.app_config
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/javascript; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return _BytesReader(body)
        fs_path = Path(self.translate_path(self.path))
        if not fs_path.exists() or (fs_path.is_dir() and not (fs_path / "index.html").exists()):
            # SPA route: let the client-side router handle it
            last = path.rsplit("/", 1)[-1]
            if "." in last and not last.endswith(".html"):
                # a missing asset, not a route
                self.send_error(HTTPStatus.NOT_FOUND)
                return None
            self.path = "/index.html"
        return super().send_head()


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._done = False

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        self._done = True
        return self._data

    def close(self) -> None:
        pass


class OhifServer:
    """A threaded static server for the viewer; use as a context manager."""

    def __init__(
        self,
        dicomweb_root: str,
        *,
        dist: Path = DEFAULT_DIST,
        host: str = "127.0.0.1",
        port: int = 0,
        quiet: bool = True,
    ) -> None:
        if not (dist / "index.html").is_file():
            raise FileNotFoundError(f"OHIF build not found at {dist}")
        for ext, mime in EXTRA_TYPES.items():
            mimetypes.add_type(mime, ext)
        handler = type(
            "BoundOhifHandler",
            (OhifHandler,),
            {"app_config": app_config_js(dicomweb_root).encode(), "quiet": quiet},
        )
        self.httpd = ThreadingHTTPServer((host, port), partial(handler, directory=str(dist)))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> OhifServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OhifServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--port", type=int, default=3000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--dicomweb-root", required=True)
    ap.add_argument("--dist", type=Path, default=DEFAULT_DIST)
    args = ap.parse_args()
    srv = OhifServer(
        args.dicomweb_root, dist=args.dist, host=args.host, port=args.port, quiet=False
    )
    print(f"OHIF viewer on {srv.url} -> {args.dicomweb_root}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        srv.httpd.serve_forever()


if __name__ == "__main__":
    main()

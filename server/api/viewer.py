"""The OHIF viewer at ``/viewer``, same origin as the DICOMweb API (no CORS), when installed.

The prebuilt ``@ohif/app`` bundle is built for the site root: its ``index.html``, its CSS
and its webpack runtime name ``/`` as the public path. Those few texts are rewritten in
memory to ``/viewer/`` when served (the installed files are never changed); every other file
is sent as it is. ``/viewer/app-config.js`` is generated (``server/viewer_config.py``): the
gateway's DICOMweb root and, when a sign-in is configured, OHIF's OpenID Connect client
pointed at the gateway's own authorization server (code + PKCE, refresh tokens).

Every answer carries ``Cross-Origin-Opener-Policy: same-origin`` and
``Cross-Origin-Embedder-Policy: require-corp``: the viewer wants ``SharedArrayBuffer``.
Paths that are not files (the viewer's own routes, e.g. ``/viewer/callback``) get the
rewritten ``index.html``.
"""

from __future__ import annotations

import mimetypes
import re
import threading
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from server.api.deps import gateway
from server.api.login import login_available
from server.viewer_config import VIEWER_CLIENT_ID, Login, app_config_js

router = APIRouter(include_in_schema=False)
BASE = "/viewer"
ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript",
         ".json": "application/json", ".woff2": "font/woff2", ".svg": "image/svg+xml",
         ".css": "text/css", ".html": "text/html; charset=utf-8"}  # fmt: skip
_WEBPACK_PUBLIC_PATH = re.compile(rb'(__webpack_require__\.p = )"/"')
# Modules the app loads at run time by absolute path (dicom-microscopy-viewer, for the
# microscopy mode: ``browserImportFunction('/dicom-microscopy-viewer/...')``).
_BROWSER_IMPORT = re.compile(rb"""(browserImportFunction\(['"])/(?!/)""")
_ROOTED = re.compile(rb'((?:href|src)=")/(?!/)|(url\()/(?!/)|(PUBLIC_URL=")/(")')
_cache: dict[tuple[str, float], bytes | None] = {}
_cache_lock = threading.Lock()


def _rebase(data: bytes, name: str) -> bytes:
    """The bundle's root-relative references, moved under ``/viewer/``."""
    if name.endswith(".js"):  # webpack runtimes (the app's and its web workers')
        data = _WEBPACK_PUBLIC_PATH.sub(rb'\1"/viewer/"', data)
        return _BROWSER_IMPORT.sub(rb"\1/viewer/", data)
    if name == "manifest.json":
        return data.replace(b'"/', b'"/viewer/')

    def move(m: re.Match[bytes]) -> bytes:
        if m[3]:
            return m[3] + b"/viewer/" + m[4]
        return (m[1] or m[2]) + b"/viewer/"

    return _ROOTED.sub(move, data)


def _rewritten(path: Path) -> bytes | None:
    """The file's text rebased, or None when it names nothing root-relative (sent as is).

    Every file is read once per process; only the few rebased ones are kept in memory.
    """
    key = (str(path), path.stat().st_mtime)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    data = None
    if path.suffix in (".html", ".css", ".js") or path.name == "manifest.json":
        original = path.read_bytes()
        rebased = _rebase(original, path.name)
        data = rebased if rebased != original else None
    with _cache_lock:
        _cache[key] = data
    return data


def _not_installed() -> Response:
    body = (
        "<!doctype html><meta charset=utf-8><title>Viewer not installed</title>"
        "<h1>The OHIF viewer is not installed</h1>"
        "<p>With Node.js (20 or later) present, <code>make viewer</code> (or <code>make run</code>) "
        "installs it; or set <code>GATEWAY_VIEWER__DIST</code> to an <code>@ohif/app</code> "
        "<code>dist</code> folder. Any DICOMweb viewer can use <code>/dicom-web</code> meanwhile.</p>"
    )  # fmt: skip
    return HTMLResponse(body, 404, headers={"Cache-Control": "no-store"})


@router.get(BASE)
async def viewer_root() -> Response:
    return RedirectResponse(f"{BASE}/", 308)


@router.get(BASE + "/{path:path}")
async def viewer_file(request: Request, path: str) -> Response:
    gw = gateway(request)
    dist = gw.settings.viewer.dist
    if not gw.settings.viewer.enabled or not (dist / "index.html").is_file():
        return _not_installed()
    headers = dict(ISOLATION)
    if path == "app-config.js":
        issuer = gw.tokens.issuer
        login = None
        if gw.settings.auth.enabled and login_available(request):
            login = Login(issuer, VIEWER_CLIENT_ID, token_lifetime=gw.tokens.lifetime_seconds)
        text = app_config_js(f"{issuer}/dicom-web", router_basename=BASE, login=login)
        headers["Cache-Control"] = "no-store"
        return Response(text, media_type="text/javascript; charset=utf-8", headers=headers)
    root = dist.resolve()
    target = (root / path).resolve() if path else root / "index.html"
    if not target.is_relative_to(root):
        return Response(status_code=404, headers=headers)
    if not target.is_file():
        last = path.rsplit("/", 1)[-1]
        if "." in last and not last.endswith(".html"):
            return Response(status_code=404, headers=headers)  # a missing asset, not a route
        target = root / "index.html"
    media = TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"  # fmt: skip
    if target.name == "index.html" or target.suffix == ".html":
        headers["Cache-Control"] = "no-store"
    else:
        headers["Cache-Control"] = "public, max-age=3600"
    rebased = await run_in_threadpool(_rewritten, target)
    if rebased is not None:
        return Response(rebased, media_type=media, headers=headers)
    return FileResponse(target, media_type=media, headers=headers)

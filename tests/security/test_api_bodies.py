"""Request bodies are authorised before they are read, and capped, on every route that takes
one (every POST/PUT/PATCH of openapi/openapi.json).

Bodies are sent over a raw socket with chunked transfer coding, so the test sees exactly when
the answer arrives: a server that read the body first would still be waiting for the rest.
The server's peak resident memory (VmHWM in /proc/<pid>/status) shows nothing was buffered.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live import LiveServer
from tests.security.conftest import AS_SENT, Registered, add_client, auth_env, cli_ok, token

OPENAPI = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
DATASET = "bodies-lung"
FHIR_LIMIT = 1024**2
STOW_LIMIT = 2 * 1024**2
TOKEN_LIMIT = 64 * 1024
CHUNK = 64 * 1024
BOUNDARY = "b0undary"
EUCAIM_SEARCH = "/api/datasets/eucaimSearch"  # authenticates itself: Secret or bearer token
EUCAIM_SECRET = "bodies-eucaim-search-secret"
OTHER_LIMIT = 1024**2


def _body_routes() -> list[tuple[str, str]]:
    document = json.loads(OPENAPI.read_text())
    return [(method.upper(), path) for path, operations in document["paths"].items()
            for method in operations if method.upper() in ("POST", "PUT", "PATCH")]  # fmt: skip


BODY_ROUTES = _body_routes()
# /oauth/logout: a browser signing out sends its refresh token in the form, no bearer token
ANONYMOUS_ALLOWED = {
    "/oauth/token",
    "/oauth/logout",
    "/fhir/{rtype}/_search",
    "/fhir/{rtype}/$validate",
}


def _concrete(path: str) -> str:
    values = {"{dataset}": DATASET, "{study}": "1.2.3.4", "{rtype}": "ResearchStudy",
              "{rid}": "bodies-new"}  # fmt: skip
    for name, value in values.items():
        path = path.replace(name, value)
    return path


def _content_type(path: str) -> str:
    if path == EUCAIM_SEARCH:
        return "application/json"
    if path in ("/oauth/token", "/oauth/logout") or path.endswith("/_search"):
        return "application/x-www-form-urlencoded"
    if "/dicom-web/" in path:
        return f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    return "application/fhir+json"


def _limit(path: str) -> int:
    if path in ("/oauth/token", "/oauth/logout"):
        return TOKEN_LIMIT
    if path == EUCAIM_SEARCH:
        return OTHER_LIMIT
    return FHIR_LIMIT if path.startswith("/fhir") else STOW_LIMIT


@dataclass
class Answer:
    status: int
    head: str
    body: bytes
    sent: int  # body bytes written when the answer arrived


def _send(port: int, method: str, path: str, headers: dict[str, str], *, total: int,
          declared: int | None = None, wait: float = 10.0, prefix: bytes = b"") -> Answer:  # fmt: skip
    """Send up to ``total`` body bytes (chunked unless ``declared``, never the last chunk), stop
    at the first byte of the answer; a ``total`` below the body's size is a stalled client."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait)
    framing = {"Content-Length": str(declared)} if declared is not None else {"Transfer-Encoding": "chunked"}  # fmt: skip
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in {**headers, **framing}.items())]  # fmt: skip
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    sent, first, payload = 0, (prefix + b"x" * CHUNK)[:CHUNK], b"x" * CHUNK
    deadline = time.monotonic() + wait
    sock.settimeout(2.0)  # a send the server does not take within 2 s: it stopped reading
    try:
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 0.5)
            if readable:
                break
            if writable:
                data = payload if sent else first
                piece = data if declared is not None else b"%x\r\n%s\r\n" % (CHUNK, data)
                try:
                    sock.sendall(piece)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    break
                sent += CHUNK
        raw = _read_answer(sock, deadline)
    finally:
        sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return Answer(status, head.decode("latin-1"), body, sent)


def _read_answer(sock: socket.socket, deadline: float) -> bytes:
    raw = b""
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.5)
        if not readable:
            if b"\r\n\r\n" in raw:
                break
            continue
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not data:
            break
        raw += data
        head, sep, body = raw.partition(b"\r\n\r\n")
        length = next((int(x.split(b":")[1]) for x in head.split(b"\r\n")
                       if x.lower().startswith(b"content-length:")), None)  # fmt: skip
        if sep and length is not None and len(body) >= length:
            break
    return raw


def _peak_rss_kib(live: LiveServer) -> int:
    assert live.process is not None
    status = Path(f"/proc/{live.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


@dataclass
class Setup:
    live: LiveServer
    admin: Registered

    def admin_token(self) -> str:
        return token(self.live, self.admin)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    live = LiveServer(tmp_path_factory.mktemp("bodies") / "data", extra_env=auth_env(
        public_read=True, GATEWAY_FHIR__MAX_BODY_BYTES=str(FHIR_LIMIT),
        GATEWAY_STOW__MAX_BODY_BYTES=str(STOW_LIMIT), GATEWAY_DEFAULT_DATASET=DATASET,
        GATEWAY_FEDERATION__EUCAIM_SEARCH_TOKEN=EUCAIM_SECRET))  # fmt: skip
    # (a default dataset: /dicom-web/studies would otherwise be refused as naming none, 400)
    cli_ok(
        live, "dataset", "create", DATASET, "--title", DATASET, "--cancer-type", "lung", *AS_SENT
    )
    admin = add_client(live, "operator", "--admin", "--store", DATASET)
    live.start()
    try:
        yield Setup(live, admin)
    finally:
        live.stop()


def test_the_walk_covers_every_kind_of_body_route() -> None:
    paths = {path for _, path in BODY_ROUTES}
    assert {"/fhir", "/fhir/{rtype}", "/fhir/{rtype}/{rid}", "/fhir/{rtype}/$validate",
            "/fhir/{rtype}/_search", "/oauth/token", "/dicom-web/studies",
            "/datasets/{dataset}/dicom-web/studies"} <= paths  # fmt: skip


REFUSED = [(m, p) for m, p in BODY_ROUTES if p not in ANONYMOUS_ALLOWED]


@pytest.mark.parametrize("caller", ["anonymous", "bad token"])
@pytest.mark.parametrize(("method", "template"), REFUSED)
def test_unauthorised_body_is_refused_before_it_is_read(
    setup: Setup, method: str, template: str, caller: str
) -> None:
    path = _concrete(template)
    headers = {"Content-Type": _content_type(path)}
    if caller == "bad token":
        headers["Authorization"] = "Bearer not.a.token"
    # the first 64 KiB of a (50 MiB) body, then the client stalls: the 401 must come anyway
    answer = _send(setup.live.port, method, path, headers, total=CHUNK, wait=6.0)
    assert answer.status == 401, (method, path, answer.head, answer.body[:300])
    assert answer.sent <= CHUNK, answer.sent  # the answer may even come before the first chunk
    assert "www-authenticate: bearer" in answer.head.lower()
    if path.startswith("/fhir"):
        assert json.loads(answer.body)["resourceType"] == "OperationOutcome"


def test_fifty_mib_anonymous_bodies_leave_memory_flat(setup: Setup) -> None:
    """Every refused route, a 50 MiB body sent as fast as the server takes it."""
    before = _peak_rss_kib(setup.live)
    for method, template in REFUSED:
        path = _concrete(template)
        answer = _send(setup.live.port, method, path, {"Content-Type": _content_type(path)},
                       total=50 * 1024**2, wait=30.0)  # fmt: skip
        assert answer.status == 401, (method, path, answer.head)
    grown = (_peak_rss_kib(setup.live) - before) / 1024
    assert grown < 30, f"peak RSS grew by {grown:.0f} MiB"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize(("method", "template"), BODY_ROUTES)
def test_oversized_body_is_413(setup: Setup, method: str, template: str, framing: str) -> None:
    path = _concrete(template)
    limit = _limit(path)
    headers = {"Content-Type": _content_type(path)}
    if path == EUCAIM_SEARCH:
        headers["Authorization"] = f"Secret {EUCAIM_SECRET}"
    elif path not in ANONYMOUS_ALLOWED and template not in ANONYMOUS_ALLOWED:
        headers["Authorization"] = f"Bearer {setup.admin_token()}"
    if framing == "content-length":  # declared too large: refused before a byte is sent
        answer = _send(setup.live.port, method, path, headers, total=0, declared=limit + 1)
        assert answer.sent == 0
    else:  # chunked: refused once the limit is passed
        # a well-formed start (a multipart part header for STOW), then far too much of it
        start = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        answer = _send(setup.live.port, method, path, headers, total=limit * 4, wait=30.0,
                       prefix=start if "/dicom-web/" in path else b"")  # fmt: skip
    assert answer.status == 413, (method, path, framing, answer.head, answer.body[:300])
    if path.startswith("/fhir"):
        outcome = json.loads(answer.body)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "too-long"

"""The caller's address: ``Forwarded`` (RFC 7239) and ``X-Forwarded-For`` from trusted proxies only.

Every consumer of the client address (the audit, the token endpoint's rate limit, logs) reads
``scope["client"]``; this middleware is the one place that may replace it. A forwarding header
is believed only when the TCP peer is a configured proxy (``GATEWAY_TRUSTED_PROXIES``, IPs or
CIDRs; none by default). The chain is read right to left, skipping further trusted proxies, so
an address a caller puts in front of the chain is never taken for its own.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_FOR = re.compile(r'(?:^|;)\s*for=("?)([^";,]*)\1\s*(?:;|$)', re.IGNORECASE)
_PROTO = re.compile(r'(?:^|;)\s*proto=("?)(https?)\1\s*(?:;|$)', re.IGNORECASE)


def networks(values: Iterable[str]) -> tuple[Network, ...]:
    """The configured proxies as networks (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def _address(text: str) -> str | None:
    """An IP address from a ``for=`` or X-Forwarded-For item (``[v6]:port``, ``v4:port``)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None  # "unknown", obfuscated identifiers (RFC 7239 6.3), garbage


def _trusted(address: str | None, trusted: tuple[Network, ...]) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def _chain(headers: dict[bytes, list[bytes]]) -> tuple[list[str], str | None]:
    """The forwarded-for hops (left to right) and the proto the nearest proxy saw."""
    forwarded = b",".join(headers.get(b"forwarded", [])).decode("latin-1")
    if forwarded:
        elements = [e for e in forwarded.split(",") if e.strip()]
        hops = [m[2] if (m := _FOR.search(e)) else "" for e in elements]
        protos = [m[2].lower() for e in elements if (m := _PROTO.search(e))]
        return hops, (protos[-1] if protos else None)
    xff = b",".join(headers.get(b"x-forwarded-for", [])).decode("latin-1")
    proto = b",".join(headers.get(b"x-forwarded-proto", [])).decode("latin-1").split(",")[-1]
    proto = proto.strip().lower()
    return [h for h in xff.split(",") if h.strip()], (proto if proto in ("http", "https") else None)


def client_address(peer: str, headers: dict[bytes, list[bytes]], trusted: tuple[Network, ...]) -> tuple[str, str | None]:  # fmt: skip
    """(the caller's address, the scheme it used or None) for a request from ``peer``."""
    if not _trusted(peer, trusted):
        return peer, None
    hops, proto = _chain(headers)
    address = peer
    for hop in reversed(hops):
        found = _address(hop)
        if found is None:  # a hop we cannot read: stop at the last proxy we trust
            break
        address = found
        if not _trusted(found, trusted):
            break
    return address, proto


class ProxyHeadersMiddleware:
    """Replace ``scope["client"]`` (and ``scheme``) from forwarding headers of trusted proxies."""

    def __init__(self, app: ASGIApp, trusted: tuple[Network, ...]) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.trusted and scope.get("client"):
            headers: dict[bytes, list[bytes]] = {}
            for name, value in scope["headers"]:
                headers.setdefault(name.lower(), []).append(value)
            peer = scope["client"][0]
            address, proto = client_address(peer, headers, self.trusted)
            if address != peer or proto:
                scope["client"] = (address, 0)
                if proto:
                    scope["scheme"] = proto if scope["type"] == "http" else ("wss" if proto == "https" else "ws")  # fmt: skip
        await self.app(scope, receive, send)

"""Opaque FHIR paging cursors (FHIR R4 3.1.1.5.6 paging links), sealed for one caller and query.

The translators page by keyset (:class:`PagePosition`: the sort keys of the last row).
Those keys are data (Study Instance UIDs, study times), so they never reach the client
as such: every ``_cursor`` the server issues is sealed here with the installation's
cursor key (server.core.sealing: AES-256-GCM), bound to the caller and to the search
(resource type and its parameters, ``_cursor`` aside), and expires. A cursor that was
changed, belongs to another caller or another search, or has expired is a 400.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from server.core.fhir.search import PagePosition, SearchRequest
from server.core.sealing import ExpiredSeal, SealError, seal, unseal
from server.errors import InvalidQuery
from server.security.model import Principal

# Parameters that shape only the rendering, not the rows: not part of a cursor's binding.
_UNBOUND = frozenset({"_cursor", "_format", "_pretty"})


class SearchCursors:
    def __init__(
        self, key: bytes, lifetime_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.key = key
        self.lifetime = lifetime_seconds
        self.clock = clock

    def binding(
        self, principal: Principal, resource_type: str, pairs: list[tuple[str, str]]
    ) -> bytes:
        """Who asked and which search: the associated data every cursor of this search carries."""
        party = principal.party
        caller = [party.issuer, party.client_id, party.subject, principal.anonymous]
        query = sorted((k, v) for k, v in pairs if k not in _UNBOUND)
        return orjson.dumps(["fhir-search", caller, resource_type, query])

    def open(self, req: SearchRequest, binding: bytes) -> SearchRequest:
        """``req`` with the position its ``_cursor`` names (400 if it is not one we issued)."""
        if req.cursor is None:
            return req
        try:
            payload = unseal(self.key, binding, req.cursor, now=self.clock())
        except ExpiredSeal as exc:
            raise InvalidQuery("_cursor has expired; search again", "_cursor") from exc
        except SealError as exc:
            raise InvalidQuery(
                "_cursor is not a page link this server made for this caller and search",
                "_cursor",
            ) from exc
        if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[1], list)):
            raise InvalidQuery("_cursor is not a page link this server made", "_cursor")
        return SearchRequest(
            **{**req.__dict__, "position": PagePosition(bool(payload[0]), tuple(payload[1]))}
        )

    def seal(self, position: PagePosition | None, binding: bytes) -> str | None:
        if position is None:
            return None
        payload: list[Any] = [position.backwards, list(position.values)]
        return seal(self.key, binding, payload, expires=self.clock() + self.lifetime)

"""A DICOMweb server as a pull source: QIDO-RS to enumerate (PS3.18 10.6), WADO-RS to fetch (10.4).

Each instance is fetched on its own (``/studies/{s}/series/{se}/instances/{i}``, asking for
``transfer-syntax=*`` so the server sends what it stores, byte for byte), so a pull can
resume at any instance and one bad instance never costs a study. Requests failing with a
5xx, 429 or a transport error are retried with exponential backoff (``Retry-After`` is
honoured up to 60 s); 4xx answers are not retried. Credentials are sent, never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from server import tracing
from server.core.mediatypes import parse_media_type
from server.core.multipart import MultipartSpooler
from server.errors import GatewayError
from server.peers.base import Deliver, Pacer, PeerError, RemoteInstance, Selection

log = logging.getLogger("gateway.pull")
PAGE = 500
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
MAX_INSTANCE_BYTES = 4 << 30
_RETRY_STATUS = {429, 500, 502, 503, 504}
_STUDY, _SERIES, _SOP = "0020000D", "0020000E", "00080018"


class DicomwebSource:
    """QIDO-RS + WADO-RS against ``base_url`` (the service root, e.g. ``.../dicom-web``)."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        token: str | None = None,
        verify: Any = True,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        concurrency: int = 1,
        pacer: Pacer | None = None,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.name = self.base
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(
            auth=auth, headers=headers, verify=verify, timeout=timeout, follow_redirects=False,
            limits=httpx.Limits(max_connections=max(concurrency, 1) + 1),
        )  # fmt: skip
        self.retries, self.backoff = retries, backoff
        self.concurrency = max(concurrency, 1)
        self.pacer = pacer or Pacer(None)

    def close(self) -> None:
        self.client.close()

    # -- QIDO-RS -------------------------------------------------------------------------

    def search_for_studies(self, selection: Selection) -> list[str]:
        """PS3.18 10.6.1: the Study Instance UIDs the selection matches."""
        if selection.studies and selection.patient_id is None and selection.date_range() is None:
            return list(dict.fromkeys(selection.studies))
        params: dict[str, str] = {"includefield": "StudyInstanceUID"}
        if selection.patient_id is not None:
            params["PatientID"] = selection.patient_id
        if (dates := selection.date_range()) is not None:
            params["StudyDate"] = dates
        found = [_uid(m, _STUDY) for m in self._search("/studies", params)]
        if selection.studies:
            found = [uid for uid in found if uid in selection.studies]
        return list(dict.fromkeys(uid for uid in found if uid))

    def search_for_instances(self, study_uid: str) -> list[RemoteInstance]:
        """PS3.18 10.6.1 (study's instances): every instance of the study."""
        matches = self._search(f"/studies/{study_uid}/instances", {})
        out = [RemoteInstance(study_uid, _uid(m, _SERIES), _uid(m, _SOP)) for m in matches]
        return list(dict.fromkeys(i for i in out if i.series_uid and i.sop_uid))

    def _search(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """All matches, page by page (limit/offset); a server ignoring paging is read once."""
        results: list[dict[str, Any]] = []
        offset = 0
        while True:
            page_params = {**params, "limit": str(PAGE), "offset": str(offset)}
            response = self._request("GET", path, params=page_params,
                                     headers={"Accept": "application/dicom+json"})  # fmt: skip
            page = response.json() if response.status_code == 200 and response.content else []
            if not isinstance(page, list):
                raise PeerError(f"QIDO-RS {path}: the answer is not a JSON array")
            results.extend(m for m in page if isinstance(m, dict))
            if len(page) < PAGE:
                return results
            offset += len(page)

    # -- WADO-RS -------------------------------------------------------------------------

    def retrieve_instances(
        self, study_uid: str, wanted: list[RemoteInstance], spool: Path, deliver: Deliver
    ) -> dict[str, str]:
        """PS3.18 10.4.1 (instance): each wanted instance, ``concurrency`` at a time."""
        failures: dict[str, str] = {}

        def one(n: int, instance: RemoteInstance) -> None:
            self.pacer.wait()
            try:
                path, sha256 = self._retrieve_instance(instance, spool, n)
            except GatewayError as exc:
                failures[instance.sop_uid] = exc.message
                return
            deliver(instance.sop_uid, path, sha256)

        if self.concurrency == 1:
            for n, instance in enumerate(wanted):
                one(n, instance)
        else:
            with ThreadPoolExecutor(self.concurrency) as pool:
                list(pool.map(one, range(len(wanted)), wanted))
        return failures

    def _retrieve_instance(self, instance: RemoteInstance, spool: Path, n: int) -> tuple[Path, str]:
        path = (f"/studies/{instance.study_uid}/series/{instance.series_uid}"
                f"/instances/{instance.sop_uid}")  # fmt: skip
        folder = spool / f"wado-{n:06d}"
        folder.mkdir()

        def read(response: httpx.Response) -> tuple[Path, str]:
            media = parse_media_type(response.headers.get("content-type", ""))
            boundary = media.params.get("boundary")
            if media.type != "multipart/related" or not boundary:
                raise PeerError(f"WADO-RS {path}: answered {media.type or 'no content type'}")
            spooler = MultipartSpooler(boundary, folder, MAX_INSTANCE_BYTES, max_parts=1)
            try:
                for chunk in response.iter_bytes(1 << 20):
                    spooler.feed(chunk)
                parts = spooler.finish()
            finally:
                spooler.close()
            digest = parts[0].sha256
            assert digest is not None  # the spooler takes it by default
            return parts[0].path, digest

        return self._request("GET", path, headers={"Accept": ACCEPT_DICOM}, stream=read)

    # -- transport -----------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None, stream: Callable[[httpx.Response], Any] | None = None,
    ) -> Any:  # fmt: skip
        """One request, retried on 5xx/429/transport errors with exponential backoff."""
        url = self.base + path
        host = httpx.URL(url).host
        with tracing.span(
            f"{method}", kind="client", **{"http.request.method": method, "server.address": host}
        ):
            return self._attempts(
                method, url, path, params, tracing.inject(dict(headers or {})), stream
            )

    def _attempts(
        self, method: str, url: str, path: str, params: dict[str, str] | None,
        headers: dict[str, str], stream: Callable[[httpx.Response], Any] | None,
    ) -> Any:  # fmt: skip
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                with self.client.stream(method, url, params=params, headers=headers) as response:
                    if response.status_code in _RETRY_STATUS and not last:
                        delay = _retry_after(response) or self.backoff * 2**attempt
                    elif response.status_code >= 400:
                        raise PeerError(f"{method} {path}: HTTP {response.status_code}")
                    elif stream is not None:
                        return stream(response)
                    else:
                        response.read()
                        return response
            except httpx.TransportError as exc:
                if last:
                    raise PeerError(f"{method} {path}: {type(exc).__name__}") from exc
                delay = self.backoff * 2**attempt
            log.info("%s %s: retrying in %.1f s", method, path, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")


def _uid(match: dict[str, Any], tag: str) -> str:
    values = (match.get(tag) or {}).get("Value") or [""]
    return str(values[0]).strip()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return min(float(value), 60.0) if value.isdigit() else None

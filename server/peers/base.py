"""What a pull source is: enumerate studies and instances, fetch instances into spool files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

from server.errors import GatewayError


class PeerError(GatewayError):
    """The source could not be reached or answered with an error (the message says which)."""


@dataclass(frozen=True)
class Selection:
    """Which studies to pull: by Study Instance UID, by Patient ID, or by study date range."""

    studies: tuple[str, ...] = ()
    patient_id: str | None = None
    since: date | None = None
    until: date | None = None

    def date_range(self) -> str | None:
        """PS3.4 C.2.2.2.5 range matching on StudyDate: ``YYYYMMDD-YYYYMMDD`` (open ends)."""
        if self.since is None and self.until is None:
            return None
        start = self.since.strftime("%Y%m%d") if self.since else ""
        end = self.until.strftime("%Y%m%d") if self.until else ""
        return f"{start}-{end}"


@dataclass(frozen=True)
class RemoteInstance:
    study_uid: str
    series_uid: str
    sop_uid: str


# Called with (sent SOP Instance UID, spooled Part-10 file, its SHA-256) for every instance
# received; the callee owns the file from then on.
Deliver = Callable[[str, Path, str], None]


class Source(Protocol):
    """A pull source. ``name`` describes it without credentials (summary, audit, job key)."""

    name: str

    def search_for_studies(self, selection: Selection) -> list[str]: ...

    def search_for_instances(self, study_uid: str) -> list[RemoteInstance]: ...

    def retrieve_instances(
        self, study_uid: str, wanted: list[RemoteInstance], spool: Path, deliver: Deliver
    ) -> dict[str, str]:
        """Fetch ``wanted`` (all of one study); the answer: SOP UID -> reason, for failures."""
        ...

    def close(self) -> None: ...


class Pacer:
    """At most ``rate`` instances per second over the whole pull (None: no limit); thread-safe."""

    def __init__(self, rate: float | None) -> None:
        import threading

        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        import time

        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)

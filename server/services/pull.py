"""Pull studies from another archive into a dataset, as a resumable job (``imaging-gateway pull``).

The source (``server/peers``) enumerates the studies the selection matches and their
instances; every instance found is recorded in the job (``pull_jobs``) before anything
is fetched. Each fetched instance goes through the one ingest pipeline, exactly like a
STOW part or a C-STORE: validation, de-identification by the dataset's policy, atomic
write, index. Its state is recorded once ingest answered, so a pull killed at any
point and run again fetches only what is not done; an instance stored just before the
kill is fetched again and found present (the index keeps one copy). Each study's
stores are audited like an ``import`` batch.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from server.core.stow import PartOutcome
from server.errors import GatewayError
from server.peers.base import RemoteInstance, Selection, Source
from server.services.ingest import IngestItem, IngestService
from server.services.pull_jobs import Job, PullJobs
from server.storage.journal import WriteJournal


class Progress(Protocol):
    def found(self, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class _NoProgress:
    def found(self, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


@dataclass
class PullSummary:
    job: str
    studies: int = 0
    found: int = 0
    new: int = 0
    present: int = 0  # stored by an earlier run, or already in the dataset
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # study, SOP, reason

    @property
    def rate(self) -> float:
        return (self.new + self.present) / self.seconds if self.seconds else 0.0


@dataclass
class _Study:
    """What one study's retrieval delivered (delivery may come from several threads)."""

    outcomes: list[PartOutcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


# Called once per study with what ingest answered and how many instances never arrived.
StudyAudit = Callable[[Job, list[PartOutcome], int], None]


class PullService:
    def __init__(self, ingest: IngestService, journal: WriteJournal, jobs: PullJobs,
                 audit: StudyAudit | None = None) -> None:  # fmt: skip
        self.ingest, self.journal, self.jobs = ingest, journal, jobs
        self.audit = audit

    def close(self) -> None:
        self.jobs.close()

    def run(self, job: Job, source: Source, progress: Progress | None = None) -> PullSummary:
        """Pull every instance of the job's selection not done yet; the run's summary."""
        progress = progress or _NoProgress()
        started = time.monotonic()
        summary = PullSummary(job.id)
        try:
            studies = source.search_for_studies(selection_of(job.selection))
            found = {uid: source.search_for_instances(uid) for uid in studies}
        except GatewayError:
            self.jobs.finish(job.id, "failed")
            raise
        summary.studies = len(studies)
        summary.found = sum(len(v) for v in found.values())
        progress.found(summary.found)
        for study_uid, instances in found.items():
            self.jobs.add_found(job.id, instances)
            self._pull_study(job, source, study_uid, instances, summary, progress)
        summary.failures = self.jobs.failures(job.id)
        summary.failed = len(summary.failures)
        summary.seconds = time.monotonic() - started
        self.jobs.finish(job.id, "failed" if summary.failed else "done")
        return summary

    def _pull_study(
        self, job: Job, source: Source, study_uid: str, instances: list[RemoteInstance],
        summary: PullSummary, progress: Progress,
    ) -> None:  # fmt: skip
        done = self.jobs.done(job.id, study_uid)
        wanted = [i for i in instances if i.sop_uid not in done]
        summary.present += len(instances) - len(wanted)
        progress.advance(len(instances) - len(wanted))
        if not wanted:
            return
        state = _Study()

        def deliver(sop_uid: str, path: Path, sha256: str) -> None:
            size = path.stat().st_size
            try:
                outcome = self.ingest.store_instances(
                    [IngestItem(path, sha256)], dataset=job.dataset
                )[0]
            except GatewayError as exc:  # the index is down: this instance is not stored
                outcome = PartOutcome(failure=0xA700, message=exc.message)
            with state.lock:
                state.outcomes.append(outcome)
                if not outcome.stored:
                    self.jobs.mark(job.id, sop_uid, "failed", outcome.message)
                elif outcome.present:
                    summary.present += 1
                    self.jobs.mark(job.id, sop_uid, "present", size=size)
                else:
                    summary.new += 1
                    summary.bytes += size
                    self.jobs.mark(job.id, sop_uid, "stored", size=size)
                progress.advance()

        spool = self.journal.spool_dir()
        try:
            failures = source.retrieve_instances(study_uid, wanted, spool, deliver)
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        for sop_uid, reason in failures.items():
            self.jobs.mark(job.id, sop_uid, "failed", reason)
            progress.advance()
        if self.audit is not None:
            self.audit(job, state.outcomes, len(failures))


def selection_of(data: dict[str, object]) -> Selection:
    from datetime import date

    def day(value: object) -> date | None:
        return date.fromisoformat(str(value)) if value else None

    studies = data.get("studies") or []
    assert isinstance(studies, list)
    patient = data.get("patient_id")
    return Selection(
        studies=tuple(str(s) for s in studies),
        patient_id=str(patient) if patient is not None else None,
        since=day(data.get("since")),
        until=day(data.get("until")),
    )


def selection_json(selection: Selection) -> dict[str, object]:
    return {
        "studies": sorted(selection.studies),
        "patient_id": selection.patient_id,
        "since": selection.since.isoformat() if selection.since else None,
        "until": selection.until.isoformat() if selection.until else None,
    }

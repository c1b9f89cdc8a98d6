"""FHIR Bulk Data Access v2.0.0 export: kick-off, status, cancel, files, and the workers.

What an export holds is what the caller's FHIR search shows, narrowed the same way
(``fhir_access.narrow``), further limited to datasets the caller has row-level access to
(download or in-situ processing agreements): remote-processing callers are refused at
kick-off. Workers are threads (``BulkSettings.concurrency``) of a niced process of their
own (``server.export_process``) or of the server process; they read the index page by
page and append NDJSON to files, so memory holds one page. Finished files stay in the
data directory or go to the blob store's bucket (``server.services.export_outputs``). Jobs live in a
:class:`JobStore`; a job whose worker stopped renewing its lease
(a restart, a crash) is taken over and re-run from the start.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import orjson

from server import tracing
from server.core.fhir import bundle
from server.core.fhir.bulk import (
    ExportRequest,
    Level,
    OutputFile,
    after,
    manifest,
    progress,
)
from server.core.fhir.search import parse_search
from server.errors import Forbidden, GatewayError, NotFound, TooManyRequests, Unauthorized
from server.index.fhir_store import FhirStore, now_instant
from server.security.audit import AuditLog
from server.security.audit_event import AccessRecord
from server.security.model import Action, Condition, Grant, Party, Principal
from server.services.bulk_jobs import Job, JobState, JobStore
from server.services.export_outputs import ExportOutputs
from server.services.fhir import FhirReadService
from server.services.fhir_access import narrow
from server.settings import BulkSettings

log = logging.getLogger("gateway.bulk")


def owner_of(principal: Principal) -> str:
    """Who a job belongs to: the same issuer, client and subject may poll and download it."""
    party = principal.party
    return orjson.dumps(
        [party.issuer, party.client_id, party.subject, principal.anonymous]
    ).decode()


def principal_json(p: Principal) -> dict[str, Any]:
    grants = {d: [g.condition.value, g.agreement, g.purpose] for d, g in p.grants.items()}
    return {"party": [p.party.client_id, p.party.organization, p.party.issuer, p.party.subject],
            "anonymous": p.anonymous, "admin": p.admin, "scopes": sorted(p.resource_scopes),
            "grants": grants, "unrestricted": p.unrestricted}  # fmt: skip


def principal_from(data: dict[str, Any]) -> Principal:
    grants = {d: Grant(d, Condition(c), a, pur) for d, (c, a, pur) in data["grants"].items()}
    return Principal(party=Party(*data["party"]), anonymous=data["anonymous"], admin=data["admin"],
                     resource_scopes=frozenset(data["scopes"]), grants=grants,
                     unrestricted=data["unrestricted"])  # fmt: skip


def row_datasets(principal: Principal) -> frozenset[str] | None:
    """Datasets whose rows the caller may export; None = every dataset."""
    if principal.unrestricted or principal.admin:
        return None
    return principal.datasets_for(Action.SEARCH) or frozenset()


class BulkExportService:
    def __init__(
        self,
        jobs: JobStore,
        read: FhirReadService,
        fhir_store: FhirStore,
        audit: AuditLog,
        settings: BulkSettings,
        outputs: ExportOutputs,
        failpoint: str | None = None,
    ) -> None:
        self.jobs = jobs
        self.read = read
        self.fhir_store = fhir_store
        self.audit = audit
        self.settings = settings
        self.outputs = outputs  # the data directory's folder, or the blob store's bucket
        self.failpoint = failpoint  # tests: "bulk_after_first_page" kills the process there
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- requests ----------------------------------------------------------
    def kickoff(self, principal: Principal, req: ExportRequest, request_url: str) -> Job:
        """Bulk Data v2.0.0 kick-off: checks access, then queues the job (202)."""
        req = self.check_access(principal, req)
        owner = owner_of(principal)
        if self.jobs.active_of(owner) >= self.settings.max_jobs_per_caller:
            raise TooManyRequests(
                "too many exports of this caller are queued or running; retry later",
                self.settings.retry_after_seconds * 5,
            )
        job = Job(id=uuid.uuid4().hex, owner=owner, state=JobState.QUEUED,
                  request_url=request_url, request=req.to_json(),
                  principal=principal_json(principal), created=time.time())  # fmt: skip
        self.jobs.add(job)
        self._wake.set()
        return job

    def check_access(self, principal: Principal, req: ExportRequest) -> ExportRequest:
        """``req`` if the caller may run it (types without ``_type``: those the scope allows)."""
        if principal.anonymous and not principal.unrestricted:
            raise Unauthorized("a bulk export needs an access token")
        if not req.types_named:  # Bulk Data 2.0.0: all supported types within the scope
            scoped = tuple(t for t in req.types if _in_scope(principal, t))
            req = replace(req, types=scoped or req.types)
        for rtype in req.types:
            narrow(parse_search(rtype, []), principal)  # the scope checks a search makes
        for f in req.type_filters:  # a _typeFilter is a search: 400 now, not a failed job
            parse_search(f.resource_type, list(f.pairs), strict=True)
        rows = row_datasets(principal)
        if rows is not None and not rows:
            raise Forbidden(
                "no agreement of this caller allows row-level access (download or in-situ"
                " processing); remote-processing agreements give aggregate answers only"
            )
        if req.level is Level.GROUP:
            group = req.group or ""
            found, deleted = self.fhir_store.read("ResearchStudy", group)
            if found is None or deleted or (rows is not None and group not in rows):
                raise NotFound(f"Group/{group} is not known")
        return req

    def job_of(self, job_id: str, principal: Principal) -> Job:
        """The caller's own job; 404 for another caller's, an expired or an unknown one."""
        job = self.jobs.get(job_id)
        if (
            job is None
            or job.owner != owner_of(principal)
            or (job.expires is not None and job.expires < time.time())
        ):
            raise NotFound("no such export (it may have expired or been cancelled)")
        return job

    def manifest(self, job: Job, base: str) -> dict[str, Any]:
        files = f"{base}/$export-file/{job.id}"
        output = [OutputFile(f["type"], f["name"], f["count"]) for f in job.output]
        errors = [OutputFile(f["type"], f["name"], f["count"]) for f in job.errors]
        return manifest(job.transaction_time or "", job.request_url, files, output, errors)

    def cancel(self, job_id: str, principal: Principal) -> None:
        """DELETE on the status URL: the job stops, its files go (202; later polls 404)."""
        job = self.job_of(job_id, principal)
        self.jobs.remove(job.id)
        self.outputs.remove(job.id)

    def file(
        self, job_id: str, name: str, principal: Principal
    ) -> tuple[Job, Path | Iterator[bytes]]:
        """A finished job's file: a local path, or its bytes from the bucket."""
        job = self.job_of(job_id, principal)
        names = {f["name"] for f in (*job.output, *job.errors)}
        if job.state is not JobState.COMPLETE or name not in names:
            raise NotFound("no such export file")
        return job, self.outputs.open(job.id, name)

    # -- workers -----------------------------------------------------------
    def clean_at_start(self) -> None:
        """``clean``, but a store or database that cannot be reached now does not stop a
        start (``/readyz`` names it; the workers clean again every 30 s)."""
        try:
            self.clean()
        except Exception as exc:  # any backend's error: logged, retried by the workers
            log.warning("bulk export clean-up postponed: %s", exc.__class__.__name__)

    def start(self) -> None:
        self.clean_at_start()
        for n in range(self.settings.concurrency):
            thread = threading.Thread(target=self._loop, name=f"bulk-export-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def clean(self) -> None:
        """Remove expired jobs with their files, and directories of jobs that are gone."""
        for job_id in self.jobs.expired(time.time()):
            self.jobs.remove(job_id)
            self.outputs.remove(job_id)
        known = self.jobs.ids()
        for job_id in self.outputs.job_ids() - known:
            self.outputs.remove(job_id)

    def _loop(self) -> None:
        worker = f"{uuid.uuid4().hex}"
        last_clean = time.monotonic()
        while not self._stop.is_set():
            try:
                job = self.jobs.claim(worker, self.settings.lease_seconds, time.time())
                if job is not None:
                    self.run(job, worker)
                    continue
                if time.monotonic() - last_clean > 30:
                    self.clean()
                    last_clean = time.monotonic()
            except Exception:  # a worker must survive one bad job; the job is marked failed
                log.exception("bulk export worker error")
            self._wake.wait(timeout=min(1.0, self.settings.lease_seconds / 2))
            self._wake.clear()

    def run(self, job: Job, worker: str) -> None:
        """Write every file of ``job`` (from scratch); record the outcome if still ours."""
        folder = self.outputs.folder(job.id)
        job.transaction_time = now_instant()
        try:
            with tracing.span("job export", **{"gateway.job": "export"}):
                outputs = self._write(job, worker, folder)
        except _Cancelled:
            self.outputs.remove(job.id)
            return
        except _Stopped:  # re-run from the start by the worker that takes the lease over
            return
        except GatewayError as exc:  # e.g. the index refused a _typeFilter
            outputs = None
            job.message = exc.message
        if outputs is None:
            job.state = JobState.FAILED
            job.errors = [self._error_file(folder, job.message or "the export failed")]
        else:
            job.state, job.output = JobState.COMPLETE, outputs
        self.outputs.publish(job.id, [f["name"] for f in (*job.output, *job.errors)])
        job.expires = time.time() + self.settings.expiry_seconds
        job.progress = "complete"
        if not self.jobs.finish(job, worker):
            self.outputs.remove(job.id)  # cancelled meanwhile
            return
        self._audit(job, sum(f["count"] for f in job.output))

    def _write(self, job: Job, worker: str, folder: Path) -> list[dict[str, Any]]:
        req = ExportRequest.from_json(job.request)
        principal = principal_from(job.principal)
        restrict = row_datasets(principal)
        if req.level is Level.GROUP:
            restrict = _meet(restrict, frozenset({req.group or ""}))
        outputs: list[dict[str, Any]] = []
        done = 0
        for index, rtype in enumerate(req.types):
            files = _Files(folder, rtype, self.settings.max_file_bytes)
            elements = req.elements_for(rtype)
            try:
                for page in self._pages(req, rtype, principal, restrict):
                    for resource in page:
                        if not after(resource.get("meta", {}).get("lastUpdated"), req.since):
                            continue
                        if elements:
                            resource = bundle.summarize(resource, None, elements)
                        files.write(orjson.dumps(resource))
                    done += len(page)
                    note = progress(done, rtype, index, len(req.types))
                    if not self.jobs.renew(job.id, worker, self.settings.lease_seconds, note):
                        raise _Cancelled
                    if self._stop.is_set():  # shutting down: the lease hands it on
                        raise _Stopped
                    if self.failpoint == "bulk_after_first_page":
                        log.critical("failpoint bulk_after_first_page: exiting without cleanup")
                        server = os.environ.get("GATEWAY_BULK_PARENT_PID")
                        if server:  # the export process: the whole server crashes
                            os.kill(int(server), signal.SIGKILL)
                        os._exit(137)
            finally:
                files.close()
            outputs += [{"type": rtype, "name": n, "count": c} for n, c in files.written]
        return outputs

    def _pages(
        self, req: ExportRequest, rtype: str, principal: Principal, rows: frozenset[str] | None
    ) -> Iterator[list[dict[str, Any]]]:
        seen: set[str] | None = set() if len(req.filters_for(rtype)) > 1 else None
        for pairs in req.filters_for(rtype):
            search = list(pairs)
            if req.since and rtype != "Patient":  # Patient has no _lastUpdated of its own
                search.append(("_lastUpdated", f"gt{req.since}"))
            narrowed = narrow(parse_search(rtype, search, strict=True), principal)
            narrowed = replace(narrowed, restrict=_meet(narrowed.restrict, rows),
                               count=self.settings.page_size)  # fmt: skip
            for page in self.read.pages(narrowed, "", principal):
                if seen is not None:  # several _typeFilter searches: each resource once
                    page = [r for r in page if r["id"] not in seen]
                    seen.update(r["id"] for r in page)
                yield page

    def _error_file(self, folder: Path, message: str) -> dict[str, Any]:
        outcome = {"resourceType": "OperationOutcome",
                   "issue": [{"severity": "error", "code": "exception", "diagnostics": message}]}  # fmt: skip
        name = "OperationOutcome-1.ndjson"
        (folder / name).write_bytes(orjson.dumps(outcome) + b"\n")
        return {"type": "OperationOutcome", "name": name, "count": 1}

    def _audit(self, job: Job, count: int) -> None:
        principal = principal_from(job.principal)
        req = ExportRequest.from_json(job.request)
        rows = row_datasets(principal)
        datasets = tuple(sorted(rows)) if rows is not None else ()
        if req.level is Level.GROUP and req.group:
            datasets = (req.group,)
        agreements = tuple(sorted({g.agreement for d, g in principal.grants.items()
                                   if g.agreement and d in datasets}))  # fmt: skip
        self.audit.record(AccessRecord(
            action="export", outcome=0 if job.state is JobState.COMPLETE else 8,
            http_status=200 if job.state is JobState.COMPLETE else 500, method="GET",
            path=f"/fhir/$export-status/{job.id}", query=None, source_address=None,
            client_id=principal.party.client_id, subject=principal.party.subject,
            issuer=principal.party.issuer, agreements=agreements, datasets=datasets,
            entities=(f"export:{job.id}", *(f"export-file:{f['name']}" for f in job.output)),
            outcome_text=f"export {job.state.value}: {count} resources",
        ))  # fmt: skip


def _in_scope(principal: Principal, rtype: str) -> bool:
    try:
        narrow(parse_search(rtype, []), principal)
    except (Forbidden, Unauthorized):
        return False
    return True


class _Cancelled(Exception):
    """The job was cancelled (or taken over) while it ran."""


class _Stopped(Exception):
    """The process is stopping: the job is left to its lease."""


def _meet(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    return a if b is None else a & b


class _Files:
    """NDJSON files of one resource type, split when one reaches ``max_bytes``."""

    def __init__(self, folder: Path, rtype: str, max_bytes: int) -> None:
        self.folder, self.rtype, self.max_bytes = folder, rtype, max_bytes
        self.written: list[tuple[str, int]] = []
        self._out: IO[bytes] | None = None
        self._size = 0

    def write(self, line: bytes) -> None:
        if self._out is None or (self._size + len(line) + 1 > self.max_bytes and self._size):
            self._next()
        assert self._out is not None
        self._out.write(line + b"\n")
        self._size += len(line) + 1
        name, count = self.written[-1]
        self.written[-1] = (name, count + 1)

    def _next(self) -> None:
        self.close()
        name = f"{self.rtype}-{len(self.written) + 1}.ndjson"
        self._out = (self.folder / name).open("wb", buffering=1024 * 1024)
        self._size = 0
        self.written.append((name, 0))

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

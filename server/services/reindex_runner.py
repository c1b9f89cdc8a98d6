"""Runs stored reindex jobs: in the foreground (``imaging-gateway reindex``) or as a
background worker of each serving process (jobs queued through the admin API).

The runner holds the job's lease with a heartbeat thread, stores the rebuild's state
after every batch (the checkpoint a runner taking over resumes from), and stops at the
next checkpoint when it lost the lease or its process is stopping.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping

from server import metrics, tracing
from server.errors import BadRequest, Conflict, GatewayError
from server.index.elasticsearch import ElasticsearchIndex
from server.services.reindex import ReindexReport, Stop, reindex
from server.services.reindex_jobs import ReindexJob, ReindexJobs, ReindexState
from server.settings import ReindexSettings
from server.storage.base import BlobStore

log = logging.getLogger("gateway.reindex")


class ReindexService:
    def __init__(self, jobs: ReindexJobs, index: object, store: BlobStore, patient_secret: bytes,
                 settings: ReindexSettings, failpoint: str | None = None) -> None:  # fmt: skip
        self.jobs = jobs
        self.index = index
        self.store = store
        self.patient_secret = patient_secret
        self.settings = settings
        self.failpoint = failpoint  # tests: "reindex_after_first_batch" kills the process there
        self.worker = f"reindex-{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return isinstance(self.index, ElasticsearchIndex)

    def queue(self, *, keep_old: bool, started_by: str) -> ReindexJob:
        """A new job for the background runners of the serving replicas."""
        if not self.available:
            raise BadRequest(
                "reindex rebuilds the Elasticsearch index; this gateway uses the embedded one"
            )
        return self.jobs.start(keep_old=keep_old, started_by=started_by)

    def run_here(self, *, keep_old: bool, memberships: Mapping[str, str | None] | None = None,
                 progress: Callable[[int], object] = lambda n: None) -> tuple[ReindexJob, bool]:  # fmt: skip
        """Run a job in this process: the unfinished one if nobody holds it (resumed), else a
        new one. Returns (the finished job, whether it was resumed)."""
        if not self.available:
            raise BadRequest(
                "reindex rebuilds the Elasticsearch index; this gateway uses the embedded one"
            )
        active = self.jobs.active()
        if active is None:  # a new job, leased to this process from the first moment
            job: ReindexJob | None = self.jobs.start(
                keep_old=keep_old, started_by="cli", worker=self.worker,
                lease_seconds=self.settings.lease_seconds,
            )  # fmt: skip
            assert job is not None
            return self.run(job, memberships, progress), False
        job = self.jobs.claim(self.worker, self.settings.lease_seconds, active.id)
        if job is None:
            raise Conflict(f"reindex job {active.id} is running in another process; "
                           "see 'imaging-gateway reindex --status'")  # fmt: skip
        resumed = job.attempts > 1 or job.report.phase != "new"
        return self.run(job, memberships, progress), resumed

    def run(self, job: ReindexJob, memberships: Mapping[str, str | None] | None = None,
            progress: Callable[[int], object] = lambda n: None) -> ReindexJob:  # fmt: skip
        """Run a job this worker holds to its end (or to the loss of its lease)."""
        lost = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job, lost), daemon=True,
                                name="reindex-lease")  # fmt: skip
        beat.start()
        loaded = job.report.indexed

        def checkpoint(report: ReindexReport) -> None:
            nonlocal loaded
            if lost.is_set() or self._stop.is_set() or not self.jobs.save(job):
                raise Stop
            metrics.observe_job("reindex", "indexed", report.indexed - loaded)
            loaded = report.indexed
            if self.failpoint == "reindex_after_first_batch" and report.indexed:
                log.critical("failpoint reindex_after_first_batch: exiting without cleanup")
                os._exit(137)

        try:
            with tracing.span("job reindex run", **{"gateway.job": "reindex"}):
                reindex(self.index, self.store, patient_secret=self.patient_secret,
                        keep_old=job.keep_old, progress=progress, memberships=memberships,
                        report=job.report, checkpoint=checkpoint, batch=self.settings.batch_size)  # fmt: skip
            job.state = ReindexState.COMPLETE
        except Stop:
            return job
        except GatewayError as exc:
            job.state, job.message = ReindexState.FAILED, exc.message
        except Exception as exc:  # the job says it failed; the worker goes on
            log.exception("reindex job %s failed", job.id)
            job.state, job.message = ReindexState.FAILED, f"{type(exc).__name__}: {exc}"[:500]
        finally:
            lost.set()
            beat.join(timeout=5)
        self.jobs.save(job)
        metrics.observe_job("reindex", job.state.value)
        return job

    def _heartbeat(self, job: ReindexJob, lost: threading.Event) -> None:
        interval = self.settings.lease_seconds / 3
        while not lost.wait(interval):
            try:
                if not self.jobs.renew(job, self.settings.lease_seconds):
                    lost.set()
            except Exception:  # the database blinked: the next beat tries again
                log.warning("reindex lease not renewed", exc_info=True)

    # -- background runner ---------------------------------------------------------
    def start(self) -> None:
        if not self.available or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="reindex-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            try:
                job = self.jobs.claim(self.worker, self.settings.lease_seconds)
                if job is not None:
                    log.info("reindex job %s claimed (attempt %d)", job.id, job.attempts)
                    self.run(job)
            except Exception:
                log.exception("reindex runner error")

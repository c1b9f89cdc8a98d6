"""The one composition root: ``create_app(settings)`` builds every component."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import __version__, tracing
from server.api import admin as admin_router
from server.api import errors as api_errors
from server.api import fdp as fdp_router
from server.api import login as login_router
from server.api import oauth as oauth_router
from server.api import ops as ops_router
from server.api import viewer as viewer_router
from server.api import wado_uri as wado_uri_router
from server.api.access_log import AccessLogMiddleware
from server.api.audit import AuditMiddleware
from server.api.bodies import BodyGuardMiddleware, describe_bodies
from server.api.caching import NoStoreMiddleware
from server.api.dicomweb import router as dicomweb_router
from server.api.dicomweb import stow as stow_router
from server.api.fhir import bulk as bulk_router
from server.api.fhir import router as fhir_router
from server.api.proxies import ProxyHeadersMiddleware, networks
from server.core.fhir.conformance import Conformance, default_conformance
from server.core.fhir.imaging import patient_id
from server.core.fhir.outcome import operation_outcome
from server.core.fhir.validate import validate_resource
from server.core.records import patient_key
from server.errors import BadRequest
from server.export_process import ExportProcess
from server.federation import router as federation_router
from server.index.base import FederationIndex, Index
from server.index.elasticsearch import ElasticsearchIndex
from server.index.federation_es import EsFederation
from server.index.federation_noise import NoiseStore
from server.index.federation_sql import FIRST_STUDY_MIGRATION, SqlFederation
from server.index.fhir_dicom import DicomFhirQueries
from server.index.fhir_es import EsFhirQueries
from server.index.fhir_store import FhirStore
from server.index.sqlite import SqliteIndex
from server.index.sqlite_migrations import BackgroundMigrations
from server.logs import configure as configure_logging
from server.quiet import silence_value_logging
from server.security.agreements import AgreementCache, load_contracts
from server.security.audit import AuditLog
from server.security.authn import Authenticator
from server.security.clients import ClientRegistry
from server.security.external import ExternalIssuers
from server.security.keys import InstallationSecret, SigningKeys
from server.security.model import Principal
from server.security.oidc import RelyingParty
from server.security.pseudonym_secrets import PseudonymSecrets
from server.security.sessions import SessionStore
from server.security.shared_secrets import SharedSecrets
from server.security.throttle import FailureThrottle, Limits
from server.security.tokens import TokenSettings
from server.services.bulk_export import BulkExportService
from server.services.bulk_jobs import SqlJobStore
from server.services.catalogue import CatalogueService
from server.services.check import CheckService
from server.services.deid_policy import DeidPolicies
from server.services.export_outputs import BucketExportOutputs, ExportOutputs, LocalExportOutputs
from server.services.federation import FederatedSearch
from server.services.fhir import ENDPOINT_ID, FhirReadService
from server.services.fhir_paging import SearchCursors
from server.services.fhir_write import FhirWriteService, parse_json_object
from server.services.ingest import IngestService
from server.services.maintenance import DeleteService
from server.services.pull_jobs import PullJobs
from server.services.reindex_jobs import ReindexJobs
from server.services.reindex_runner import ReindexService
from server.services.retrieve import RetrieveService
from server.settings import Settings
from server.storage.base import BlobStore
from server.storage.filesystem import FilesystemBlobStore
from server.storage.journal import WriteJournal
from server.storage.permissions import restrict_data_dir

log = logging.getLogger("gateway")


@dataclass
class Gateway:
    """Every component of one running gateway, built from one Settings."""

    settings: Settings
    store: BlobStore
    index: Index
    ingest: IngestService
    retrieve: RetrieveService
    deleter: DeleteService
    checker: CheckService
    journal: WriteJournal
    conformance: Conformance
    fhir_store: FhirStore
    fhir_read: FhirReadService
    fhir_write: FhirWriteService
    keys: SigningKeys
    tokens: TokenSettings
    clients: ClientRegistry
    agreements: AgreementCache
    authenticator: Authenticator
    external: ExternalIssuers
    sessions: SessionStore
    relying_party: RelyingParty | None
    audit: AuditLog
    throttle: FailureThrottle
    deid_policies: DeidPolicies
    catalogue: CatalogueService
    federation: FederatedSearch
    bulk: BulkExportService
    reindexer: ReindexService
    pull_jobs: PullJobs  # read for /metrics; `pull` runs its jobs through PullService
    migrations: BackgroundMigrations  # the embedded index's backfills (none on Elasticsearch)
    shared_secrets: SharedSecrets | None = None  # with a shared database (see shared_secrets)

    def authenticate(self, authorization: str | None) -> Principal:
        return self.authenticator.principal(authorization)

    def fhir_validate(self, rtype: str, body: bytes) -> dict[str, Any]:
        """$validate: an OperationOutcome listing what does not conform to the profile."""
        data = parse_json_object(body)
        if data.get("resourceType") == "Parameters":
            data = (
                next(
                    (
                        p.get("resource")
                        for p in data.get("parameter", [])
                        if p.get("name") == "resource"
                    ),
                    {},
                )
                or {}
            )
        if data.get("resourceType") != rtype:
            raise BadRequest(f"$validate on {rtype} needs a {rtype} resource")
        return operation_outcome(validate_resource(data, self.conformance))

    def recover(self) -> None:
        """Settle writes that dead processes left in flight (every start; see recovery.py)."""
        self.ingest.recovery.recover()

    def close(self) -> None:
        self.reindexer.stop()  # before the index it writes to closes
        self.migrations.stop()
        self.journal.close()
        self.index.close()
        self.fhir_store.close()
        self.clients.close()
        self.sessions.close()
        self.audit.close()
        self.throttle.close()
        self.federation.noise.close()
        self.bulk.stop()
        self.bulk.jobs.close()
        self.reindexer.jobs.close()
        self.pull_jobs.close()
        if self.shared_secrets is not None:
            self.shared_secrets.close()


def build_gateway(settings: Settings) -> Gateway:
    silence_value_logging()
    restrict_data_dir(settings.data_dir)
    store = blob_store(settings)
    journal = WriteJournal(settings.data_dir)
    sqlite_index = SqliteIndex(settings.data_dir / "index.sqlite")
    index: Index = sqlite_index if settings.index == "sqlite" else elasticsearch_index(settings)
    conformance = default_conformance()
    fhir_store = FhirStore(settings.data_dir / "fhir.sqlite", settings.database())
    queries: DicomFhirQueries | EsFhirQueries
    federation_index: FederationIndex
    if isinstance(index, ElasticsearchIndex):  # FHIR searches the same backend as QIDO
        queries = EsFhirQueries(index.es, index.names, ENDPOINT_ID, body_part_terms(conformance))
        federation_index = EsFederation(index.es, index.names)
    else:
        queries = DicomFhirQueries(sqlite_index.db, ENDPOINT_ID, body_part_terms(conformance))
        federation_index = SqlFederation(
            sqlite_index.db, ready=lambda: sqlite_index.migrations.done(FIRST_STUDY_MIGRATION)
        )
    audit = AuditLog(settings.data_dir / "audit.sqlite", database_url=settings.database())
    database_url = settings.database()
    shared = SharedSecrets(database_url) if database_url else None
    secret = (
        InstallationSecret.load_or_create_shared(shared)
        if shared
        else InstallationSecret.load_or_create(settings.data_dir)
    )
    _current_patient_keys(queries, secret.patient_id_key())
    cursors = SearchCursors(secret.derive("fhir-cursor"), settings.privacy.cursor_lifetime)
    fhir_read = FhirReadService(
        fhir_store, queries, conformance, cursors, audit, settings.privacy.min_cell_count
    )
    auth = settings.auth
    keys = (
        SigningKeys.from_jwk_file(auth.signing_key_file)
        if auth.signing_key_file
        else SigningKeys.load_or_create_shared(shared, auth.signing_alg)
        if shared
        else SigningKeys.load_or_create(settings.data_dir, auth.signing_alg)
    )
    issuer = (
        auth.issuer or settings.public_base_url or f"http://{settings.host}:{settings.port}"
    ).rstrip("/")
    tokens = TokenSettings(issuer=issuer, audience=issuer, lifetime_seconds=auth.token_lifetime)
    clients = ClientRegistry(settings.data_dir / "security.sqlite", settings.database())
    agreements = AgreementCache(
        lambda: load_contracts(fhir_store), ttl=auth.agreement_cache_seconds
    )
    public = TtlValue(lambda: public_datasets(fhir_store), ttl=auth.agreement_cache_seconds)
    every = TtlValue(lambda: set(fhir_store.ids("ResearchStudy")), ttl=auth.agreement_cache_seconds)
    external = ExternalIssuers(auth.external_issuers)
    sessions = SessionStore(settings.data_dir / "sessions.sqlite", settings.database())
    relying_party = None
    if auth.oidc.issuer and auth.oidc.client_id:
        relying_party = RelyingParty(
            issuer=auth.oidc.issuer,
            client_id=auth.oidc.client_id,
            client_secret=(
                auth.oidc.client_secret.get_secret_value() if auth.oidc.client_secret else None
            ),
            redirect_uri=f"{issuer}/oauth/callback",
            scopes=auth.oidc.scopes,
        )
    authenticator = Authenticator(
        enabled=auth.enabled, public_read=auth.public_read, keys=keys, tokens=tokens,
        clients=clients, agreements=agreements, public_datasets=public.get, external=external,
        all_datasets=every.get, sessions=sessions,
    )  # fmt: skip
    fhir_write = FhirWriteService(fhir_store, fhir_read)
    deid_policies = DeidPolicies(settings, fhir_store, PseudonymSecrets(settings.data_dir, shared))
    fhir_write.prepare = deid_policies.settle

    def changed(rtype: str) -> None:
        deid_policies.invalidate(rtype)
        agreements.invalidate()
        public.invalidate()
        every.invalidate()
        authenticator.invalidate()
        catalogue.invalidate()

    catalogue = CatalogueService(fhir_store, queries, conformance, settings)
    fhir_write.on_change = changed
    return Gateway(
        settings=settings,
        store=store,
        index=index,
        ingest=IngestService(store, index, settings, journal, deid_policies),
        retrieve=RetrieveService(store, index, settings.pixel_limits()),
        deleter=DeleteService(store, index, journal, secret.patient_id_key()),
        checker=CheckService(store, index, journal, secret.patient_id_key()),
        journal=journal,
        conformance=conformance,
        fhir_store=fhir_store,
        fhir_read=fhir_read,
        fhir_write=fhir_write,
        keys=keys,
        tokens=tokens,
        clients=clients,
        agreements=agreements,
        authenticator=authenticator,
        external=external,
        sessions=sessions,
        relying_party=relying_party,
        audit=audit,
        throttle=FailureThrottle(
            settings.data_dir / "throttle.sqlite", token_limits(settings), settings.database()
        ),
        deid_policies=deid_policies,
        catalogue=catalogue,
        federation=FederatedSearch(
            fhir_store,
            federation_index,
            queries.dataset_statistics,
            settings.federation,
            NoiseStore(settings.data_dir / "federation.sqlite", database_url),
        ),
        bulk=BulkExportService(
            SqlJobStore(settings.data_dir / "bulk.sqlite", settings.database()),
            fhir_read,
            fhir_store,
            audit,
            settings.bulk,
            export_outputs(settings, store),
            settings.failpoint,
        ),
        pull_jobs=PullJobs(settings.data_dir, database_url),
        reindexer=ReindexService(
            ReindexJobs(settings.data_dir, database_url),
            index,
            store,
            secret.patient_id_key(),
            settings.reindex,
            settings.failpoint,
        ),
        shared_secrets=shared,
        migrations=BackgroundMigrations(sqlite_index.migrations if index is sqlite_index else None),
    )


def token_limits(settings: Settings) -> Limits:
    auth = settings.auth
    return Limits(
        per_client=auth.token_max_failures_per_client,
        per_address=auth.token_max_failures_per_address,
        window_seconds=auth.token_failure_window_seconds,
    )


def _current_patient_keys(queries: DicomFhirQueries | EsFhirQueries, key: bytes) -> None:
    """Pseudonymous Patient ids made with this installation's key (upgrades, restores)."""
    key_of = partial(patient_key, key)
    if isinstance(queries, DicomFhirQueries):
        fingerprint = patient_id(key, "\x00fingerprint", None)
        rekeyed = queries.rekey_patients(key_of, fingerprint)
        if rekeyed:
            log.warning("recomputed the keyed Patient id of %d studies", rekeyed)
    elif queries.stale_patient_keys(key_of):
        log.error(
            "the Elasticsearch index holds Patient ids made with another key (or unkeyed):"
            " run `imaging-gateway reindex` so that Patient ids are keyed hashes again"
        )


def export_outputs(settings: Settings, store: BlobStore) -> ExportOutputs:
    """Bulk-export files beside the blobs: in the bucket with S3, else in the data dir."""
    work = settings.data_dir / "bulk"
    if settings.storage == "s3":
        from server.storage.s3 import S3BlobStore

        assert isinstance(store, S3BlobStore)
        return BucketExportOutputs(
            store.client, store.bucket, f"{store.config.prefix}exports/", work
        )
    return LocalExportOutputs(work)


def blob_store(settings: Settings) -> BlobStore:
    """The configured blob store (GATEWAY_STORAGE)."""
    if settings.storage == "s3":
        from server.storage.s3 import S3BlobStore, S3Config  # boto3 only when used

        cache = settings.data_dir / "s3-cache"
        return S3BlobStore(S3Config.from_settings(settings.s3), cache)
    return FilesystemBlobStore(settings.data_dir, fsync=settings.stow.fsync,
                               body_cache_bytes=settings.wado.body_cache_mb * 1024**2,
                               body_cache_min_free=settings.wado.body_cache_min_free_percent / 100)  # fmt: skip


def public_datasets(store: FhirStore) -> set[str]:
    """Datasets whose access rights are PUBLIC (readable without a token when allowed)."""
    out = set()
    for resource in store.current("ResearchStudy"):  # one query, not one per dataset
        for ext in resource.get("extension", []):
            if (
                ext.get("url", "").endswith("/dataset-access-rights")
                and ext.get("valueCode") == "PUBLIC"
            ):
                out.add(str(resource["id"]))
    return out


class TtlValue:
    """A value recomputed at most every ``ttl`` seconds (or at once after ``invalidate``)."""

    def __init__(self, compute: Callable[[], Any], ttl: float) -> None:
        self._compute, self._ttl = compute, ttl
        self._value: Any = None
        self._at = -1.0e18
        self._lock = threading.Lock()

    def get(self) -> Any:
        now = time.monotonic()
        if now - self._at <= self._ttl:
            return self._value
        with self._lock:  # one reload when it expires, not one per request waiting on it
            if time.monotonic() - self._at > self._ttl:
                self._value, self._at = self._compute(), time.monotonic()
            return self._value

    def invalidate(self) -> None:
        self._at = -1.0e18


def elasticsearch_index(settings: Settings) -> Index:
    """An Elasticsearch client from settings (several hosts, TLS with a CA file, API key or basic)."""
    from elasticsearch import Elasticsearch

    from server.index.elasticsearch import ElasticsearchIndex

    es = settings.elasticsearch
    options: dict[str, Any] = {
        "request_timeout": es.request_timeout,
        "retry_on_status": (429, 502, 503, 504),
        "retry_on_timeout": True,
        "max_retries": 3,
    }
    if es.api_key:
        options["api_key"] = es.api_key
    if es.username and es.password:
        options["basic_auth"] = (es.username, es.password)
    if es.ca_file:
        options["ca_certs"] = str(es.ca_file)
    client = Elasticsearch(es.hosts, **options)
    return ElasticsearchIndex(
        client, es.index_prefix, es.shards, es.replicas, es.refresh,
        cache_seconds=es.instance_cache_seconds,
    )  # fmt: skip


def body_part_terms(conformance: Conformance) -> Callable[[str], list[str]]:
    """SNOMED CT code → the BodyPartExamined terms the ConceptMap maps to it."""
    reverse: dict[str, list[str]] = {}
    concept_map = conformance.get("ConceptMap", "bodypart-to-snomed") or {}
    for group in concept_map.get("group", []):
        for element in group.get("element", []):
            for target in element.get("target", []):
                reverse.setdefault(target.get("code", ""), []).append(element["code"])
    return lambda code: reverse.get(code, [])


class CrossOriginResourcePolicy:
    """Add ``Cross-Origin-Resource-Policy: cross-origin`` to every response.

    Viewers served cross-origin-isolated (OHIF with SharedArrayBuffer) may only
    load resources that carry it. Plain ASGI, so streamed bodies pass untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Cross-Origin-Resource-Policy", "cross-origin")
            await send(message)

        await self.app(scope, receive, send_with_header)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    gateway = build_gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing.configure(settings.tracing.enabled)  # in each worker process, after the fork
        # Other worker processes may be receiving uploads right now: only spools
        # untouched for an hour are abandoned ones. `serve` cleans all before start.
        cleaned = gateway.store.clean_spool(older_than_seconds=3600)
        if cleaned:
            log.info("removed %d abandoned upload spool(s)", cleaned)
        # Writes of dead processes only (a live worker holds its journal's lock).
        await run_in_threadpool(gateway.recover)
        exporter = ExportProcess(settings) if settings.bulk.process else None
        if exporter is not None:  # export workers: a niced process of their own
            gateway.bulk.clean_at_start()  # expired exports go now, not when that process is up
            exporter.start()
        else:  # or threads of this process, never on the event loop
            gateway.bulk.start()
            gateway.reindexer.start()  # queued reindex jobs (the export process runs them else)
        gateway.migrations.start()  # index backfills of an upgrade, if any (/readyz says so)
        yield
        if exporter is not None:
            exporter.stop()
        gateway.close()
        tracing.shutdown()

    app = FastAPI(
        **_no_native_telemetry(),
        title="Cancer-imaging interoperability gateway",
        version=__version__,
        description="DICOMweb (STOW-RS, QIDO-RS, WADO-RS) node for a cancer-imaging federation.",
        lifespan=lifespan,
        docs_url=None,  # served by api/ops.py from local files (works offline)
        redoc_url=None,
    )
    app.state.gateway = gateway
    api_errors.install(app)
    app.include_router(dicomweb_router.router, prefix="/dicom-web")
    app.include_router(wado_uri_router.router)
    app.include_router(oauth_router.router)
    app.include_router(login_router.router)
    app.include_router(viewer_router.router)
    app.include_router(bulk_router.router, prefix="/fhir")  # before /fhir/{type}/{id}
    app.include_router(fhir_router.router, prefix="/fhir")
    app.include_router(stow_router.dataset_router, prefix="/datasets/{dataset}/dicom-web")
    app.include_router(fdp_router.router, prefix="/fdp")
    app.include_router(federation_router.router)
    app.include_router(ops_router.router)
    app.include_router(admin_router.router)
    # innermost: a request body is authorised and capped before any route reads it
    app.add_middleware(BodyGuardMiddleware, settings=settings)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors.allow_origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=[
            "Content-Type",
            "Content-Length",
            "Warning",
            "Location",
            "ETag",
            "Content-Location",
            "X-Progress",
            "Retry-After",
            "Expires",
        ],
        max_age=settings.cors.max_age,
    )

    app.add_middleware(AuditMiddleware, audit_log=gateway.audit)
    app.add_middleware(CrossOriginResourcePolicy)
    app.add_middleware(NoStoreMiddleware)
    # outermost: every layer inside (audit, rate limits, logs) sees the caller's address
    app.add_middleware(ProxyHeadersMiddleware, trusted=networks(settings.trusted_proxies))
    # outermost of all: one log line and a request id per request, whatever happens inside
    app.add_middleware(AccessLogMiddleware)

    plain_openapi = app.openapi

    def openapi_with_bodies() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe_bodies(plain_openapi())
        return app.openapi_schema

    app.openapi = openapi_with_bodies  # type: ignore[method-assign]

    return app


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry spans and logs carry raw paths, queries and exception
    messages (request data); the gateway's spans come from server/tracing.py only."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}  # FastAPI before its native telemetry
    off = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    return {"telemetry": off}


def app_from_environment() -> FastAPI:
    """Factory for uvicorn worker processes: settings from the environment."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)  # a worker process of its own
    return create_app(settings)

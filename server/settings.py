"""Typed settings, read from the environment (prefix ``GATEWAY_``).

Nested groups use ``__`` as delimiter, e.g. ``GATEWAY_STOW__MAX_BODY_BYTES``.
Every component gets its settings from :func:`server.app.create_app`; nothing
reads the environment at import time.
"""

from __future__ import annotations

import ipaddress
import os
import typing
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from server.core.deid.policy import Profile
from server.core.limits import PixelLimits
from server.index.es_refresh import RefreshMode
from server.logs import FORMATS as LOG_FORMATS
from server.logs import LEVELS as LOG_LEVELS


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class DuplicatePolicy(StrEnum):
    """What STOW does with a SOP Instance UID that is already stored with other content."""

    reject = "reject"
    overwrite = "overwrite"


class StowSettings(BaseModel):
    max_body_bytes: int = Field(default=4 * 1024**3, ge=1)
    # Parts in one request; more is refused with 413 while the body is read.
    max_parts: int = Field(default=10000, ge=1)
    # A Deflated Explicit VR Little Endian part inflating past this is refused (0xC000).
    max_inflated_bytes: int = Field(default=256 * 1024**2, ge=1024)
    duplicate_policy: DuplicatePolicy = DuplicatePolicy.reject
    fsync: bool = True


class PixelSettings(BaseModel):
    """Caps on decoded pixel data: decompression bombs cost a 4xx, never a worker."""

    # One decoded frame (rows x columns x samples x bytes). Compressed parts declaring larger
    # frames are refused at ingest; decoding, rendering or transcoding larger ones answers 413.
    max_frame_bytes: int = Field(default=64 * 1024**2, ge=1024)
    # A whole instance decoded in memory to change its transfer syntax; larger ones are
    # sent as stored.
    max_transcode_bytes: int = Field(default=512 * 1024**2, ge=1024)
    # Binary values (OB/OD/OF/OL/OV/OW/UN) above this many bytes are BulkDataURIs in metadata;
    # pixel-bearing elements always are.
    inline_binary_max_bytes: int = Field(default=256, ge=0, le=65536)


class WadoSettings(BaseModel):
    # Whole WADO-RS bodies (a study or series sent as stored, from local files) kept as one
    # file each under data_dir/bodies, at most this many MiB: a body asked for again goes out
    # in one sendfile. Forgotten when one of its instances is deleted. 0: off.
    body_cache_mb: int = Field(default=2048, ge=0)
    # A body is not kept when writing it would leave less than this share of the volume free.
    body_cache_min_free_percent: float = Field(default=10.0, ge=0, le=100)


class QidoSettings(BaseModel):
    default_limit: int = Field(default=1000, ge=1)
    max_limit: int = Field(default=10000, ge=1)


class FhirSettings(BaseModel):
    # Request bodies (create, update, batch/transaction, $validate, POST _search) above this
    # answer 413 OperationOutcome, checked on Content-Length and while a chunked body streams.
    max_body_bytes: int = Field(default=16 * 1024**2, ge=1024)


class BulkSettings(BaseModel):
    """FHIR Bulk Data export ($export): jobs, files and the workers."""

    # Seconds a completed export's files (and its status) stay available.
    expiry_seconds: int = Field(default=4 * 3600, ge=10, le=30 * 24 * 3600)
    # Exports running at the same time in each server process (the rest wait, queued).
    concurrency: int = Field(default=1, ge=1, le=16)
    # A file of one resource type is split when it reaches this size.
    max_file_bytes: int = Field(default=256 * 1024**2, ge=1024)
    # Resources read from the index per page (memory is bounded by one page).
    page_size: int = Field(default=500, ge=1, le=5000)
    # A running job whose worker has not reported for this long (a process that died,
    # a restart) is taken over and re-run by a live worker.
    lease_seconds: float = Field(default=60, ge=1, le=3600)
    # Retry-After (seconds) suggested to clients polling a running export.
    retry_after_seconds: int = Field(default=2, ge=1, le=3600)
    # Exports one caller may have queued or running at once (429 beyond).
    max_jobs_per_caller: int = Field(default=4, ge=1, le=1000)
    # Workers in a process of their own, started by each serving process (true), or as
    # threads of the serving process (false: they share its interpreter lock).
    process: bool = True
    # CPU niceness added to that process (0..19): requests get the CPU first.
    nice: int = Field(default=10, ge=0, le=19)


class ReindexSettings(BaseModel):
    """Stored reindex jobs (``imaging-gateway reindex``, ``POST /admin/reindex``)."""

    # Instances indexed per batch; the job's state is stored after each (the resume point).
    batch_size: int = Field(default=200, ge=1, le=10000)
    # A runner that stops renewing its lease this long (killed) leaves the job to another.
    lease_seconds: float = Field(default=60, ge=1, le=3600)
    # How often each serving process looks for a queued (or abandoned) job.
    poll_seconds: float = Field(default=5, ge=0.1, le=3600)


class CorsSettings(BaseModel):
    allow_origins: list[str] = ["*"]
    max_age: int = 600


class ExternalIssuer(BaseModel):
    """An OpenID provider whose tokens are accepted (OIDC discovery + JWKS).

    ``audience`` is required: without it a token the provider issued to any other service
    (or an ID token issued to a web application) would be accepted here too.
    """

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    jwks_uri: str | None = None  # default: from {issuer}/.well-known/openid-configuration
    organization_claim: str | None = None  # claim naming the user's Organization id
    # JOSE typ values accepted (RFC 9068 at+jwt, and JWT as most providers send); "" = no typ
    token_types: list[str] = ["at+jwt", "application/at+jwt", "JWT"]
    max_lifetime_seconds: int = Field(default=3600, ge=60, le=86400)  # exp - iat at most


class OidcSettings(BaseModel):
    """The OpenID provider that authenticates browser users (``/oauth/authorize``).

    The gateway is the provider's relying party (a confidential client registered there with
    the redirect URI ``<issuer>/oauth/callback``) and issues its own tokens carrying what the
    user's agreements allow.
    """

    issuer: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None  # never shown in settings dumps or logs
    scopes: list[str] = ["openid", "profile"]
    organization_claim: str | None = None  # ID token claim naming the user's Organization id

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str | None) -> str | None:
        return _http_url("auth.oidc.issuer", value)


class BrowserClient(BaseModel):
    """A public client (a browser application) allowed to use the authorization code flow.

    Redirect URIs are compared exactly (RFC 6749 section 3.1.2.3 / OAuth 2.0 Security BCP).
    """

    client_id: str = Field(min_length=1, max_length=200)
    redirect_uris: list[str] = Field(min_length=1)


class ViewerSettings(BaseModel):
    """The OHIF viewer served at ``/viewer`` (a prebuilt ``@ohif/app`` bundle; `make viewer`)."""

    enabled: bool = True
    # the bundle's dist folder; relative paths are taken from the working directory
    dist: Path = Path("viewer/node_modules/@ohif/app/dist")


class PrivacySettings(BaseModel):
    """Disclosure control for callers without row-level access, and paging cursor lifetime."""

    # Aggregate counts (Bundle.total of a count-only search, catalogue figures) that a
    # caller without row-level access sees: 1..min_cell_count-1 are reported as min_cell_count.
    min_cell_count: int = Field(default=10, ge=1, le=1000)
    # Seconds a FHIR paging cursor (_cursor in next/previous links) stays valid.
    cursor_lifetime: int = Field(default=3600, ge=10, le=7 * 24 * 3600)


class DeidSettings(BaseModel):
    """De-identification on ingest (README "De-identification")."""

    # Profile of datasets created without one and of instances stored without a dataset.
    # ``none`` is refused outside development: privacy by default.
    default_profile: Profile = Profile.basic


class CatalogueSettings(BaseModel):
    """The FAIR Data Point at /fdp (README "Joining EUCAIM"): who publishes this node's catalogue.

    The publisher and contact point describe the FDP and the catalogue, and every dataset
    that does not name its own (``imaging-gateway catalogue set``)."""

    title: str = Field(default="Cancer imaging gateway", min_length=1, max_length=500)
    description: str = Field(
        default="Imaging datasets of this cancer-imaging gateway node.",
        min_length=1,
        max_length=4000,
    )
    publisher_name: str | None = Field(default=None, max_length=500)
    publisher_email: str | None = Field(default=None, max_length=320)
    publisher_url: str | None = Field(default=None, max_length=2000)
    # Seconds a served record may be reused (by this server and by HTTP caches):
    # the work one harvester, or a flood of requests, can cause is one computation per period.
    cache_seconds: int = Field(default=30, ge=0, le=3600)


class FederationSettings(BaseModel):
    """EUCAIM federated search (README "Joining EUCAIM"): who may ask, and count protection."""

    # ``Authorization: Secret <token>`` of the node's Focus (AUTH_HEADER). None: the secret
    # is not accepted and, unless OAuth is used, the route answers 404 like the reference.
    eucaim_search_token: SecretStr | None = None
    # OAuth2 client ids that may obtain the scope ``federation:search`` (platforms that ask
    # with a bearer token instead of the secret).
    oauth_clients: list[str] = []
    # Counts 1..min_count-1 are reported as min_count; 0 stays 0. 1 (no floor) is refused
    # outside development.
    min_count: int = Field(default=10, ge=1, le=1000)
    # Counts rounded to the nearest multiple (1: exact above the floor).
    rounding_step: int = Field(default=1, ge=1, le=1000)
    # Laplace noise as Focus adds it (scale delta / epsilon), drawn once per dataset,
    # measure and true count and kept in DATA_DIR/federation.sqlite.
    noise: bool = False
    epsilon: float = Field(default=0.28, gt=0.0, le=10.0)
    delta_subjects: float = Field(default=1.0, ge=1.0, le=1000.0)  # one patient: one subject
    delta_studies: float = Field(default=3.0, ge=1.0, le=1000.0)  # one patient: several studies

    @field_validator("eucaim_search_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() == "":
            return None
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("eucaim_search_token must be at least 16 characters")
        return value


class DimseSettings(BaseModel):
    """The DIMSE service (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET; README "DIMSE")."""

    # TCP port of the DICOM listener; None (default) = no DIMSE service.
    port: int | None = Field(default=None, ge=0, le=65535)
    host: str | None = None  # bind address; default: GATEWAY_HOST
    ae_title: str = Field(default="GATEWAY", min_length=1, max_length=16)
    max_associations: int = Field(default=10, ge=1, le=1000)  # across all listener processes
    # Listener processes sharing the port (associations spread over them, least busy
    # first); 0 (default) = as many as the HTTP workers (GATEWAY_WORKERS).
    processes: int = Field(default=0, ge=0, le=64)
    # 1 MiB: a 512x512 CT slice arrives in one P-DATA PDU, not nine (each decoded in Python)
    max_pdu: int = Field(default=1_048_576, ge=4096, le=2**24)  # 0 (unlimited) is not offered
    idle_timeout: float = Field(default=60.0, gt=0, le=3600)  # no PDU from the peer
    acse_timeout: float = Field(default=30.0, gt=0, le=600)  # association negotiation/release
    dimse_timeout: float = Field(default=60.0, gt=0, le=3600)  # a DIMSE message in progress
    # DICOM TLS (PS3.15 Annex B.1/B.9): server certificate and key (PEM); with ca_file,
    # peers must present a certificate signed by that CA.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, value: str) -> str:
        if (
            value != value.strip()
            or "\\" in value
            or not value.isascii()
            or not value.isprintable()
        ):
            raise ValueError("ae_title: 1 to 16 printable ASCII characters, no backslash")
        return value

    def model_post_init(self, __context: object) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("GATEWAY_DIMSE__TLS_CERT_FILE and __TLS_KEY_FILE go together")
        if self.tls_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("GATEWAY_DIMSE__TLS_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE")


class ElasticsearchSettings(BaseModel):
    hosts: list[str] = ["http://127.0.0.1:9200"]
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    index_prefix: str = "imaging"
    shards: int = Field(default=1, ge=1)
    replicas: int = Field(default=0, ge=0)
    request_timeout: float = 30.0
    # Retrieval reuses an instance's location and a study's dataset this long (seconds) per
    # process; a delete or replace through another replica is seen within it (0: never reused)
    instance_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # What an acknowledged write guarantees (server/index/es_refresh.py): "immediate"
    # (searchable at once, a refresh shared by concurrent writers), "wait_for" (searchable
    # at once, answers at the next periodic refresh), "none" (searchable within 1 s).
    refresh: RefreshMode = "immediate"


class S3Settings(BaseModel):
    """The S3-compatible blob store (GATEWAY_STORAGE=s3); see server/storage/s3.py."""

    endpoint_url: str | None = None  # None: AWS S3 of the region
    bucket: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None  # None: the AWS default chain (environment, profile, role)
    secret_access_key: SecretStr | None = None
    ca_file: Path | None = None  # a private CA for an https endpoint
    prefix: str = ""  # object names start with it (one bucket shared by several nodes)
    part_size_mb: int = Field(default=8, ge=5, le=5120)  # multipart above this size
    # Parts of one multipart upload sent at once (memory: this many parts + 1 per upload).
    upload_concurrency: int = Field(default=4, ge=1, le=32)
    cache_mb: int = Field(default=2048, ge=0)  # local copies for decoders (LRU)
    timeout: float = Field(default=30.0, gt=0)
    # multipart uploads left by a process that died are aborted once this old (seconds)
    abandon_uploads_after: float = Field(default=3600.0, ge=1)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return _http_url("s3.endpoint_url", value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not value.endswith("/"):
            raise ValueError("s3.prefix must end with '/' (or be empty)")
        return value


class TracingSettings(BaseModel):
    # OpenTelemetry traces over OTLP/HTTP, configured by the standard OTEL_* variables; also
    # on when OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set.
    enabled: bool = False


class AuthSettings(BaseModel):
    enabled: bool = True
    issuer: str | None = None  # default: the public base URL
    token_lifetime: int = Field(default=300, ge=30, le=3600)
    signing_alg: str = "ES256"
    signing_key_file: Path | None = None  # default: keys created in DATA_DIR/keys
    public_read: bool = True  # anyone may read datasets whose access rights are PUBLIC
    agreement_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    external_issuers: list[ExternalIssuer] = []
    # /oauth/token: failed client authentications within the window lock out further attempts
    # for that client id and for that source address (429 + Retry-After) until the oldest
    # failure leaves the window.
    token_max_failures_per_client: int = Field(default=10, ge=1)
    token_max_failures_per_address: int = Field(default=50, ge=1)
    token_failure_window_seconds: float = Field(default=300.0, ge=1, le=86400)
    # Browser sign-in (authorization code + PKCE): the OpenID provider users log in at,
    # the public clients besides the built-in viewer, and the session bounds.
    oidc: OidcSettings = OidcSettings()
    browser_clients: list[BrowserClient] = []
    # A login form that takes any user name without a password, for `make run` on a laptop;
    # refused unless GATEWAY_ENVIRONMENT=development.
    dev_login: bool = False
    code_lifetime: int = Field(default=60, ge=5, le=600)  # authorization codes, seconds
    # Absolute lifetime of a sign-in session (its refresh tokens), whatever the refreshes.
    session_lifetime: int = Field(default=8 * 3600, ge=60, le=30 * 86400)

    @field_validator("signing_alg")
    @classmethod
    def _alg(cls, value: str) -> str:
        if value not in ("ES256", "RS256"):
            raise ValueError("signing_alg must be ES256 or RS256")
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str | None) -> str | None:
        return _http_url("auth.issuer", value)


class MetricsSettings(BaseModel):
    # GET /metrics (Prometheus text format) for callers in these networks, or administrators.
    enabled: bool = True
    # none by default: behind a reverse proxy on the same host every caller looks local
    allow: list[str] = []

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: list[str]) -> list[str]:
        return _networks("metrics.allow", value)


class _Environment(EnvSettingsSource):
    """Environment variables, where a list may also be written as ``a, b, c``."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            kind = field.annotation if field is not None else None
            plain_list = typing.get_origin(kind) is list and typing.get_args(kind) == (str,)
            if isinstance(value, str) and plain_list:
                return [item.strip() for item in value.split(",") if item.strip()]
            raise ValueError(
                f"{field_name}: JSON expected (a list of objects: '[{{...}}]')"
            ) from None


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value.lower() not in choices:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(choices)}")
    return value.lower()


def _networks(name: str, value: list[str]) -> list[str]:
    for item in value:
        try:
            ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{name}: {item!r} is not an IP address or CIDR") from None
    return value


def _http_url(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            f"{name} must be an absolute http(s) URL without query or fragment, e.g. "
            f"https://imaging.example.org (got {value!r})"
        )
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Environment = Environment.production
    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_base_url: str | None = None
    log_level: str = "info"
    # plain: one text line per record; json: one JSON object per line (log collectors).
    log_format: str = "plain"
    # Server processes; 0 = one per CPU, at most 4. Each process is a full gateway
    # sharing the data directory (SQLite serialises writers across processes).
    workers: int = Field(default=0, ge=0, le=64)
    # Stored files of WADO-RS responses sent by os.sendfile (zero-copy, server/serving.py):
    # less server CPU per MB and faster downloads (bench/wado_vs_orthanc.py, README). Off:
    # Python reads and writes the bytes (as behind TLS, where sendfile cannot be used).
    zero_copy: bool = True
    # Dataset (ResearchStudy id) that instances stored without naming one belong to.
    default_dataset: str | None = None
    index: str = "sqlite"
    storage: str = "filesystem"
    # Shared database for all non-index state (FHIR store, clients, jti, jobs, audit):
    # a postgresql:// URL (libpq form); unset: SQLite files in data_dir (embedded default).
    database_url: SecretStr | None = None
    stow: StowSettings = StowSettings()
    qido: QidoSettings = QidoSettings()
    wado: WadoSettings = WadoSettings()
    pixels: PixelSettings = PixelSettings()
    fhir: FhirSettings = FhirSettings()
    bulk: BulkSettings = BulkSettings()
    reindex: ReindexSettings = ReindexSettings()
    cors: CorsSettings = CorsSettings()
    # Proxies whose Forwarded / X-Forwarded-For / X-Forwarded-Proto headers are believed
    # (IP addresses or CIDR networks). Default none: the TCP peer is the caller.
    trusted_proxies: list[str] = []
    auth: AuthSettings = AuthSettings()
    privacy: PrivacySettings = PrivacySettings()
    deid: DeidSettings = DeidSettings()
    catalogue: CatalogueSettings = CatalogueSettings()
    federation: FederationSettings = FederationSettings()
    dimse: DimseSettings = DimseSettings()
    metrics: MetricsSettings = MetricsSettings()
    viewer: ViewerSettings = ViewerSettings()
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    s3: S3Settings = S3Settings()
    tracing: TracingSettings = TracingSettings()
    # Fault injection for crash-safety tests; refused outside development/test.
    failpoint: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _Environment(settings_cls), dotenv_settings, file_secret_settings)

    @field_validator("public_base_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return _http_url("public_base_url", value)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        return _one_of("log_level", value, LOG_LEVELS)

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        return _one_of("log_format", value, LOG_FORMATS)

    @field_validator("index")
    @classmethod
    def _known_index(cls, value: str) -> str:
        if value not in {"sqlite", "elasticsearch"}:
            raise ValueError(f"unknown index backend {value!r} (supported: sqlite, elasticsearch)")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("database_url must be a postgresql:// URL (unset: embedded SQLite)")
        return value

    def database(self) -> str | None:
        """The shared database URL (it may carry a password: never log it), or None."""
        return self.database_url.get_secret_value() if self.database_url else None

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        return _networks("trusted_proxies", value)

    @field_validator("storage")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        if value not in {"filesystem", "s3"}:
            raise ValueError(f"unknown storage backend {value!r} (supported: filesystem, s3)")
        return value

    def pixel_limits(self) -> PixelLimits:
        """The caps core functions take (see PixelSettings, StowSettings)."""
        return PixelLimits(
            max_frame_bytes=self.pixels.max_frame_bytes,
            max_inflated_bytes=self.stow.max_inflated_bytes,
            max_transcode_bytes=self.pixels.max_transcode_bytes,
            inline_binary_max_bytes=self.pixels.inline_binary_max_bytes,
        )

    def effective_workers(self) -> int:
        return self.workers or min(os.cpu_count() or 1, 4)

    def model_post_init(self, __context: object) -> None:
        if self.storage == "s3" and not self.s3.bucket:
            raise ValueError("GATEWAY_STORAGE=s3 needs GATEWAY_S3__BUCKET")
        if self.failpoint and self.environment is Environment.production:
            raise ValueError("GATEWAY_FAILPOINT is only allowed in development or test")
        if self.deid.default_profile is Profile.none and self.environment is (
            Environment.production
        ):
            raise ValueError(
                "GATEWAY_DEID__DEFAULT_PROFILE=none is refused in production; "
                "give datasets that arrive de-identified --deidentify none explicitly"
            )
        if self.federation.min_count < 2 and self.environment is not Environment.development:
            raise ValueError(
                "GATEWAY_FEDERATION__MIN_COUNT=1 (no minimum count) is only allowed when "
                "GATEWAY_ENVIRONMENT=development"
            )
        if self.auth.dev_login and self.environment is not Environment.development:
            raise ValueError(
                "the development login (GATEWAY_AUTH__DEV_LOGIN=true) is only allowed when "
                "GATEWAY_ENVIRONMENT=development; configure GATEWAY_AUTH__OIDC__* instead"
            )
        oidc = self.auth.oidc
        if bool(oidc.issuer) != bool(oidc.client_id):
            raise ValueError(
                "GATEWAY_AUTH__OIDC__ISSUER and GATEWAY_AUTH__OIDC__CLIENT_ID go together"
            )
        if not self.auth.enabled and self.environment is not Environment.development:
            raise ValueError(
                "authorisation can only be switched off (GATEWAY_AUTH__ENABLED=false) when "
                "GATEWAY_ENVIRONMENT=development"
            )


# Read outside Settings: the FHIR conformance folder override; docker-compose substitutions.
OTHER_VARIABLES = frozenset({"GATEWAY_CONFORMANCE_DIR", "GATEWAY_HTTP_PORT", "GATEWAY_IMAGE"})


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """``GATEWAY_*`` variables that name no setting (typos are otherwise silently ignored)."""
    env = os.environ if environ is None else environ
    unknown = []
    for name in sorted(env):
        if not name.startswith("GATEWAY_") or name in OTHER_VARIABLES:
            continue
        model: type[BaseModel] | None = Settings
        for part in name[len("GATEWAY_") :].lower().split("__"):
            field = model.model_fields.get(part) if model is not None else None
            if field is None:
                unknown.append(name)
                break
            kind = field.annotation
            model = kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None
    return unknown

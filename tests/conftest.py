"""Shared fixtures: live gateway processes and real DICOMweb clients."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient

from tests.live import LiveServer
from tests.s3_server import S3Endpoint


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--index-backend",
        choices=("sqlite", "elasticsearch"),
        default="sqlite",
        help="index backend of every live gateway (the DICOMweb suites run on both)",
    )
    parser.addoption(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="database of every live gateway's non-index state (postgresql: a database of "
        "its own on a throwaway cluster per gateway data directory)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The Elasticsearch pass leaves out tests marked ``index_independent``: they run no
    gateway whose answers could depend on the index backend (keys, settings, audit trail)."""
    if config.getoption("--index-backend") != "elasticsearch":
        return
    kept = [item for item in items if item.get_closest_marker("index_independent") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture(scope="session", autouse=True)
def index_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """With --index-backend=elasticsearch, every LiveServer uses a real Elasticsearch."""
    backend = str(request.config.getoption("--index-backend"))
    if backend == "elasticsearch":
        os.environ["GATEWAY_TEST_ES_URL"] = request.getfixturevalue("elasticsearch_url")
    yield backend
    os.environ.pop("GATEWAY_TEST_ES_URL", None)


@pytest.fixture(scope="session", autouse=True)
def database_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """With --database=postgresql, every LiveServer keeps its state in PostgreSQL."""
    backend = str(request.config.getoption("--database"))
    if backend == "postgresql":
        os.environ["GATEWAY_TEST_PG_ADMIN_URL"] = request.getfixturevalue("postgres_admin_url")
    yield backend
    os.environ.pop("GATEWAY_TEST_PG_ADMIN_URL", None)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One gateway shared by tests that only add data of their own (unique UIDs)."""
    live = LiveServer(tmp_path_factory.mktemp("shared") / "data").start()
    yield live
    live.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A gateway with an empty store, for tests that count or break things."""
    live = LiveServer(tmp_path / "data").start()
    yield live
    live.stop()


@pytest.fixture
def live_server_factory(tmp_path: Path) -> Iterator[type[LiveServer]]:
    started: list[LiveServer] = []

    class _Factory(LiveServer):
        def start(self, timeout: float = 60) -> LiveServer:
            started.append(self)
            return super().start(timeout)

    yield _Factory
    for live in started:
        live.stop()


@pytest.fixture
def client(server: LiveServer) -> DICOMwebClient:
    return DICOMwebClient(server.dicomweb)


@pytest.fixture
def fresh_client(fresh_server: LiveServer) -> DICOMwebClient:
    return DICOMwebClient(fresh_server.dicomweb)


@pytest.fixture(scope="session")
def elasticsearch_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Elasticsearch: ES_URL if given, else one started on loopback (tests/es/start.sh).

    Skips only on a developer machine that cannot run one; in CI (CI=true) it fails.
    """
    if os.environ.get("ES_URL"):
        yield os.environ["ES_URL"]
        return
    from tests.es_server import ElasticsearchUnavailable, ensure_elasticsearch, must_run

    try:
        url, stop = ensure_elasticsearch(tmp_path_factory.mktemp("elasticsearch"))
    except ElasticsearchUnavailable as exc:
        if must_run():
            raise
        pytest.skip(f"no Elasticsearch: {exc}")
    yield url
    stop()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session (tests/pg_server.py); PG_URL if given.

    Skips only on a developer machine without the server binaries; in CI (CI=true) it fails.
    """
    if os.environ.get("PG_URL"):
        yield os.environ["PG_URL"]
        return
    from tests.es_server import must_run
    from tests.live import free_port
    from tests.pg_server import PostgresUnavailable, start_postgres

    try:
        url, stop = start_postgres(free_port())
    except PostgresUnavailable as exc:
        if must_run():
            raise
        pytest.skip(f"no PostgreSQL: {exc}")
    yield url
    stop()


@pytest.fixture
def database_url(postgres_admin_url: str) -> str:
    """A new, empty PostgreSQL database of its own for one test."""
    from tests.pg_server import new_database

    return new_database(postgres_admin_url)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """A real S3 server: S3_URL if given, else SeaweedFS started on loopback (tests/s3/).

    Skips only on a developer machine that cannot run one; in CI (CI=true) it fails.
    """
    from tests.s3_server import S3Unavailable, ensure_s3, must_run

    try:
        endpoint, stop = ensure_s3(tmp_path_factory.mktemp("seaweedfs"))
    except S3Unavailable as exc:
        if must_run():
            raise
        pytest.skip(f"no S3 server: {exc}")
    yield endpoint
    stop()

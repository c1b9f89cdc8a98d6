"""A throwaway PostgreSQL cluster for the tests: initdb in a temp dir, pg_ctl on a free port.

The server binaries come from the Debian ``postgresql`` package (``tests/pg/setup.sh``
installs it); ``PG_BIN`` names another directory. Trust authentication on loopback and a
private socket directory: the cluster lives as long as the test session. As root, the
cluster runs as the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

USER = "gateway"


class PostgresUnavailable(Exception):
    """No PostgreSQL server binaries on this machine; the message says what is missing."""


def _bin_dir() -> Path:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise PostgresUnavailable("no /usr/lib/postgresql/*/bin/pg_ctl: run tests/pg/setup.sh")
    return Path(found[-1]).parent


def _as_owner(args: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *args] if owner else args


def start_postgres(port: int, *, durable: bool = False) -> tuple[str, Callable[[], None]]:
    """A new cluster on 127.0.0.1:``port``; returns (URL of its ``postgres`` database, stop).

    Not ``durable`` (tests): no fsync, as nothing must survive a power loss; ``durable``
    (benchmarks): PostgreSQL's defaults, every commit flushed, as in production.
    """
    bin_dir = _bin_dir()
    owner = "postgres" if os.geteuid() == 0 else None
    work = Path(tempfile.mkdtemp(prefix="imaging-gateway-pg."))
    data, sockets = work / "data", work / "run"
    sockets.mkdir()
    if owner:
        shutil.chown(work, owner)
        shutil.chown(sockets, owner)
    run = lambda args: subprocess.run(  # noqa: E731
        _as_owner(args, owner), check=True, capture_output=True, text=True, timeout=120
    )
    run([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8",
         "--locale=C", "--no-sync"])  # fmt: skip
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(work / "log"), "-w", "-t", "60",
         "-o", options, "start"])  # fmt: skip

    def stop() -> None:
        subprocess.run(
            _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], owner),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(work, ignore_errors=True)

    return f"postgresql://{USER}@127.0.0.1:{port}/postgres", stop


def new_database(admin_url: str) -> str:
    """A fresh, empty database on the cluster; its URL."""
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def database_for(admin_url: str, key: str) -> str:
    """The database of one gateway data directory (``key``), created on first use."""
    name = "g_" + hashlib.sha1(key.encode()).hexdigest()[:16]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name

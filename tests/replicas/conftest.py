"""Several gateway replicas behind a real load balancer (nginx from Debian).

The replicas are separate ``imaging-gateway serve`` processes sharing every piece of state
the gateway keeps (index, blob store, FHIR store, clients, audit, jobs, signing keys): on
this machine today that is one data directory (SQLite and files, with the coherent locking
a local filesystem gives). nginx balances round-robin, streams bodies both ways, and never
retries a non-idempotent request on another replica (nginx's default), so a STOW that a
dying replica did not answer is reported to the client as failed, never acknowledged.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.live import LiveServer, free_port
from tests.security.conftest import auth_env

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream gateways {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_read_timeout 120s;
        # connection errors move an idempotent request to the next replica; a POST is
        # never re-sent (no non_idempotent): its client sees the failure
        proxy_next_upstream error timeout;
        location / {{ proxy_pass http://gateways; }}
    }}
}}
"""


@dataclass
class Balancer:
    prefix: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, upstreams: list[int]) -> None:
        for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / folder).mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=3s;" for p in upstreams
        )
        conf = self.prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=self.prefix, servers=servers, port=self.port))
        self.process = subprocess.Popen(
            [NGINX, "-p", str(self.prefix), "-e", str(self.prefix / "error.log"),
             "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.prefix / "error.log").read_text()[-2000:])
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass
class Cluster:
    replicas: list[LiveServer]
    balancer: Balancer
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.balancer.url

    @property
    def first(self) -> LiveServer:
        return self.replicas[0]

    def stop(self) -> None:
        self.balancer.stop()
        for replica in self.replicas:
            replica.stop()


def start_cluster(data_dir: Path, count: int, **extra: str) -> Cluster:
    """``count`` replicas on one shared state, behind nginx (not started yet)."""
    balancer = Balancer(data_dir.parent / "nginx", free_port())
    env = auth_env(
        GATEWAY_PUBLIC_BASE_URL=balancer.url,
        GATEWAY_AUTH__AGREEMENT_CACHE_SECONDS="1",
        GATEWAY_BULK__PROCESS="true",  # as shipped: export workers in a process of their own
        GATEWAY_REINDEX__POLL_SECONDS="0.5",  # queued reindex jobs are claimed soon
        **extra,
    )
    replicas = [LiveServer(data_dir, extra_env=dict(env), name=f"replica{i}") for i in range(count)]
    return Cluster(replicas, balancer, env)


def launch(cluster: Cluster) -> Cluster:
    """Start the replicas one after the other, then the balancer."""
    for replica in cluster.replicas:
        replica.port = replica.port or free_port()
    try:
        for replica in cluster.replicas:
            replica.start()
        cluster.balancer.start([r.port for r in cluster.replicas])
    except Exception:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("replicas") / "data"

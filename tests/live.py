"""A real gateway process on a free loopback port, for tests that talk HTTP."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    data_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    demo: bool = False
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-server.log"

    def env(self) -> dict[str, str]:
        backend: dict[str, str] = {}
        es_url = os.environ.get("GATEWAY_TEST_ES_URL")
        if es_url:  # --index-backend=elasticsearch: a prefix of its own per gateway
            prefix = "t" + hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:12]
            backend = {
                "GATEWAY_INDEX": "elasticsearch",
                "GATEWAY_ELASTICSEARCH__HOSTS": f'["{es_url}"]',
                "GATEWAY_ELASTICSEARCH__INDEX_PREFIX": prefix,
            }
        env = {
            **os.environ,
            "GATEWAY_DATA_DIR": str(self.data_dir),
            # The DICOMweb/FHIR behaviour suites run without authorisation (development
            # mode); tests/security runs servers with it on.
            "GATEWAY_ENVIRONMENT": "development",
            "GATEWAY_AUTH__ENABLED": "false",
            "GATEWAY_PUBLIC_BASE_URL": self.url,
            "GATEWAY_LOG_LEVEL": "warning",
            # DICOMweb/FHIR behaviour suites store already de-identified test data; the
            # de-identification suites (tests/deid) set their own policies.
            "GATEWAY_DEID__DEFAULT_PROFILE": "none",
            "GATEWAY_WORKERS": "1",
            **backend,
            **self.extra_env,
        }
        if env["GATEWAY_ENVIRONMENT"] == "production" and (
            "GATEWAY_DEID__DEFAULT_PROFILE" not in self.extra_env
        ):
            env.pop("GATEWAY_DEID__DEFAULT_PROFILE")  # privacy by default, as shipped
        return env

    def start(self, timeout: float = 60) -> LiveServer:
        self.port = self.port or free_port()
        args = [sys.executable, "-m", "server.cli.main", "serve", "--port", str(self.port)]
        if self.demo:
            args.append("--demo")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"gateway did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``imaging-gateway ARGS`` against this server's data dir."""
        return subprocess.run(
            [sys.executable, "-m", "server.cli.main", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=600,
        )

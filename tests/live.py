"""A real gateway process on a free loopback port, for tests that talk HTTP.

Administrative commands (``imaging-gateway ARGS``, :func:`run_cli`) run in the test
process by default, with the environment, umask, logging and streams of a fresh
process: a ``python -m server.cli.main`` start-up costs seconds of imports, hundreds of
times per suite. ``GATEWAY_TEST_CLI=subprocess`` runs every one as a real process
instead; tests of the entry point itself (exit on signals, the console script, a
process's memory) call :func:`run_cli_process`. Gateways (``serve``) are processes of
their own, forked from one that has already imported the gateway (tests/forkserver.py);
``GATEWAY_TEST_SERVER=subprocess`` starts each with ``python -m server.cli.main serve``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.forkserver import ForkedProcess

CLI_MODULE = ("-m", "server.cli.main")


def run_cli_process(
    args: Sequence[str], env: Mapping[str, str], input: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``imaging-gateway ARGS`` as a process of its own."""
    return subprocess.run(
        [sys.executable, *CLI_MODULE, *args],
        env=dict(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _in_process_allowed(env: Mapping[str, str]) -> bool:
    # A failpoint ends its process (os._exit): never the test runner's.
    return os.environ.get("GATEWAY_TEST_CLI") != "subprocess" and not env.get("GATEWAY_FAILPOINT")


@contextlib.contextmanager
def _as_fresh_process(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ exactly ``env``, the umask and root logger of a new process; all restored."""
    saved_env = dict(os.environ)
    saved_umask = os.umask(0o022)
    os.umask(saved_umask)  # a new process inherits the runner's umask, as a child would
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []  # so the command's logging.basicConfig writes to its own stderr
    root.setLevel(logging.WARNING)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.umask(saved_umask)
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def run_cli(
    args: Sequence[str], env: Mapping[str, str], input: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``imaging-gateway ARGS`` with environment ``env``: exit code, stdout and stderr as a
    process would give them (an uncaught exception: its traceback on stderr, exit code 1)."""
    if not _in_process_allowed(env):
        return run_cli_process(args, env, input=input, timeout=timeout)
    from click.testing import CliRunner

    from server.cli.main import main

    runner = CliRunner()
    with _as_fresh_process(env):
        result = runner.invoke(
            main, list(args), input=input, prog_name="python -m server.cli.main",
            catch_exceptions=True,
        )  # fmt: skip
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(*result.exc_info)
        )
    return subprocess.CompletedProcess(
        [sys.executable, *CLI_MODULE, *args], result.exit_code, result.stdout, stderr
    )


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
    process: subprocess.Popen[bytes] | ForkedProcess | None = None
    name: str = ""  # replicas sharing one data dir keep logs of their own

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        suffix = f"-{self.name}" if self.name else ""
        return self.data_dir.parent / f"{self.data_dir.name}{suffix}-server.log"

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
        pg_admin = os.environ.get("GATEWAY_TEST_PG_ADMIN_URL")
        if pg_admin and "GATEWAY_DATABASE_URL" not in self.extra_env:  # --database=postgresql
            from tests.pg_server import database_for

            backend["GATEWAY_DATABASE_URL"] = database_for(pg_admin, str(self.data_dir))
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
            # Bulk export workers as threads of the server: a process of their own (the
            # default) costs every gateway start another interpreter; the export suites
            # (tests/fhir/test_bulk_export*.py, tests/replicas) run the default.
            "GATEWAY_BULK__PROCESS": "false",
            # WADO-RS bodies are kept on a test machine's disk however full it is (the
            # production floor, 10% free, would make the suites depend on the machine).
            "GATEWAY_WADO__BODY_CACHE_MIN_FREE_PERCENT": "0",
            **backend,
            **self.extra_env,
        }
        if env["GATEWAY_ENVIRONMENT"] == "production" and (
            "GATEWAY_DEID__DEFAULT_PROFILE" not in self.extra_env
        ):
            env.pop("GATEWAY_DEID__DEFAULT_PROFILE")  # privacy by default, as shipped
        return env

    def start(self, timeout: float = 180) -> LiveServer:
        self.port = self.port or free_port()
        args = [sys.executable, "-m", "server.cli.main", "serve", "--port", str(self.port)]
        if self.demo:
            args.append("--demo")
        if os.environ.get("GATEWAY_TEST_SERVER") == "subprocess":
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    args, env=self.env(), stdout=log, stderr=subprocess.STDOUT
                )
        else:  # the same command line, forked from a process that has imported the gateway
            self.process = ForkedProcess(args[3:], self.env(), self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()  # a gateway that never answered must not outlive the test
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

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``imaging-gateway ARGS`` against this server's data dir (see :func:`run_cli`)."""
        return run_cli(args, self.env(), input=input)

    def cli_process(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """``imaging-gateway ARGS`` as a process of its own (the real entry point)."""
        return run_cli_process(args, self.env(), input=input)

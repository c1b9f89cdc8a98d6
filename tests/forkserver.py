"""Gateway processes forked from one that has already imported the gateway.

A ``python -m server.cli.main serve`` start-up spends most of its CPU time importing
(FastAPI, pydicom, the Elasticsearch client, the gateway); the suites start hundreds of
gateways. This module's process (started once per test session, ``python -m
tests.forkserver``) imports all of that, then forks one child per request: the child
gets the requested environment, working directory, signal dispositions and log file
(stdin /dev/null, stdout and stderr the log), and runs the ``imaging-gateway`` command
line from ``server.cli.main``, as a new process would. Children are real processes with
their own pid (signals, /proc, exit status and kill -9 all behave the same); the fork
server reaps them and reports their exit status (as ``subprocess.Popen.returncode``:
negative for a signal).

Requests and answers are JSON lines on the fork server's stdin and stdout. If the test
session ends, the fork server's stdin closes: it terminates its children and exits.
``GATEWAY_TEST_SERVER=subprocess`` starts gateways with ``subprocess.Popen`` instead.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = ("server.cli.main", "server.app", "uvicorn", "uvicorn.main", "server.dimse.service")


# ---------------------------------------------------------------------- the fork server


def _exit_status(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _child(request: Mapping[str, Any]) -> None:
    """In the forked child: become ``imaging-gateway ARGS``; never returns."""
    code = 1
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(
                sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            )
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [sys.executable, "-m", "server.cli.main", *request["args"]]
        from server.cli.main import main

        try:
            main(list(request["args"]), prog_name="python -m server.cli.main")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(stdin: IO[str], stdout: IO[str]) -> None:
    for module in PRELOAD:
        __import__(module)
    children: dict[int, int | None] = {}
    stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
    stdout.flush()
    for line in stdin:
        request = json.loads(line)
        if request["op"] == "spawn":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)
            children[pid] = None
            answer: dict[str, Any] = {"pid": pid}
        else:  # status
            pid = int(request["pid"])
            if children.get(pid) is None:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    children[pid] = _exit_status(status)
            answer = {"returncode": children.get(pid)}
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()
    for pid, returncode in children.items():  # the session ended: no gateway outlives it
        if returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    for pid, returncode in children.items():
        if returncode is None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


# ---------------------------------------------------------------------- the test side


class ForkServer:
    """The session's fork server (started on first use)."""

    _lock = threading.Lock()
    _instance: ForkServer | None = None

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.forkserver"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lock = threading.Lock()
        hello = self._read()
        if "ready" not in hello:
            raise RuntimeError(f"fork server did not start: {hello}")

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the fork server is gone")
        return dict(json.loads(line))

    def request(self, **request: Any) -> dict[str, Any]:
        with self.lock:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            return self._read()

    def close(self) -> None:
        """End the fork server (it terminates the gateways still running) and wait for it."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @classmethod
    def get(cls) -> ForkServer:
        with cls._lock:
            if cls._instance is None or cls._instance.process.poll() is not None:
                cls._instance = ForkServer()
                atexit.register(cls._instance.close)
            return cls._instance


class ForkedProcess:
    """The parts of ``subprocess.Popen`` the tests use, for a child of the fork server."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.args = list(args)
        self._server = ForkServer.get()
        answer = self._server.request(
            op="spawn", args=self.args, env=dict(env), cwd=os.getcwd(), log=str(log)
        )
        self.pid: int = int(answer["pid"])
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.request(op="status", pid=self.pid)["returncode"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)

"""A real Elasticsearch for the tests: ES_URL if given, else one started on loopback.

The node is started by ``tests/es/start.sh`` (see ``tests/es/README.md``): the
integ-test-zip distribution from Maven Central, cached, run on the system JDK as an
unprivileged user (Elasticsearch refuses to run as root).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

START_SH = Path(__file__).resolve().parent / "es" / "start.sh"
ES_VERSION = os.environ.get("ES_VERSION", "8.19.7")
RUN_USER = os.environ.get("ES_RUN_USER", "esrunner")
START_TIMEOUT = 600.0  # a cold cache fetches ~110 MB with Maven first


class ElasticsearchUnavailable(Exception):
    """No Elasticsearch can be had on this machine; the reason is the message."""


def must_run() -> bool:
    """True in CI (CI=true): a missing Elasticsearch is a failure there, not a skip."""
    return os.environ.get("CI", "").strip().lower() == "true"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imaging-gateway-es"


def _user_exists(name: str) -> bool:
    try:
        import pwd

        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _check_prerequisites() -> None:
    if not shutil.which("bash") or not shutil.which("curl"):
        raise ElasticsearchUnavailable("bash and curl are needed to start Elasticsearch")
    java_home = os.environ.get("ES_JAVA_HOME")
    if java_home:
        if not os.access(Path(java_home) / "bin" / "java", os.X_OK):
            raise ElasticsearchUnavailable(f"ES_JAVA_HOME={java_home} has no bin/java")
    elif not shutil.which("java"):
        raise ElasticsearchUnavailable("no java on PATH (Elasticsearch needs a JDK 17+)")
    if not (_cache_dir() / f"elasticsearch-{ES_VERSION}.zip").is_file() and not shutil.which("mvn"):
        raise ElasticsearchUnavailable("no mvn on PATH to fetch the Elasticsearch distribution")
    if os.geteuid() == 0:  # Elasticsearch refuses root: start.sh runs it as RUN_USER
        if not shutil.which("runuser"):
            raise ElasticsearchUnavailable(
                "runuser is needed to run Elasticsearch as a non-root user"
            )
        if not _user_exists(RUN_USER) and not shutil.which("useradd"):
            raise ElasticsearchUnavailable(
                f"user {RUN_USER} is missing and useradd is not available"
            )


def _reachable_by_others(path: Path) -> bool:
    """Every directory from / down to ``path`` can be entered by any user."""
    path = path.resolve()
    for p in [path, *path.parents]:
        try:
            if not p.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _data_parent(work_dir: Path) -> Path:
    """Where the node's data dir goes: it must be reachable by the unprivileged user."""
    if os.geteuid() != 0:
        return work_dir  # the node runs as ourselves
    for candidate in (work_dir, Path(tempfile.gettempdir()), Path("/tmp")):
        if _reachable_by_others(candidate):
            return candidate
    raise ElasticsearchUnavailable(f"no directory reachable by {RUN_USER} for the data dir")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stopper(data: Path) -> Callable[[], None]:
    done = False

    def stop() -> None:
        nonlocal done
        if done:
            return
        done = True
        try:
            pid = int((data / "elasticsearch.pid").read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 0 and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
        shutil.rmtree(data, ignore_errors=True)

    return stop


def ensure_elasticsearch(work_dir: Path) -> tuple[str, Callable[[], None]]:
    """The URL of a running Elasticsearch and a stop function.

    ES_URL in the environment: use it (stop does nothing). Otherwise start one with
    tests/es/start.sh (stop kills it and removes its data). Raises
    ElasticsearchUnavailable(reason) if it cannot be started.
    """
    given = os.environ.get("ES_URL", "").strip()
    if given:
        return given.rstrip("/"), lambda: None

    _check_prerequisites()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="imaging-gateway-es.", dir=_data_parent(work_dir)))
    stop = _stopper(data)
    log = work_dir / "es-start.log"
    try:
        with open(log, "wb") as err:
            proc = subprocess.run(
                ["bash", str(START_SH), "--data", str(data)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                timeout=START_TIMEOUT, check=False,
            )  # fmt: skip
    except subprocess.TimeoutExpired:
        stop()
        raise ElasticsearchUnavailable(
            f"tests/es/start.sh took over {START_TIMEOUT:.0f}s"
        ) from None
    except BaseException:
        stop()
        raise
    lines = proc.stdout.decode(errors="replace").split()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("http://"):
        stop()
        tail = log.read_text(errors="replace")[-4000:]
        raise ElasticsearchUnavailable(f"tests/es/start.sh exited with {proc.returncode}:\n{tail}")
    return lines[-1], stop

"""Side-by-side DICOMweb benchmark: this gateway vs Orthanc (Debian packages).

One command runs everything: it generates a synthetic cohort, starts each server in
turn on loopback with fresh temporary storage, loads the cohort through STOW-RS,
checks the load with QIDO-RS, times QIDO-RS searches and WADO-RS series retrieval,
records peak memory, stops the server, and prints a comparison table. The same
client code drives both servers.

    python bench/run.py                 # 100,000 instances, both servers
    python bench/run.py --quick         # ~5,000 instances, smoke test
    python bench/run.py --targets orthanc --instances 20000

Results are written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.synthetic import generate_cohort, to_part10_bytes  # noqa: E402

RESULTS_DIR = REPO / "bench" / "results"
GATEWAY_BIN = REPO / ".venv" / "bin" / "imaging-gateway"
ORTHANC_BIN = "Orthanc"
DICOM_MT = "application/dicom"
ACCEPT_SERIES = 'multipart/related; type="application/dicom"'
TAG_STUDY_UID = "0020000D"
TAG_STUDY_INSTANCES = "00201208"
TAG_FAILED_SOPS = "00081198"

# Targets the gateway should meet relative to Orthanc.
TARGETS = {
    "stow_instances_per_s": (">=", 2.0),
    "stow_mb_per_s": (">=", 2.0),
    "qido_patient_id_p50_ms": ("<=", 0.5),
    "qido_date_modality_p50_ms": ("<=", 0.5),
    "qido_name_wildcard_p50_ms": ("<=", 0.5),
    "wado_series_mb_per_s": (">=", 1.0),
}


def log(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


# ---------------------------------------------------------------------------
# Machine and process helpers
# ---------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "httpx": httpx.__version__,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                out.extend(int(x) for x in fh.read().split())
        except OSError:
            continue
    return out


def process_tree(pid: int) -> list[int]:
    seen: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        todo.extend(_children(current))
    return seen


def _status_kb(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemoryWatcher:
    """Peak memory of a process tree: VmHWM per process plus a sampled RSS sum."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_sum_rss_kb = 0
        self.hwm_kb: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> MemoryWatcher:
        self._thread.start()
        return self

    def sample(self) -> None:
        total = 0
        for pid in process_tree(self.pid):
            total += _status_kb(pid, "VmRSS")
            hwm = _status_kb(pid, "VmHWM")
            if hwm:
                self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), hwm)
        self.peak_sum_rss_kb = max(self.peak_sum_rss_kb, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> dict[str, float]:
        self.sample()
        self._stop.set()
        self._thread.join()
        return {
            "peak_rss_mb": round(max(sum(self.hwm_kb.values()), self.peak_sum_rss_kb) / 1024, 1),
            "vmhwm_sum_mb": round(sum(self.hwm_kb.values()) / 1024, 1),
            "sampled_peak_rss_mb": round(self.peak_sum_rss_kb / 1024, 1),
            "processes": len(self.hwm_kb),
        }


def dir_size_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return round(total / 1e6, 1)


def storage_breakdown(path: Path) -> dict[str, float]:
    """MB per top-level entry of a data directory (index vs blobs etc.)."""
    out: dict[str, float] = {}
    for entry in sorted(path.iterdir()):
        if entry.is_dir():
            out[entry.name + "/"] = dir_size_mb(entry)
        else:
            out[entry.name] = round(entry.stat().st_size / 1e6, 1)
    big = sorted(out.items(), key=lambda kv: -kv[1])[:8]
    return dict(big)


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    base_url: str  # DICOMweb root, no trailing slash
    process: subprocess.Popen[bytes]
    storage: Path
    log_path: Path
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _wait_http(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"server exited with {process.returncode}:\n{tail}")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code < 500:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s ({last})")


def ensure_orthanc() -> str:
    """Path of the DICOMweb plugin; installs the Debian packages if needed."""

    def plugin_path() -> str | None:
        try:
            listing = subprocess.run(
                ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        candidates = [p for p in listing.split() if re.search(r"libOrthancDicomWeb\.so$", p)]
        candidates += [p for p in listing.split() if "libOrthancDicomWeb.so" in p]
        return next((p for p in candidates if os.path.exists(p)), None)

    path = plugin_path()
    if path and shutil.which(ORTHANC_BIN):
        return path
    if os.geteuid() != 0:
        raise SystemExit("as root: apt-get install orthanc orthanc-dicomweb")
    log("installing orthanc and orthanc-dicomweb with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "orthanc", "orthanc-dicomweb"],
        check=True,
        env=env,
    )
    path = plugin_path()
    if not path:
        raise SystemExit("orthanc-dicomweb installed but libOrthancDicomWeb.so not found")
    return path


def start_orthanc(work: Path) -> Server:
    plugin = ensure_orthanc()
    root = work / "orthanc"
    storage = root / "storage"
    storage.mkdir(parents=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "bench-orthanc",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpCompressionEnabled": False,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = root / "orthanc.log"
    with log_path.open("wb") as log_fh:
        process = subprocess.Popen(
            [ORTHANC_BIN, str(config_path)],
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{http_port}"
    server = Server("orthanc", f"{base}/dicom-web", process, storage, log_path)
    try:
        _wait_http(f"{base}/system", process, log_path, timeout=60)
        system = httpx.get(f"{base}/system", timeout=10).json()
        plugin_info = httpx.get(f"{base}/plugins/dicom-web", timeout=10).json()
        server.version = f"Orthanc {system.get('Version')} + DICOMweb {plugin_info.get('Version')}"
        server.extra = {"database_backend": "SQLite (default)", "config": config}
    except Exception:
        server.stop()
        raise
    return server


def start_gateway(work: Path) -> Server:
    if not GATEWAY_BIN.exists():
        raise SystemExit(f"{GATEWAY_BIN.relative_to(REPO)} not found; install the project first")
    root = work / "gateway"
    storage = root / "data"
    storage.mkdir(parents=True)
    port = free_port()
    log_path = root / "gateway.log"
    env = dict(
        os.environ,
        GATEWAY_DATA_DIR=str(storage),
        GATEWAY_ENVIRONMENT="development",
    )
    version = subprocess.run(
        [str(GATEWAY_BIN), "--version"], capture_output=True, text=True, env=env, check=False
    ).stdout.strip()
    with log_path.open("wb") as log_fh:
        process = subprocess.Popen(
            [str(GATEWAY_BIN), "serve", "--port", str(port)],
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=env,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}/dicom-web"
    server = Server("gateway", base, process, storage, log_path, version=version)
    try:
        _wait_http(f"{base}/studies?limit=1", process, log_path, timeout=90)
    except Exception:
        server.stop()
        raise
    return server


STARTERS: dict[str, Callable[[Path], Server]] = {
    "orthanc": start_orthanc,
    "gateway": start_gateway,
}


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


@dataclass
class StudyInfo:
    uid: str
    patient_id: str
    patient_name: str
    date: str
    modalities: set[str]
    instances: int = 0


@dataclass
class Corpus:
    instances: list[bytes]
    studies: dict[str, StudyInfo]
    series: list[tuple[str, str, int]]  # (study, series, instance count)
    rows: int
    generate_s: float

    @property
    def total_bytes(self) -> int:
        return sum(len(b) for b in self.instances)


def build_corpus(
    *,
    instances: int,
    per_series: int,
    series_per_study: int,
    studies_per_patient: int,
    rows: int,
    seed: int,
) -> Corpus:
    per_patient = per_series * series_per_study * studies_per_patient
    patients = max(1, -(-instances // per_patient))
    started = time.perf_counter()
    data: list[bytes] = []
    studies: dict[str, StudyInfo] = {}
    series_counts: dict[tuple[str, str], int] = {}
    for ds in generate_cohort(
        patients=patients,
        studies_per_patient=studies_per_patient,
        series_per_study=series_per_study,
        instances_per_series=per_series,
        rows=rows,
        columns=rows,
        seed=seed,
    ):
        if len(data) >= instances:
            break
        data.append(to_part10_bytes(ds))
        study_uid = str(ds.StudyInstanceUID)
        info = studies.get(study_uid)
        if info is None:
            info = studies[study_uid] = StudyInfo(
                uid=study_uid,
                patient_id=str(ds.PatientID),
                patient_name=str(ds.PatientName),
                date=str(ds.StudyDate),
                modalities=set(),
            )
        info.modalities.add(str(ds.Modality))
        info.instances += 1
        key = (study_uid, str(ds.SeriesInstanceUID))
        series_counts[key] = series_counts.get(key, 0) + 1
    series = [(s, r, n) for (s, r), n in series_counts.items()]
    return Corpus(data, studies, series, rows, time.perf_counter() - started)


# ---------------------------------------------------------------------------
# DICOMweb client (identical for every server)
# ---------------------------------------------------------------------------


def multipart_body(parts: Sequence[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {DICOM_MT}\r\n\r\n".encode())
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="{DICOM_MT}"; boundary={boundary}'
    return b"".join(chunks), content_type


def stow(
    base_url: str, instances: Sequence[bytes], *, batch: int, concurrency: int
) -> dict[str, Any]:
    """Send all instances in multipart batches from ``concurrency`` parallel clients."""
    batches = [instances[i : i + batch] for i in range(0, len(instances), batch)]
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()
    failures: list[str] = []
    done = [0]
    total = len(batches)
    next_report = [time.monotonic() + 15]
    started = time.perf_counter()

    def client() -> httpx.Client:
        c = getattr(local, "client", None)
        if c is None:
            c = httpx.Client(timeout=httpx.Timeout(600.0))
            local.client = c
            with lock:
                clients.append(c)
        return c

    def send(parts: Sequence[bytes]) -> None:
        body, content_type = multipart_body(parts)
        response = client().post(
            f"{base_url}/studies",
            content=body,
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        )
        problem = ""
        if response.status_code not in (200, 202):
            problem = f"HTTP {response.status_code}: {response.text[:300]}"
        else:
            try:
                payload = response.json()
            except ValueError:
                payload = {}
            failed = payload.get(TAG_FAILED_SOPS, {}).get("Value") if payload else None
            if failed:
                problem = f"{len(failed)} failed SOP(s) in batch"
        with lock:
            if problem:
                failures.append(problem)
            done[0] += 1
            if time.monotonic() >= next_report[0]:
                next_report[0] = time.monotonic() + 15
                rate = done[0] * batch / (time.perf_counter() - started)
                log(f"  STOW {done[0]}/{total} batches, ~{rate:.0f} instances/s")

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(send, batches))
    elapsed = time.perf_counter() - started
    for c in clients:
        c.close()
    payload_bytes = sum(len(b) for b in instances)
    return {
        "instances": len(instances),
        "batches": total,
        "batch_size": batch,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "instances_per_s": round(len(instances) / elapsed, 1),
        "mb_per_s": round(payload_bytes / 1e6 / elapsed, 2),
        "payload_mb": round(payload_bytes / 1e6, 1),
        "failed_batches": len(failures),
        "failures_sample": failures[:5],
    }


def query_string(params: dict[str, str]) -> str:
    """Percent-encode query values, leaving ``*``, ``^`` and ``,`` literal.

    Orthanc 1.10 matches on the raw query string without percent-decoding, so the
    DICOM wildcard and PN component separators must go as-is. Non-ASCII characters
    are UTF-8 percent-encoded as usual.
    """
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='*^,-.:')}" for k, v in params.items())


def qido_studies(client: httpx.Client, base_url: str, params: dict[str, str]) -> list[Any]:
    response = client.get(
        f"{base_url}/studies?{query_string(params)}",
        headers={"Accept": "application/dicom+json"},
    )
    if response.status_code == 204 or not response.content:
        return []
    response.raise_for_status()
    result = response.json()
    return result if isinstance(result, list) else []


def count_studies(base_url: str) -> tuple[int, int | None]:
    """All studies via limit/offset paging: (studies, sum of NumberOfStudyRelatedInstances)."""
    seen: set[str] = set()
    instances = 0
    have_counts = True
    offset = 0
    page = 1000
    with httpx.Client(timeout=600) as client:
        while True:
            params = {
                "limit": str(page),
                "offset": str(offset),
                "includefield": "NumberOfStudyRelatedInstances",
            }
            rows = qido_studies(client, base_url, params)
            for row in rows:
                uid = row.get(TAG_STUDY_UID, {}).get("Value", [None])[0]
                if uid in seen:
                    continue
                seen.add(uid)
                value = row.get(TAG_STUDY_INSTANCES, {}).get("Value")
                if value:
                    instances += int(value[0])
                else:
                    have_counts = False
            if len(rows) < page:
                break
            offset += len(rows)
    return len(seen), instances if have_counts else None


@dataclass
class Query:
    kind: str
    params: dict[str, str]
    expected: int | None  # None: matching semantics may legitimately differ


QUERY_LIMIT = 100
# Timed wildcard searches use ASCII prefixes: Orthanc 1.10 cannot match non-ASCII
# query values at all (see ACCENTED_PROBES), which would make it look fast.
NAME_PREFIXES = ("A", "Gar", "Sch", "Nov", "K", "Pe", "Mar", "Ni", "H", "Jo", "Mu", "S")
ACCENTED_PROBES = ("Mü*", "Åst*", "Garcí*", "Müller^Jürgen", "*ö*", "García^José")


def make_queries(corpus: Corpus, per_kind: int, seed: int) -> list[Query]:
    rng = random.Random(seed)
    studies = list(corpus.studies.values())
    by_patient: dict[str, int] = {}
    for info in studies:
        by_patient[info.patient_id] = by_patient.get(info.patient_id, 0) + 1
    patients = sorted(by_patient)
    dates = sorted({s.date for s in studies})
    modalities = sorted({m for s in studies for m in s.modalities})
    queries: list[Query] = []
    for _ in range(per_kind):
        pid = rng.choice(patients)
        queries.append(
            Query("patient_id", {"PatientID": pid, "limit": str(QUERY_LIMIT)}, by_patient[pid])
        )
    for _ in range(per_kind):
        start = dt.date.fromisoformat(rng.choice(dates))
        end = start + dt.timedelta(days=rng.choice((7, 14, 30)))
        lo, hi = start.strftime("%Y%m%d"), end.strftime("%Y%m%d")
        modality = rng.choice(modalities)
        expected = sum(1 for s in studies if lo <= s.date <= hi and modality in s.modalities)
        params = {
            "StudyDate": f"{lo}-{hi}",
            "ModalitiesInStudy": modality,
            "limit": str(QUERY_LIMIT),
        }
        queries.append(Query("date_modality", params, min(expected, QUERY_LIMIT)))
    for _ in range(per_kind):
        prefix = rng.choice(NAME_PREFIXES)
        expected = sum(1 for s in studies if s.patient_name.startswith(prefix))
        params = {"PatientName": f"{prefix}*", "limit": str(QUERY_LIMIT)}
        # Case/accent folding in PN matching is implementation-defined, so counts
        # are recorded, not enforced.
        queries.append(Query("name_wildcard", params, min(expected, QUERY_LIMIT)))
    return queries


def accented_probe(base_url: str, corpus: Corpus) -> dict[str, dict[str, int]]:
    """Untimed: do non-ASCII PatientName searches find what they should?"""
    names = [s.patient_name for s in corpus.studies.values()]
    out: dict[str, dict[str, int]] = {}
    with httpx.Client(timeout=120) as client:
        for pattern in ACCENTED_PROBES:
            expected = sum(1 for name in names if fnmatch.fnmatchcase(name, pattern))
            rows = qido_studies(client, base_url, {"PatientName": pattern, "limit": "1000"})
            out[pattern] = {"expected": min(expected, 1000), "got": len(rows)}
    return out


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * pct / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_qido(base_url: str, queries: list[Query], warmup: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(timeout=120) as client:
        kinds = sorted({q.kind for q in queries}, key=[q.kind for q in queries].index)
        for kind in kinds:
            subset = [q for q in queries if q.kind == kind]
            for q in subset[:warmup]:
                qido_studies(client, base_url, q.params)
            times: list[float] = []
            mismatches: list[dict[str, Any]] = []
            results = 0
            for q in subset:
                started = time.perf_counter()
                rows = qido_studies(client, base_url, q.params)
                times.append((time.perf_counter() - started) * 1000.0)
                results += len(rows)
                if q.expected is not None and len(rows) != q.expected:
                    mismatches.append(
                        {"params": q.params, "expected": q.expected, "got": len(rows)}
                    )
            enforce = kind != "name_wildcard"
            out[kind] = {
                "queries": len(subset),
                "p50_ms": round(percentile(times, 50), 2),
                "p95_ms": round(percentile(times, 95), 2),
                "mean_ms": round(statistics.fmean(times), 2),
                "max_ms": round(max(times), 2),
                "mean_results": round(results / len(subset), 1),
                "count_mismatches": len(mismatches),
                "count_checked": enforce,
                "mismatch_sample": mismatches[:3],
            }
    return out


def _multipart_parts(body: bytes, content_type: str) -> int:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        return 0
    return body.count(b"--" + match.group(1).encode() + b"\r\n")


def run_wado(base_url: str, series: Iterable[tuple[str, str, int]], repeats: int) -> dict[str, Any]:
    total_bytes = 0
    elapsed = 0.0
    per_request: list[float] = []
    errors: list[str] = []
    with httpx.Client(timeout=600) as client:
        for study, series_uid, count in series:
            url = f"{base_url}/studies/{study}/series/{series_uid}"
            # Warm-up retrieval doubles as the correctness check.
            response = client.get(url, headers={"Accept": ACCEPT_SERIES})
            parts = _multipart_parts(response.content, response.headers.get("content-type", ""))
            if response.status_code != 200 or parts != count:
                errors.append(f"{url}: HTTP {response.status_code}, {parts}/{count} parts")
            for _ in range(repeats):
                started = time.perf_counter()
                size = 0
                with client.stream("GET", url, headers={"Accept": ACCEPT_SERIES}) as streamed:
                    for chunk in streamed.iter_bytes(1 << 20):
                        size += len(chunk)
                took = time.perf_counter() - started
                elapsed += took
                total_bytes += size
                per_request.append(took * 1000.0)
    return {
        "retrievals": len(per_request),
        "mb_per_s": round(total_bytes / 1e6 / elapsed, 1) if elapsed else 0.0,
        "mean_series_ms": round(statistics.fmean(per_request), 1) if per_request else None,
        "mean_series_mb": round(total_bytes / 1e6 / max(1, len(per_request)), 1),
        "errors": errors,
    }


# ---------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------


def bench_target(
    name: str,
    work: Path,
    scale: Corpus,
    big: Corpus,
    queries: list[Query],
    args: argparse.Namespace,
) -> dict[str, Any]:
    log(f"{name}: starting")
    server = STARTERS[name](work)
    watcher = MemoryWatcher(server.process.pid).start()
    result: dict[str, Any] = {"version": server.version, "url": server.base_url, **server.extra}
    try:
        log(f"{name}: {server.version} at {server.base_url}")
        log(f"{name}: STOW {len(scale.instances)} instances ({scale.rows}x{scale.rows})")
        result["stow"] = stow(
            server.base_url, scale.instances, batch=args.batch, concurrency=args.concurrency
        )
        log(f"{name}: STOW {result['stow']}")
        studies, instances = count_studies(server.base_url)
        result["verify"] = {
            "expected_studies": len(scale.studies),
            "qido_studies": studies,
            "expected_instances": len(scale.instances),
            "qido_study_related_instances": instances,
            "ok": studies == len(scale.studies)
            and (instances is None or instances == len(scale.instances)),
        }
        log(f"{name}: verify {result['verify']}")
        log(f"{name}: QIDO {len(queries)} queries")
        result["qido"] = run_qido(server.base_url, queries, warmup=args.warmup)
        for kind, figures in result["qido"].items():
            log(f"{name}: QIDO {kind} {figures}")
        result["accented_probe"] = accented_probe(server.base_url, scale)
        log(f"{name}: accented PatientName probe {result['accented_probe']}")
        log(f"{name}: loading {len(big.instances)} instances ({big.rows}x{big.rows}) for WADO")
        result["stow_large"] = stow(
            server.base_url, big.instances, batch=args.wado_batch, concurrency=args.concurrency
        )
        log(f"{name}: STOW large {result['stow_large']}")
        result["wado"] = run_wado(server.base_url, big.series, repeats=args.wado_repeats)
        log(f"{name}: WADO {result['wado']}")
        result["memory"] = watcher.stop()
        result["storage_mb"] = dir_size_mb(server.storage)
        result["storage_breakdown_mb"] = storage_breakdown(server.storage)
        log(f"{name}: memory {result['memory']}")
        log(f"{name}: storage {result['storage_mb']} MB {result['storage_breakdown_mb']}")
    finally:
        if watcher._thread.is_alive():
            watcher.stop()
        server.stop()
        result["log_tail"] = server.log_path.read_text(errors="replace")[-2000:]
    return result


FIGURES: list[tuple[str, str, Callable[[dict[str, Any]], float | None]]] = [
    ("stow_instances_per_s", "STOW instances/s", lambda r: r["stow"]["instances_per_s"]),
    ("stow_mb_per_s", "STOW MB/s", lambda r: r["stow"]["mb_per_s"]),
    (
        "qido_patient_id_p50_ms",
        "QIDO PatientID p50 ms",
        lambda r: r["qido"]["patient_id"]["p50_ms"],
    ),
    (
        "qido_patient_id_p95_ms",
        "QIDO PatientID p95 ms",
        lambda r: r["qido"]["patient_id"]["p95_ms"],
    ),
    (
        "qido_date_modality_p50_ms",
        "QIDO date+modality p50 ms",
        lambda r: r["qido"]["date_modality"]["p50_ms"],
    ),
    (
        "qido_date_modality_p95_ms",
        "QIDO date+modality p95 ms",
        lambda r: r["qido"]["date_modality"]["p95_ms"],
    ),
    (
        "qido_name_wildcard_p50_ms",
        "QIDO name wildcard p50 ms",
        lambda r: r["qido"]["name_wildcard"]["p50_ms"],
    ),
    (
        "qido_name_wildcard_p95_ms",
        "QIDO name wildcard p95 ms",
        lambda r: r["qido"]["name_wildcard"]["p95_ms"],
    ),
    ("wado_series_mb_per_s", "WADO series MB/s", lambda r: r["wado"]["mb_per_s"]),
    ("stow_large_mb_per_s", "STOW 512x512 MB/s", lambda r: r["stow_large"]["mb_per_s"]),
    ("peak_rss_mb", "peak RSS MB", lambda r: r["memory"]["peak_rss_mb"]),
    ("storage_mb", "storage on disk MB", lambda r: r["storage_mb"]),
]


def build_table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for key, label, get in FIGURES:
        values: dict[str, float | None] = {}
        for target in ("gateway", "orthanc"):
            try:
                values[target] = get(results[target]) if target in results else None
            except (KeyError, TypeError):
                values[target] = None
        gw, orth = values["gateway"], values["orthanc"]
        ratio = round(gw / orth, 2) if gw is not None and orth else None
        target_text, met = "", None
        if key in TARGETS:
            op, bound = TARGETS[key]
            target_text = f"{op} {bound:g}x"
            if ratio is not None:
                met = ratio >= bound if op == ">=" else ratio <= bound
        rows.append(
            {
                "figure": key,
                "label": label,
                "gateway": gw,
                "orthanc": orth,
                "ratio": ratio,
                "target": target_text,
                "met": met,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:,.2f}".rstrip("0").rstrip(".")

    header = ("figure", "gateway", "orthanc", "gateway/orthanc", "target", "")
    lines = [header]
    for row in rows:
        met = {True: "ok", False: "MISSED", None: ""}[row["met"]]
        lines.append(
            (
                row["label"],
                fmt(row["gateway"]),
                fmt(row["orthanc"]),
                fmt(row["ratio"]),
                row["target"],
                met,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths).rstrip())
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--targets",
        default="orthanc,gateway",
        help="comma-separated: orthanc, gateway (default both)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 5,000 instances, 50 queries per kind, 1 WADO series",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=None,
        help="instances in the QIDO/STOW corpus (default 100,000)",
    )
    parser.add_argument(
        "--image-size", type=int, default=16, help="rows=columns of the scale corpus (default 16)"
    )
    parser.add_argument("--per-series", type=int, default=10, help="instances per series")
    parser.add_argument("--series-per-study", type=int, default=2)
    parser.add_argument("--studies-per-patient", type=int, default=2)
    parser.add_argument("--batch", type=int, default=50, help="instances per STOW request")
    parser.add_argument("--concurrency", type=int, default=3, help="parallel STOW clients")
    parser.add_argument(
        "--queries", type=int, default=None, help="timed queries per QIDO kind (default 200)"
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed queries per kind first")
    parser.add_argument(
        "--wado-series", type=int, default=None, help="series of the WADO corpus (default 3)"
    )
    parser.add_argument("--wado-instances", type=int, default=100, help="instances per WADO series")
    parser.add_argument("--wado-size", type=int, default=512, help="rows=columns of WADO images")
    parser.add_argument("--wado-batch", type=int, default=10, help="STOW batch for WADO corpus")
    parser.add_argument(
        "--wado-repeats", type=int, default=None, help="timed retrievals per series (default 5)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where server storage goes (default: a new temporary directory)",
    )
    parser.add_argument("--keep", action="store_true", help="keep server storage afterwards")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.instances is None:
        args.instances = 5000 if quick else 100_000
    if args.queries is None:
        args.queries = 50 if quick else 200
    if args.wado_series is None:
        args.wado_series = 1 if quick else 3
    if args.wado_repeats is None:
        args.wado_repeats = 3 if quick else 5
    args.target_list = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.target_list) - set(STARTERS)
    if unknown or not args.target_list:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown)) or '(none)'}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    machine = machine_info()
    log(f"machine: {machine}")

    log(f"generating {args.instances} instances of {args.image_size}x{args.image_size}")
    scale = build_corpus(
        instances=args.instances,
        per_series=args.per_series,
        series_per_study=args.series_per_study,
        studies_per_patient=args.studies_per_patient,
        rows=args.image_size,
        seed=args.seed,
    )
    log(
        f"  {len(scale.instances)} instances, {len(scale.studies)} studies, "
        f"{scale.total_bytes / 1e6:.1f} MB in {scale.generate_s:.1f}s"
    )
    big = build_corpus(
        instances=args.wado_series * args.wado_instances,
        per_series=args.wado_instances,
        series_per_study=1,
        studies_per_patient=1,
        rows=args.wado_size,
        seed=args.seed + 1000,
    )
    log(
        f"  WADO corpus: {len(big.series)} series x {args.wado_instances} instances of "
        f"{args.wado_size}x{args.wado_size}, {big.total_bytes / 1e6:.1f} MB"
    )
    queries = make_queries(scale, args.queries + args.warmup, seed=args.seed)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dicomweb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    try:
        for target in args.target_list:
            try:
                results[target] = bench_target(target, work, scale, big, queries, args)
            except Exception as exc:  # keep going with the other target
                errors[target] = f"{type(exc).__name__}: {exc}"
                log(f"{target}: FAILED {errors[target]}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    table = build_table(results)
    print()
    print(format_table(table))
    print()
    for target, result in results.items():
        verify = result.get("verify", {})
        status = "ok" if verify.get("ok") else "MISMATCH"
        print(
            f"{target}: {result.get('version')}; load check {status} "
            f"({verify.get('qido_studies')}/{verify.get('expected_studies')} studies, "
            f"{verify.get('qido_study_related_instances')}/{verify.get('expected_instances')} "
            "instances)"
        )
        for kind, figures in result.get("qido", {}).items():
            if figures["count_mismatches"]:
                what = "count mismatches" if figures["count_checked"] else "count differences"
                print(f"  QIDO {kind}: {figures['count_mismatches']} {what} vs generated data")
        probe = result.get("accented_probe", {})
        wrong = [p for p, v in probe.items() if v["expected"] != v["got"]]
        if wrong:
            print(f"  accented PatientName searches with wrong counts: {', '.join(wrong)}")
        if result.get("stow", {}).get("failed_batches"):
            print(f"  STOW: {result['stow']['failed_batches']} failed batch(es)")
        if result.get("wado", {}).get("errors"):
            print(f"  WADO: {len(result['wado']['errors'])} error(s)")
    for target, message in errors.items():
        print(f"{target}: FAILED: {message}")

    report = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine,
        "parameters": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("out", "workdir")
        },
        "corpus": {
            "instances": len(scale.instances),
            "studies": len(scale.studies),
            "series": len(scale.series),
            "mb": round(scale.total_bytes / 1e6, 1),
            "image_size": scale.rows,
            "generate_seconds": round(scale.generate_s, 1),
            "wado_series": len(big.series),
            "wado_mb": round(big.total_bytes / 1e6, 1),
        },
        "table": table,
        "results": results,
        "errors": errors,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    label = "quick" if args.quick else f"{len(scale.instances)}"
    out_path = args.out / f"bench-{stamp}-{label}.json"
    out_path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"results: {out_path.relative_to(REPO) if out_path.is_relative_to(REPO) else out_path}")
    print(f"wall time {report['wall_seconds']:.0f}s")
    ok = not errors and all(r.get("verify", {}).get("ok") for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

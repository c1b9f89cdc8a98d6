"""FHIR bulk export ($export) of a large embedded index: time, peak memory, QIDO/WADO impact.

Bulk-loads metadata-only studies (one instance each; two studies per patient) into the
SQLite index with the loader of ``index_scale.py`` (after serving the empty data directory
once, as an installation starts), stores a few real instances over STOW-RS (so that WADO
has bytes to send), starts the gateway and, in one run:

1. probes QIDO-RS (study search by PatientID), WADO-RS metadata (a study) and WADO-RS
   instance retrieval, one request every ``--interval`` seconds, for ``--idle`` seconds;
2. kicks off a system export of Patient and ImagingStudy and probes until it completes,
   sampling the RSS of the server and its export process every second;
3. repeats 1-2 ``--rounds`` times, then probes ``--idle`` seconds again.

It reports the (last) export's wall time, resources and rate, the server's peak RSS
(VmHWM) before and after, the export process's peak RSS and the largest VmRSS of both
seen during exports, p50/p95 of each probe idle (all idle windows pooled) and during
exports with their ratios, and the load average. ``--data-dir`` keeps the loaded directory for another run (the load is skipped
when it already holds an index).

    .venv/bin/python bench/bulk_export.py --studies 670000 --data-dir /var/tmp/bulk-670k
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_scale import _clone, _template, bench_data_dir

from server.app import build_gateway
from server.index.sqlite import SqliteIndex
from server.settings import Settings
from server.synthetic import generate_cohort, to_part10_bytes
from tests.helpers import multipart_body
from tests.live import LiveServer

STOW = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}


def _status_kb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _family(pid: int) -> list[int]:
    """The server and its child processes (the export process)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        out += [int(c) for c in children]
    return out


def _load(data: Path, tmp: Path, studies: int) -> float:
    # Served once empty, as an installation starts: the index and its records are made by
    # the gateway (the Patient-key fingerprint among them), then filled by the loader.
    build_gateway(Settings(data_dir=data)).close()
    template = _template(tmp)
    index = SqliteIndex(data / "index.sqlite")
    rng = random.Random(0)
    start = time.perf_counter()
    for first in range(0, studies, 20000):
        batch = [_clone(template, n, 1, 1, rng) for n in range(first, min(studies, first + 20000))]
        index.add_instances(batch, overwrite=False)
    index.close()
    return time.perf_counter() - start


def _stow_real_instances(client: httpx.Client, count: int) -> list[str]:
    """WADO-RS paths of ``count`` real 64x64 instances stored in dataset ``bench``."""
    parts = [
        to_part10_bytes(ds)
        for ds in generate_cohort(
            patients=1, series_per_study=1, instances_per_series=count, rows=64, columns=64
        )
    ]
    r = client.post("/datasets/bench/dicom-web/studies", content=multipart_body(parts, "b"),
                    headers=STOW)  # fmt: skip
    assert r.status_code == 200, r.text[:500]
    refs = r.json()["00081199"]["Value"]
    return [ref["00081190"]["Value"][0].split("/dicom-web", 1)[1] for ref in refs]


class Prober:
    """One request every ``interval`` seconds, rotating QIDO, WADO metadata, WADO instance."""

    def __init__(self, url: str, studies: int, instances: list[str], interval: float) -> None:
        self.client = httpx.Client(base_url=f"{url}/dicom-web", timeout=120)
        self.studies, self.instances, self.interval = studies, instances, interval
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.phase = "idle"
        self.rng = random.Random(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _request(self, kind: str) -> None:
        if kind == "qido":
            patient = self.rng.randrange(self.studies // 2)
            path, params = "/studies", {"PatientID": f"PAT{patient:07d}"}
        elif kind == "wado_metadata":
            path, params = f"/studies/2.25.1{self.rng.randrange(self.studies)}/metadata", {}
        else:
            path, params = self.rng.choice(self.instances), {}
        start = time.perf_counter()
        r = self.client.get(path, params=params)
        elapsed = (time.perf_counter() - start) * 1000
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        self.samples.setdefault(self.phase, {}).setdefault(kind, []).append(elapsed)

    def _run(self) -> None:
        kinds = ("qido", "wado_metadata", "wado_instance")
        n = 0
        while not self._stop.is_set():
            self._request(kinds[n % 3])
            n += 1
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2),
    }


def _export(
    client: httpx.Client, params: dict[str, str], limit: float | None
) -> tuple[dict[str, Any], float]:
    """The manifest and the time to it; past ``limit`` seconds: cancelled, with its progress."""
    start = time.perf_counter()
    kicked = client.get("/fhir/$export", params=params, headers={"Prefer": "respond-async"})
    assert kicked.status_code == 202, kicked.text
    location = kicked.headers["content-location"]
    while True:
        status = client.get(location)
        if status.status_code == 200:
            return status.json(), time.perf_counter() - start
        if limit is not None and time.perf_counter() - start > limit:
            client.delete(location)
            return {"cancelled": status.headers.get("x-progress")}, time.perf_counter() - start
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--data-dir", type=Path, help="keep (or reuse) the loaded data here")
    parser.add_argument("--idle", type=float, default=60, help="seconds probed before and after")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between probes")
    parser.add_argument("--rounds", type=int, default=1, help="idle window + export, repeated")
    parser.add_argument("--export-limit", type=float, help="cancel an export after this long")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bulk-export-"))
    data = bench_data_dir(args.data_dir or tmp / "data")
    load_s = None
    if not (data / "index.sqlite").exists():
        load_s = round(_load(data, tmp, args.studies), 1)
    for old in (data / "bulk").glob("*") if (data / "bulk").exists() else []:
        if old.is_dir():  # files of an earlier run's export
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
    (data / "bulk.sqlite").unlink(missing_ok=True)
    live = LiveServer(data, extra_env={"GATEWAY_LOG_LEVEL": "warning"})
    live.cli("dataset", "create", "bench", "--title", "bench", "--deidentify", "none")
    started = time.perf_counter()
    live.start(timeout=1800)
    start_s = time.perf_counter() - started
    assert live.process is not None
    pid = live.process.pid
    results: dict[str, Any] = {"studies": args.studies, "load_seconds": load_s,
                               "start_seconds": round(start_s, 1),
                               "loadavg_start": os.getloadavg()}  # fmt: skip
    try:
        with httpx.Client(base_url=live.url, timeout=120) as client:
            ready = client.get("/readyz")
            results["readyz"] = ready.json()
            instances = _stow_real_instances(client, 20)
            prober = Prober(live.url, args.studies, instances, args.interval)
            prober.start()
            loads: list[float] = []
            rss_during: list[float] = []
            exports: list[tuple[dict[str, Any], float]] = []
            for _ in range(args.rounds):
                prober.phase = "idle"
                time.sleep(args.idle)
                results.setdefault("rss_peak_mb_before", round(_status_kb(pid, "VmHWM"), 1))
                runner = threading.Thread(
                    target=lambda: exports.append(
                        _export(client, {"_type": "Patient,ImagingStudy"}, args.export_limit)
                    )
                )
                prober.phase = "export"
                runner.start()
                while runner.is_alive():
                    rss_during.append(sum(_status_kb(p, "VmRSS") for p in _family(pid)))
                    loads.append(os.getloadavg()[0])
                    runner.join(1)
            prober.phase = "idle"
            time.sleep(args.idle)
            prober.stop()
            exporter_peak = {p: round(_status_kb(p, "VmHWM"), 1) for p in _family(pid)[1:]}
            manifest, seconds = exports[-1]
            if "cancelled" in manifest:
                results["cancelled_at"] = manifest["cancelled"]
                manifest["output"] = []
            total = sum(int(o["count"]) for o in manifest["output"])
            per_type: dict[str, int] = {}
            for o in manifest["output"]:
                per_type[o["type"]] = per_type.get(o["type"], 0) + int(o["count"])
            size = 0
            if manifest["output"]:
                job = manifest["output"][0]["url"].rsplit("/", 2)[1]
                size = sum(p.stat().st_size for p in (data / "bulk" / job).glob("*.ndjson"))
            latency = {
                kind: {
                    "idle": _quantiles(prober.samples["idle"][kind]),
                    "export": _quantiles(prober.samples["export"][kind]),
                }
                for kind in prober.samples["idle"]
            }
            for row in latency.values():
                row["ratio_p50"] = round(row["export"]["p50"] / row["idle"]["p50"], 2)
                row["ratio_p95"] = round(row["export"]["p95"] / row["idle"]["p95"], 2)
            results.update(
                export_seconds=round(seconds, 1),
                resources=total,
                resources_by_type=per_type,
                resources_per_second=round(total / seconds),
                files=len(manifest["output"]),
                ndjson_mb=round(size / 1024**2, 1),
                export_seconds_each=[round(e[1], 1) for e in exports],
                rss_peak_mb_after=round(_status_kb(pid, "VmHWM"), 1),
                rss_peak_mb_export_process=exporter_peak,
                rss_max_mb_server_and_exporter_during=round(max(rss_during), 1),
                latency_ms=latency,
                loadavg_1min_during_export=[min(loads), statistics.median(loads), max(loads)],
                loadavg_end=os.getloadavg(),
            )
    finally:
        live.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

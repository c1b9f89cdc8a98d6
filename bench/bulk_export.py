"""FHIR bulk export ($export) of a large embedded index: time, peak memory, QIDO impact.

Bulk-loads metadata-only studies (one instance each; two studies per patient) into the
SQLite index with the loader of ``index_scale.py``, starts the gateway on that data
directory, runs a system-level export over HTTP and reports the time to completion, the
resources written, the server's peak RSS (VmHWM) before and after, and the QIDO p50
latency with and without an export running.

    .venv/bin/python bench/bulk_export.py --studies 100000
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_scale import _clone, _template, bench_data_dir

from server.index.sqlite import SqliteIndex
from tests.live import LiveServer


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _qido_p50(client: httpx.Client, runs: int) -> float:
    samples = []
    for n in range(runs):
        start = time.perf_counter()
        r = client.get("/dicom-web/studies", params={"PatientID": f"PAT{n * 7:07d}"})
        samples.append((time.perf_counter() - start) * 1000)
        assert r.status_code in (200, 204), r.text[:200]
    return round(statistics.median(samples), 2)


def _load(data: Path, tmp: Path, studies: int) -> float:
    template = _template(tmp)
    index = SqliteIndex(data / "index.sqlite")
    rng = random.Random(0)
    start = time.perf_counter()
    for first in range(0, studies, 20000):
        batch = [_clone(template, n, 1, 1, rng) for n in range(first, min(studies, first + 20000))]
        index.add_instances(batch, overwrite=False)
    index.close()
    return time.perf_counter() - start


def _export(client: httpx.Client, params: dict[str, str]) -> tuple[dict[str, object], float]:
    start = time.perf_counter()
    kicked = client.get("/fhir/$export", params=params, headers={"Prefer": "respond-async"})
    assert kicked.status_code == 202, kicked.text
    while True:
        status = client.get(kicked.headers["content-location"])
        if status.status_code == 200:
            return status.json(), time.perf_counter() - start
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--qido-runs", type=int, default=100)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bulk-export-"))
    data = bench_data_dir(tmp / "data")
    load_s = _load(data, tmp, args.studies)
    started = time.perf_counter()  # start-up includes the index's at-start migrations
    live = LiveServer(data, extra_env={"GATEWAY_LOG_LEVEL": "warning"}).start(timeout=1800)
    start_s = time.perf_counter() - started
    assert live.process is not None
    pid = live.process.pid
    results: dict[str, object] = {"studies": args.studies, "load_seconds": round(load_s, 1),
                                  "start_seconds": round(start_s, 1)}  # fmt: skip
    with httpx.Client(base_url=live.url, timeout=120) as client:
        results["qido_p50_ms_idle"] = _qido_p50(client, args.qido_runs)
        results["rss_peak_mb_before"] = round(_peak_rss_mb(pid), 1)
        during: list[float] = []
        probe = threading.Thread(target=lambda: during.append(_qido_p50(client, args.qido_runs)))
        manifest_box: list[tuple[dict[str, object], float]] = []
        runner = threading.Thread(
            target=lambda: manifest_box.append(_export(client, {"_type": "Patient,ImagingStudy"}))
        )
        runner.start()
        time.sleep(2)
        probe.start()
        probe.join()
        runner.join()
        manifest, seconds = manifest_box[0]
        outputs = manifest["output"]
        assert isinstance(outputs, list)
        total = sum(int(o["count"]) for o in outputs)
        size = sum(p.stat().st_size for p in (data / "bulk").rglob("*.ndjson"))
        results.update(
            export_seconds=round(seconds, 1),
            resources=total,
            resources_per_second=round(total / seconds),
            files=len(outputs),
            ndjson_mb=round(size / 1024**2, 1),
            rss_peak_mb_after=round(_peak_rss_mb(pid), 1),
            qido_p50_ms_during_export=during[0] if during else None,
        )
    live.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

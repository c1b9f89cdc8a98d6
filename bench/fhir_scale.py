"""FHIR ImagingStudy search and read latency at 100,000 studies (embedded index).

Bulk-loads metadata-only studies (one series of two instances each) into the
SQLite index with the loader of ``index_scale.py``, starts the gateway on that data
directory and times FHIR requests over HTTP.

    .venv/bin/python bench/fhir_scale.py --studies 100000
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_scale import PATIENT_KEY, _clone, _template, bench_data_dir

from server.core.fhir.imaging import patient_id
from server.index.sqlite import SqliteIndex
from tests.live import LiveServer


def _time(client: httpx.Client, path: str, params: dict[str, str], runs: int) -> dict[str, float]:
    for _ in range(5):
        client.get(path, params=params)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        r = client.get(path, params=params)
        samples.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, r.text[:300]
    samples.sort()
    body = r.json()
    hits = (
        len([e for e in body.get("entry", []) if e.get("search", {}).get("mode") == "match"])
        if body.get("resourceType") == "Bundle"
        else 1
    )
    return {
        "p50": round(statistics.median(samples), 2),
        "p95": round(samples[int(len(samples) * 0.95) - 1], 2),
        "hits": hits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fhir-scale-"))
    data = bench_data_dir(tmp / "data")
    template = _template(tmp)
    index = SqliteIndex(data / "index.sqlite")
    rng = random.Random(0)
    instances = args.studies * 2
    start = time.perf_counter()
    for first in range(0, instances, 20000):
        index.add_instances(
            [_clone(template, n, 2, 2, rng) for n in range(first, min(instances, first + 20000))],
            overwrite=False,
        )
    load_s = time.perf_counter() - start
    index.close()
    live = LiveServer(data, extra_env={"GATEWAY_LOG_LEVEL": "warning"}).start()
    patient = patient_id(PATIENT_KEY, f"PAT{args.studies // 4:07d}", "SYNTHETIC")
    study_uid = f"2.25.1{args.studies // 2}"
    queries = {
        "by patient": ("/ImagingStudy", {"subject": f"Patient/{patient}"}),
        "by modality + started range": (
            "/ImagingStudy",
            {"modality": "MR", "started": ["ge2020-01-01", "lt2020-02-01"]},
        ),
        "by patient, _include=ImagingStudy:subject": (
            "/ImagingStudy",
            {"subject": f"Patient/{patient}", "_include": "ImagingStudy:subject"},
        ),
        "by modality + started, _total=none": (
            "/ImagingStudy",
            {"modality": "MR", "started": ["ge2020-01-01", "lt2020-02-01"], "_total": "none"},
        ),
        "read ImagingStudy": (f"/ImagingStudy/{study_uid}", {}),
    }
    results = {"studies": args.studies, "load_seconds": round(load_s, 1)}
    with httpx.Client(base_url=f"{live.url}/fhir", timeout=60) as client:
        for name, (path, params) in queries.items():
            results[name] = _time(client, path, params, args.runs)  # type: ignore[arg-type]
    live.stop()
    print(json.dumps(results, indent=2))
    print("| query | p50 ms | p95 ms | matches |\n|---|---|---|---|")
    for name, r in results.items():
        if isinstance(r, dict):
            print(f"| {name} | {r['p50']} | {r['p95']} | {r['hits']} |")


if __name__ == "__main__":
    main()

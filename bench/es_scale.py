"""SQLite vs Elasticsearch from 10,000 to 1,000,000 instances, in one run.

The same metadata-only records (index_scale.py's loader) go into both backends at
each size (bulk ingest rate measured); then a gateway on each backend answers the same
QIDO and FHIR requests over HTTP (p50/p95). Elasticsearch: ES_URL, or one started on
loopback with a 2 GB heap.

    .venv/bin/python bench/es_scale.py --sizes 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from index_scale import PATIENT_KEY, _clone, _template, bench_data_dir

from server.core.fhir.imaging import patient_id
from server.index.sqlite import SqliteIndex
from tests.live import LiveServer

BATCH = 2000


def _es(tmp: Path) -> tuple[str, object]:
    if os.environ.get("ES_URL"):
        return os.environ["ES_URL"], lambda: None
    os.environ.setdefault("ES_HEAP", "2g")
    from tests.es_server import ensure_elasticsearch

    return ensure_elasticsearch(tmp)


def _time(
    client: httpx.Client, path: str, params: dict[str, object], runs: int
) -> dict[str, float]:
    for _ in range(10):
        client.get(path, params=params)  # type: ignore[arg-type]
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        r = client.get(path, params=params)  # type: ignore[arg-type]
        samples.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, r.text[:300]
    samples.sort()
    return {
        "p50": round(statistics.median(samples), 1),
        "p95": round(samples[int(len(samples) * 0.95) - 1], 1),
    }


def _queries(size: int) -> dict[str, tuple[str, dict[str, object]]]:
    patient = size // 80
    return {
        "QIDO PatientID": ("/dicom-web/studies", {"PatientID": f"PAT{patient:07d}"}),
        "QIDO date range + modality": (
            "/dicom-web/studies",
            {"StudyDate": "20200101-20200131", "ModalitiesInStudy": "MR", "limit": "100"},
        ),
        "QIDO name wildcard": ("/dicom-web/studies", {"PatientName": "gar*", "limit": "100"}),
        "FHIR ImagingStudy by patient": (
            "/fhir/ImagingStudy",
            {"subject": f"Patient/{patient_id(PATIENT_KEY, f'PAT{patient:07d}', 'SYNTHETIC')}"},
        ),
        "FHIR ImagingStudy modality + started": (
            "/fhir/ImagingStudy",
            {"modality": "MR", "started": ["ge2020-01-01", "lt2020-02-01"]},
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="es-scale-"))
    url, stop = _es(tmp)
    from elasticsearch import Elasticsearch

    from server.index.elasticsearch import ElasticsearchIndex

    prefix = f"scale{int(time.time())}"
    es_index = ElasticsearchIndex(Elasticsearch(url, request_timeout=120), prefix, refresh=False)
    bench_data_dir(tmp / "sqlite")
    bench_data_dir(tmp / "es")
    sq_index = SqliteIndex(tmp / "sqlite" / "index.sqlite")
    template = _template(tmp)
    rng = random.Random(0)
    loaded, rows = 0, []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            rates = {"sqlite": 0.0, "elasticsearch": 0.0}
            for first in range(loaded, size, BATCH):
                batch = [
                    _clone(template, n, 10, 20, rng) for n in range(first, min(size, first + BATCH))
                ]
                for name, index in (("sqlite", sq_index), ("elasticsearch", es_index)):
                    start = time.perf_counter()
                    index.add_instances(batch, overwrite=False)
                    rates[name] += time.perf_counter() - start
            es_index.es.indices.refresh(index=f"{prefix}-*")
            row: dict[str, object] = {
                "instances": size,
                "ingest_per_s": {k: round((size - loaded) / v) for k, v in rates.items() if v},
            }
            loaded = size
            for name, env, data in (("sqlite", {}, tmp / "sqlite"),
                                    ("elasticsearch", {"GATEWAY_INDEX": "elasticsearch", "GATEWAY_ELASTICSEARCH__HOSTS": f'["{url}"]',
                                                       "GATEWAY_ELASTICSEARCH__INDEX_PREFIX": prefix}, tmp / "es")):  # fmt: skip
                live = LiveServer(data, extra_env={**env, "GATEWAY_LOG_LEVEL": "warning"}).start()
                with httpx.Client(base_url=live.url, timeout=120) as client:
                    row[name] = {
                        q: _time(client, p, params, args.runs)
                        for q, (p, params) in _queries(size).items()
                    }
                live.stop()
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        stop()  # type: ignore[operator]
    names = list(_queries(10).keys())
    print(
        "\n| request | "
        + " | ".join(f"{r['instances']:,}: SQLite / ES p50 ms" for r in rows)
        + " |"
    )
    print("|---|" + "---|" * len(rows))
    for q in names:
        cells = [f"{r['sqlite'][q]['p50']} / {r['elasticsearch'][q]['p50']}" for r in rows]  # type: ignore[index]
        print(f"| {q} | " + " | ".join(cells) + " |")
    ingest = [
        f"{r['ingest_per_s'].get('sqlite', '-')} / {r['ingest_per_s'].get('elasticsearch', '-')}"
        for r in rows
    ]  # type: ignore[union-attr]
    print("| bulk ingest instances/s | " + " | ".join(ingest) + " |")


if __name__ == "__main__":
    main()

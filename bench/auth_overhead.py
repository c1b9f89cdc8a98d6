"""Overhead of authorisation + audit: QIDO p50 and WADO-RS throughput, with vs without.

Two gateways on copies of the same data: one in development mode with authorisation
off, one in production mode with a client token whose agreement grants download
on the dataset (every request: token check, request-time agreements, dataset
narrowing, one audit event).

    .venv/bin/python bench/auth_overhead.py [--studies 2000] [--runs 500]
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.synthetic import generate_cohort, to_part10_bytes  # noqa: E402
from tests.helpers import multipart_body  # noqa: E402
from tests.live import LiveServer  # noqa: E402


def _load(live: LiveServer, token: str | None, studies: int) -> list[tuple[str, str, str]]:
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    batch: list[bytes] = []
    series: list[tuple[str, str, str]] = []
    for ds in generate_cohort(
        patients=studies, series_per_study=1, instances_per_series=4, rows=256, columns=256, seed=9
    ):
        batch.append(to_part10_bytes(ds))
        key = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.PatientID))
        if not series or series[-1] != key:
            series.append(key)
        if len(batch) == 100:
            r = httpx.post(
                f"{live.url}/datasets/bench/dicom-web/studies",
                content=multipart_body(batch, "b"),
                headers=headers,
                timeout=120,
            )
            assert r.status_code == 200, r.text[:300]
            batch = []
    if batch:
        httpx.post(
            f"{live.url}/datasets/bench/dicom-web/studies",
            content=multipart_body(batch, "b"),
            headers=headers,
            timeout=120,
        )
    return series


def _qido_p50(client: httpx.Client, patients: list[str], runs: int) -> float:
    samples = []
    for n in range(runs + 20):
        start = time.perf_counter()
        r = client.get("/dicom-web/studies", params={"PatientID": patients[n % len(patients)]})
        elapsed = (time.perf_counter() - start) * 1000
        assert r.status_code == 200 and r.json(), r.text[:200]
        if n >= 20:
            samples.append(elapsed)
    return statistics.median(samples)


def _wado_mb_s(client: httpx.Client, series: list[tuple[str, str, str]]) -> float:
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    total, start = 0, time.perf_counter()
    for study, ser, _ in series[:40]:
        r = client.get(f"/dicom-web/studies/{study}/series/{ser}", headers=accept)
        assert r.status_code == 200
        total += len(r.content)
    return total / (time.perf_counter() - start) / 1e6


def _token(live: LiveServer, client_id: str, secret: str) -> str:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    r = httpx.post(
        f"{live.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def _cli_value(output: str, key: str) -> str:
    return next(line.split(": ", 1)[1] for line in output.splitlines() if line.startswith(key))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="auth-bench-"))
    on_env = {
        "GATEWAY_ENVIRONMENT": "production",
        "GATEWAY_AUTH__ENABLED": "true",
        "GATEWAY_AUTH__PUBLIC_READ": "false",
        "GATEWAY_LOG_LEVEL": "warning",
    }
    secured = LiveServer(tmp / "on", extra_env=on_env)
    secured.cli("dataset", "create", "bench", "--title", "Bench", "--cancer-type", "lung")
    pusher = secured.cli("clients", "add", "--name", "push", "--store", "bench").stdout
    reader = secured.cli("clients", "add", "--name", "reader", "--organization", "lab").stdout
    secured.cli(
        "daa",
        "create",
        "daa-bench",
        "--dataset",
        "bench",
        "--condition",
        "download",
        "--organization",
        "lab",
    )
    secured.start()
    series = _load(
        secured,
        _token(secured, _cli_value(pusher, "client_id"), _cli_value(pusher, "client_secret")),
        args.studies,
    )
    token = _token(secured, _cli_value(reader, "client_id"), _cli_value(reader, "client_secret"))
    secured.stop()
    shutil.copytree(tmp / "on", tmp / "off")
    open_server = LiveServer(tmp / "off", extra_env={"GATEWAY_LOG_LEVEL": "warning"})
    results: dict[str, dict[str, float]] = {}
    patients = [p for _, _, p in series]
    for name, live, headers in (
        ("off", open_server, {}),
        ("on", secured, {"Authorization": f"Bearer {token}"}),
    ):
        live.start()
        with httpx.Client(base_url=live.url, headers=headers, timeout=60) as client:
            if name == "on":  # a fresh token: the first one may have expired while loading
                client.headers["Authorization"] = (
                    f"Bearer {_token(live, _cli_value(reader, 'client_id'), _cli_value(reader, 'client_secret'))}"
                )
            results[name] = {
                "qido_p50_ms": _qido_p50(client, patients, args.runs),
                "wado_mb_s": _wado_mb_s(client, series),
            }
        live.stop()
    qido = results["on"]["qido_p50_ms"] / results["off"]["qido_p50_ms"] - 1
    wado = 1 - results["on"]["wado_mb_s"] / results["off"]["wado_mb_s"]
    print(json.dumps(results, indent=2))
    print(
        "| figure | authorisation off | on (token + agreement + audit) | overhead |\n|---|---|---|---|"
    )
    print(
        f"| QIDO p50 ms | {results['off']['qido_p50_ms']:.2f} | {results['on']['qido_p50_ms']:.2f} | {qido:+.1%} |"
    )
    print(
        f"| WADO series MB/s | {results['off']['wado_mb_s']:.0f} | {results['on']['wado_mb_s']:.0f} | {wado:+.1%} |"
    )


if __name__ == "__main__":
    main()

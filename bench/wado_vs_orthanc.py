"""WADO-RS retrieval: this gateway vs Orthanc vs nginx serving the same bytes, one run.

Starts, on fixed loopback ports (``--port-base``, default 18600: Orthanc HTTP +0 and
DICOM +1, the gateway +2, nginx +3, a second gateway +4), Orthanc 1.x with its DICOMweb
plugin (Debian packages, default SQLite index and file storage, authentication off), the
gateway (``imaging-gateway serve``, ``--workers`` processes, development mode:
authorisation off like Orthanc's, de-identification off; as shipped: stored files go out by
``os.sendfile`` and a series asked for twice is kept as one file), a second gateway on a
copy of its data (``--second``: "parts", no kept bodies, every answer part by part as a
first retrieval goes; or "copying", also ``GATEWAY_ZERO_COPY=false``, the path behind TLS) and nginx
(``sendfile on``, ``--workers`` processes) serving, as one static file per series at the
same path, the exact multipart body the gateway answers for that series, with its
Content-Type. The same synthetic CT series (``--instances`` slices of 256x256 and of
512x512, 16-bit, Explicit VR LE) go into both archives.

Then, rounds interleaved server by server so that load from other jobs hits all alike:

* series retrieval with curl (``transfer-syntax=*``) at 1 and 4 parallel streams, each
  stream fetching the series ``--repeats`` times: MB/s of body;
* the same at 1 stream through dicomweb-client (``retrieve_series``, parsed datasets),
  and that client's own CPU time per MB (whether the server's framing makes it work more);
  nginx too, whose static answer is the bound of what any server can give this client;
* at 1 stream, CPU time per MB of the server's processes (``/proc``) and of curl;
* frames: frame 1 of every instance of the 512x512 series, one curl process, one kept-alive
  connection, ``application/octet-stream; transfer-syntax=*``: frames/s;
* metadata of a ``--metadata-instances`` series (default 600): p50 over 30 requests.

Reports medians over ``--rounds``, the ratios (gateway / Orthanc, gateway / nginx) and
the load average before and after.

    .venv/bin/python bench/wado_vs_orthanc.py [--instances 300] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dicomweb_client.api import DICOMwebClient  # noqa: E402

from bench.run import ensure_orthanc  # noqa: E402
from server.synthetic import generate_cohort, to_part10_bytes  # noqa: E402
from tests.live import LiveServer  # noqa: E402

# The second gateway (a copy of the first's data): every answer part by part, as a first
# retrieval goes ("parts"), or also read and written by Python, as behind TLS ("copying").
SECOND = {"parts": {}, "copying": {"GATEWAY_ZERO_COPY": "false"}}
SERIES_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@dataclass
class Series:
    name: str
    study: str
    series: str
    sops: list[str]
    files: list[bytes]


def _series(name: str, instances: int, size: int, seed: int) -> Series:
    datasets = list(generate_cohort(patients=1, series_per_study=1, rows=size, columns=size,
                                    instances_per_series=instances, seed=seed))  # fmt: skip
    files = [to_part10_bytes(ds) for ds in datasets]
    first = datasets[0]
    sops = [str(ds.SOPInstanceUID) for ds in datasets]
    return Series(name, str(first.StudyInstanceUID), str(first.SeriesInstanceUID), sops, files)


def _stow(base: str, files: list[bytes]) -> None:
    with httpx.Client(timeout=300) as client:
        for start in range(0, len(files), 20):
            body = b"".join(
                b"--b\r\nContent-Type: application/dicom\r\n\r\n" + f + b"\r\n"
                for f in files[start : start + 20]
            )
            r = client.post(
                f"{base}/studies",
                content=body + b"--b--\r\n",
                headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
            )
            r.raise_for_status()


def _start_orthanc(work: Path, port: int) -> subprocess.Popen[bytes]:
    plugin = ensure_orthanc()
    storage = work / "orthanc"
    storage.mkdir()
    config = {
        "Name": "bench", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "HttpPort": port, "DicomPort": port + 1, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "HttpCompressionEnabled": False,
        "StorageCompression": False, "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }  # fmt: skip
    (work / "orthanc.json").write_text(json.dumps(config))
    log = (work / "orthanc.log").open("wb")
    process = subprocess.Popen(["Orthanc", str(work / "orthanc.json")], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    _wait(f"http://127.0.0.1:{port}/system")
    return process


def _start_nginx(
    work: Path, port: int, workers: int, types: dict[str, str]
) -> subprocess.Popen[bytes]:
    """nginx serving ``work/static``; ``types``: a Content-Type for some paths (each series
    body with its boundary, so that dicomweb-client can read it as a WADO-RS answer)."""
    root = work / "static"
    conf = work / "nginx.conf"
    locations = "".join(
        f"    location = {path} {{ default_type '{ctype}'; }}\n" for path, ctype in types.items()
    )
    conf.write_text(f"""
worker_processes {workers};
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {work}/nginx-tmp;
    proxy_temp_path {work}/nginx-tmp;
    fastcgi_temp_path {work}/nginx-tmp;
    uwsgi_temp_path {work}/nginx-tmp;
    scgi_temp_path {work}/nginx-tmp;
    types {{ }}
    default_type application/octet-stream;
    server {{
    listen 127.0.0.1:{port}; root {root};
{locations}    }}
}}
""")
    process = subprocess.Popen(["nginx", "-c", str(conf)], start_new_session=True)
    _wait(f"http://127.0.0.1:{port}/")
    return process


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its children (workers)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _curl_parallel(url: str, accept: str, streams: int, repeats: int) -> float:
    """MB/s of body over ``streams`` curl processes, each fetching ``url`` ``repeats`` times
    (the MB fetched in ``_last_mb``)."""
    args = ["curl", "-s", "-H", f"Accept: {accept}", "-w", "%{http_code} %{size_download}\\n"]
    for _ in range(repeats):
        args += ["-o", "/dev/null", url]
    start = time.perf_counter()
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(streams)]
    total = 0
    for p in procs:
        out, _ = p.communicate()
        for line in out.split("\n"):
            if line:
                code, size = line.split()
                assert code == "200", line
                total += int(size)
    _last_mb[0] = total / 1e6
    return total / (time.perf_counter() - start) / 1e6


_last_mb = [0.0]


def _curl_frames(urls: list[str], work: Path) -> float:
    """Frames per second, one curl process, one kept-alive connection."""
    config = work / "frames.curl"
    config.write_text("".join(f'url = "{u}"\noutput = "/dev/null"\n' for u in urls))
    start = time.perf_counter()
    out = subprocess.run(["curl", "-s", "-H", f"Accept: {FRAME_ACCEPT}", "-w", "%{http_code}\\n",
                          "-K", str(config)], capture_output=True, text=True, check=True).stdout  # fmt: skip
    elapsed = time.perf_counter() - start
    assert out.split() == ["200"] * len(urls), out[:200]
    return len(urls) / elapsed


def _p50_ms(fetch: Callable[[], object], n: int = 30) -> float:
    fetch()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fetch()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=300, help="slices per CT series")
    parser.add_argument("--metadata-instances", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="fetches per stream per round")
    parser.add_argument("--workers", type=int, default=2, help="gateway and nginx processes")
    parser.add_argument("--port-base", type=int, default=18600)
    parser.add_argument("--second", choices=sorted(SECOND), default="parts",
                        help="the second gateway: no kept bodies (parts), or also no zero-copy")  # fmt: skip
    args = parser.parse_args()
    if not shutil.which("nginx") or not shutil.which("curl"):
        raise SystemExit("needs nginx and curl (apt-get install nginx-light curl)")
    port = args.port_base
    with tempfile.TemporaryDirectory(prefix="wado-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx workers run as an unprivileged user
        series = [_series("CT 256", args.instances, 256, 1), _series("CT 512", args.instances, 512, 2),
                  _series("meta", args.metadata_instances, 64, 3)]  # fmt: skip
        orthanc = _start_orthanc(work, port)
        gateway = LiveServer(work / "gw", port=port + 2, extra_env={
            "GATEWAY_WORKERS": str(args.workers), "GATEWAY_LOG_LEVEL": "warning"})  # fmt: skip
        gateway.start()
        second = LiveServer(work / "gw2", port=port + 4, name="second", extra_env={
            "GATEWAY_WORKERS": str(args.workers), "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_WADO__BODY_CACHE_MB": "0", **SECOND[args.second]})  # fmt: skip
        bases = {"orthanc": f"http://127.0.0.1:{port}/dicom-web", "gateway": gateway.dicomweb,
                 "second": second.dicomweb, "nginx": f"http://127.0.0.1:{port + 3}"}  # fmt: skip
        nginx = None
        try:
            types = {}
            for s in series:
                for base in (bases["orthanc"], bases["gateway"]):  # "second": a copy of the data
                    _stow(base, s.files)
                path = f"/studies/{s.study}/series/{s.series}"
                answer = httpx.get(f"{gateway.dicomweb}{path}", headers={"Accept": SERIES_ACCEPT},
                                   timeout=300)  # fmt: skip
                static = work / "static" / path.lstrip("/")
                static.parent.mkdir(parents=True, exist_ok=True)
                static.write_bytes(answer.content)
                types[path] = answer.headers["content-type"]
            nginx = _start_nginx(work, port + 3, args.workers, types)
            gateway.stop()  # the second gateway gets a copy of the data directory
            shutil.copytree(work / "gw", work / "gw2")
            gateway.start()
            second.start()
            urls = {name: {s.name: f"{b}/studies/{s.study}/series/{s.series}" for s in series}
                    for name, b in bases.items()}  # fmt: skip
            pids = {"orthanc": orthanc.pid, "nginx": nginx.pid}
            for name, live in (("gateway", gateway), ("second", second)):
                assert live.process is not None
                pids[name] = live.process.pid
            load_before = os.getloadavg()
            results: dict[tuple[str, str], list[float]] = {}

            def record(key: tuple[str, str], value: float) -> None:
                results.setdefault(key, []).append(value)

            for _ in range(args.rounds):
                for s in series[:2]:
                    for streams in (1, 4):
                        for name in ("orthanc", "gateway", "second", "nginx"):
                            server_cpu, before = _tree_cpu(pids[name]), _children_cpu()
                            mbs = _curl_parallel(
                                urls[name][s.name], SERIES_ACCEPT, streams, args.repeats
                            )
                            record((f"{s.name} series, {streams} stream(s), curl MB/s", name), mbs)
                            if streams == 1:  # CPU per MB: lower is better
                                mb = _last_mb[0]
                                server_ms = (_tree_cpu(pids[name]) - server_cpu) * 1000 / mb
                                client_ms = (_children_cpu() - before) * 1000 / mb
                                record((f"{s.name} series, 1 stream, server CPU ms per MB", name),
                                       server_ms)  # fmt: skip
                                record((f"{s.name} series, 1 stream, curl CPU ms per MB", name),
                                       client_ms)  # fmt: skip
                for name in ("orthanc", "gateway", "second", "nginx"):
                    client = DICOMwebClient(bases[name])
                    s = series[1]
                    size = sum(len(f) for f in s.files)
                    start, cpu = time.perf_counter(), time.process_time()
                    assert len(
                        client.retrieve_series(
                            s.study, s.series, media_types=(("application/dicom", "*"),)
                        )
                    ) == len(s.files)
                    record(
                        ("CT 512 series, 1 stream, dicomweb-client MB/s", name),
                        size / (time.perf_counter() - start) / 1e6,
                    )
                    record(  # the client's own CPU (parsing, pydicom): lower is better
                        ("CT 512 series, dicomweb-client CPU ms per MB", name),
                        (time.process_time() - cpu) * 1000 / (size / 1e6),
                    )
                    if name == "nginx":  # (the static files are whole series only)
                        continue
                    frame_urls = [
                        f"{urls[name]['CT 512']}/instances/{sop}/frames/1" for sop in s.sops
                    ]
                    record(
                        ("CT 512 frames, 1 connection, curl frames/s", name),
                        _curl_frames(frame_urls, work),
                    )
                    meta = f"{urls[name]['meta']}/metadata"
                    with httpx.Client(timeout=60) as http:
                        record((f"metadata of {args.metadata_instances} instances, p50 ms", name),
                               _p50_ms(lambda http=http, meta=meta: http.get(meta).raise_for_status()))  # fmt: skip
            load_after = os.getloadavg()
        finally:
            second.stop()
            gateway.stop()
            for p in (orthanc, nginx):
                if p is not None:
                    p.terminate()
                    p.wait(30)
    print(f"load average before {tuple(round(x, 1) for x in load_before)}, after "
          f"{tuple(round(x, 1) for x in load_after)}; {args.instances} slices a series, "
          f"{args.rounds} rounds, gateway and nginx with {args.workers} workers")  # fmt: skip
    print("(rows in ms: the ratios are the other's / the gateway's, so above 1 is the gateway"
          " doing better, as on the other rows)")  # fmt: skip
    print(f"| measure | Orthanc | gateway | {args.second} | nginx | gateway/Orthanc"
          f" | gateway/nginx | {args.second}/gateway | {args.second}/Orthanc |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for measure in dict.fromkeys(k for k, _ in results):
        row = {
            name: statistics.median(results[(measure, name)])
            for name in ("orthanc", "gateway", "second", "nginx")
            if (measure, name) in results
        }
        o, g, p, n = (row.get(k) for k in ("orthanc", "gateway", "second", "nginx"))
        ratio_o = (o / g if "ms" in measure else g / o) if o and g else None
        ratio_p = (g / p if "ms" in measure else p / g) if p and g else None  # second / gateway
        ratio_po = (o / p if "ms" in measure else p / o) if p and o else None  # second / Orthanc
        ratio_n = (n / g if "ms" in measure else g / n) if n and g else None
        cells = [f"{v:.1f}" if v is not None else "" for v in (o, g, p, n)]
        ratios = (ratio_o, ratio_n, ratio_p, ratio_po)
        cells += [f"{r:.2f}" if r is not None else "" for r in ratios]
        print(f"| {measure} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

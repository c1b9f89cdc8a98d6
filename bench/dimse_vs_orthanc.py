"""DIMSE benchmark: the gateway's C-STORE and C-FIND SCP vs Orthanc's, in one run.

Both servers receive the same files from the same dcmtk clients on the same machine:

1. C-STORE: ``--instances`` CT slices of 512x512 (16-bit, Explicit VR Little Endian,
   generated once, deterministically, into ``bench/.work/``) sent with ``storescu``
   over one association and over ``--parallel`` associations. The gateway stores
   into a dataset with de-identification policy ``none`` and, separately, ``basic``;
   Orthanc runs with its default SQLite index and file storage, StorageCompression
   off; the gateway runs its DIMSE listener in ``--dimse-processes`` processes
   (serve's default: one per HTTP worker) and its server CPU is the sum over them.
   Every pass starts a fresh server on an empty folder, stores a separate
   warm-up set, then times the corpus; the order of the passes alternates between
   rounds. Production durability defaults stay on (gateway: fsync of every stored
   file, SQLite ``synchronous=FULL``; Orthanc: its defaults).
2. C-FIND: ``--find-instances`` small instances are stored into both (C-STORE,
   ``--find-load-parallel`` associations; file syncs off on both while loading, which
   changes what a query costs not at all and the loading time a lot), once: the loaded
   servers' folders stay in ``bench/.work/find-loaded-N/`` and later runs start both on
   them again. Then both run at once and ``findscu`` study-level queries (PatientID,
   StudyDate range, ModalitiesInStudy, PatientName prefix wildcard) are timed one by
   one, interleaved (each query on one server, then on the other, who goes first
   alternating: both meet the same load), one process and association per query, as
   a workstation does.

    .venv/bin/python bench/dimse_vs_orthanc.py                      # full run
    .venv/bin/python bench/dimse_vs_orthanc.py --instances 300 --rounds 1 \\
        --find-instances 2000 --queries 20                           # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.synthetic import generate_cohort, to_part10_bytes  # noqa: E402
from tests.live import LiveServer, free_port  # noqa: E402

CACHE = ROOT / "bench" / ".work"
ORTHANC_BIN = "/usr/sbin/Orthanc"
GATEWAY_AE, ORTHANC_AE, CALLING = "GATEWAY", "ORTHANC", "BENCHSCU"
NAME_PREFIXES = ("A", "Gar", "Sch", "Nov", "K", "Pe", "Mar", "Ni", "H", "Jo", "Mu", "S")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ------------------------------------------------------------------------------- data


def corpus(name: str, count: int, rows: int, seed: int, modality: str | None) -> list[Path]:
    """``count`` Part 10 files with distinct SOP Instance UIDs in
    ``bench/.work/NAME-COUNT-ROWS-SEED-u``, generated once (the synthetic cohorts of
    successive seeds share a few UIDs: the gateway refuses such a second instance, Orthanc
    overwrites the first, so they are left out)."""
    folder = CACHE / f"{name}-{count}-{rows}-{seed}-u"
    done = folder / "complete"
    if done.exists():
        return sorted(folder.glob("*.dcm"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log(f"generating {count} instances ({rows}x{rows}) into {folder}")
    written = 0
    seen: set[str] = set()
    patients = max(1, count // 20)
    while written < count:
        for ds in generate_cohort(
            patients=patients,
            studies_per_patient=2,
            series_per_study=2,
            instances_per_series=5 if rows < 64 else 50,
            rows=rows,
            columns=rows,
            seed=seed,
        ):
            if (modality is not None and ds.Modality != modality) or ds.SOPInstanceUID in seen:
                continue
            seen.add(ds.SOPInstanceUID)
            (folder / f"{written:07d}.dcm").write_bytes(to_part10_bytes(ds))
            written += 1
            if written == count:
                break
        seed += 1000
    done.write_text("ok")
    return sorted(folder.glob("*.dcm"))


def study_keys(files: list[Path]) -> list[tuple[str, str, str, str]]:
    """(PatientID, PatientName, StudyDate, Modality) of each study in ``files``."""
    import pydicom

    seen: dict[str, tuple[str, str, str, str]] = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        seen.setdefault(
            str(ds.StudyInstanceUID),
            (str(ds.PatientID), str(ds.PatientName), str(ds.StudyDate), str(ds.Modality)),
        )
    return list(seen.values())


# ---------------------------------------------------------------------------- servers


@dataclass
class Target:
    label: str
    port: int
    called: str
    calling: str
    stop: Any
    pid: int
    folder: Path
    extra: dict[str, Any] = field(default_factory=dict)


def start_orthanc(work: Path, bulk_load: bool = False) -> Target:
    folder = work / "orthanc"
    (folder / "db").mkdir(parents=True, exist_ok=True)  # a loaded corpus is started again
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "bench-orthanc",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "StorageCompression": False,
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ORTHANC_AE,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "SaveJobs": False,
    }
    if bulk_load:
        config["SyncStorageArea"] = False
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    out = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen(
        [ORTHANC_BIN, str(folder / "orthanc.json")],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((folder / "orthanc.log").read_text()[-2000:])
        try:
            system = httpx.get(f"http://127.0.0.1:{http_port}/system", timeout=1)
            if system.is_success:
                break
        except httpx.HTTPError:
            time.sleep(0.2)

    def stop() -> None:
        process.terminate()
        process.wait(30)

    target = Target("orthanc", dicom_port, ORTHANC_AE, CALLING, stop, process.pid, folder)
    target.extra = {"version": system.json().get("Version"), "http": http_port}
    return target


def start_gateway(
    work: Path, policy: str, bulk_load: bool = False, processes: int = 1, setup: bool = True
) -> Target:
    folder = work / "gateway"
    port = free_port()
    no_sync = {"GATEWAY_STOW__FSYNC": "false"} if bulk_load else {}
    live = LiveServer(
        folder / "data",
        extra_env={
            "GATEWAY_AUTH__ENABLED": "true",
            "GATEWAY_AUTH__PUBLIC_READ": "false",
            "GATEWAY_DIMSE__PORT": str(port),
            "GATEWAY_DIMSE__AE_TITLE": GATEWAY_AE,
            "GATEWAY_DIMSE__MAX_ASSOCIATIONS": "16",
            "GATEWAY_DIMSE__PROCESSES": str(processes),
            **no_sync,
        },
    )

    def cli(*args: str) -> str:
        done = live.cli(*args)
        if done.returncode != 0:
            raise RuntimeError(f"{args}: {done.stdout} {done.stderr}")
        return done.stdout

    if setup:  # not again on a data directory loaded before
        cli(
            "dataset",
            "create",
            "bench",
            "--title",
            "bench",
            "--cancer-type",
            "lung",
            "--deidentify",
            policy,
        )
        out = cli(
            "clients", "add", "--name", "bench-scu", "--ae-title", CALLING, "--store", "bench"
        )
        client_id = next(line.split()[-1] for line in out.splitlines() if "client_id:" in line)
        cli(
            "daa",
            "create",
            "bench-daa",
            "--dataset",
            "bench",
            "--condition",
            "download",
            "--client",
            client_id,
        )
    live.start()
    assert live.process is not None
    return Target(
        f"gateway/{policy}", port, GATEWAY_AE, CALLING, live.stop, live.process.pid, folder
    )


DIMSE_PROCESSES = [min(os.cpu_count() or 1, 4)]  # serve's default: one per HTTP worker


def start(kind: str, work: Path, bulk_load: bool = False, setup: bool = True) -> Target:
    if kind == "orthanc":
        return start_orthanc(work, bulk_load)
    return start_gateway(work, kind.split("/")[1], bulk_load, DIMSE_PROCESSES[0], setup)


# ---------------------------------------------------------------------------- clients


def storescu(target: Target, files: list[Path], associations: int) -> tuple[float, int]:
    """Send ``files`` over ``associations`` parallel storescu processes: (seconds, failures)."""
    chunks = [files[i::associations] for i in range(associations)]
    began = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                "storescu",
                "-aet",
                target.calling,
                "-aec",
                target.called,
                "-xe",
                "127.0.0.1",
                str(target.port),
                *map(str, chunk),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for chunk in chunks
    ]
    outputs = [p.communicate(timeout=3600)[0] for p in procs]
    seconds = time.perf_counter() - began
    failures = sum(p.returncode != 0 for p in procs)
    for out in outputs:
        failures += sum(
            1 for line in out.splitlines() if "Store Failed" in line or "Status: " in line
        )
    for proc, out in zip(procs, outputs, strict=True):
        if proc.returncode != 0 or "Store Failed" in out or "Status: " in out:
            log(f"{target.label}: storescu exit {proc.returncode}: {out[-1500:]}")
    return seconds, failures


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its running descendants (the DIMSE listener processes)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


def store_pass(kind: str, data: list[Path], warm: list[Path], associations: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dimse-bench-", dir=CACHE) as tmp:
        target = start(kind, Path(tmp))
        try:
            # every listener process warmed up (one association each, least busy first)
            _, warm_failures = storescu(target, warm, max(associations, DIMSE_PROCESSES[0]))
            cpu0 = cpu_seconds(target.pid)
            seconds, failures = storescu(target, data, associations)
            cpu = cpu_seconds(target.pid) - cpu0
        finally:
            target.stop()
    rate = len(data) / seconds
    log(
        f"{kind} x{associations}: {rate:.1f} inst/s ({seconds:.1f} s, server CPU {cpu:.1f} s,"
        f" failures {failures + warm_failures}, load {load_average()})"
    )
    return {
        "rate": rate,
        "seconds": seconds,
        "server_cpu_s": cpu,
        "failures": failures + warm_failures,
        "load": load_average(),
    }


def findscu(target: Target, keys: dict[str, str]) -> tuple[float, int]:
    args = [
        "findscu",
        "-v",
        "-S",
        "-aet",
        target.calling,
        "-aec",
        target.called,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID",
        "-k",
        "PatientID",
        "-k",
        "StudyDate",
    ]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}"]
    began = time.perf_counter()
    done = subprocess.run(
        [*args, "127.0.0.1", str(target.port)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
    )
    seconds = time.perf_counter() - began
    text = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"findscu failed on {target.label}: {text[-1500:]}")
    return seconds, text.count("(Pending)")


def make_queries(
    studies: list[tuple[str, str, str, str]], per_kind: int, seed: int
) -> list[tuple[str, dict[str, str]]]:
    rng = random.Random(seed)
    queries: list[tuple[str, dict[str, str]]] = []
    for _ in range(per_kind):
        patient, _name, day, modality = rng.choice(studies)
        start_day = f"{day[:6]}01"
        queries += [
            ("PatientID", {"PatientID": patient}),
            ("StudyDate range", {"StudyDate": f"{start_day}-{day[:6]}28"}),
            (
                "ModalitiesInStudy",
                {"ModalitiesInStudy": modality, "StudyDate": f"{day[:4]}0101-{day[:4]}1231"},
            ),
            ("PatientName wildcard", {"PatientName": f"{rng.choice(NAME_PREFIXES)}*"}),
        ]
    return queries


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def find_pass(
    kinds: list[str],
    files: list[Path],
    queries: list[tuple[str, dict[str, str]]],
    associations: int,
    warmup: int,
) -> dict[str, dict[str, Any]]:
    """Both servers up at once on their loaded corpus, the queries interleaved one by one
    (who goes first alternating), so that both meet the same load.

    Each server is loaded once into ``bench/.work/find-loaded-N/`` and started on it again
    by later runs (a ``loaded`` marker; delete the folder to load again)."""
    work = CACHE / f"find-loaded-{len(files)}"
    targets: dict[str, Target] = {}
    loaded: dict[str, dict[str, Any]] = {}
    try:
        for kind in kinds:
            folder = work / kind.replace("/", "-")
            marker = folder / "loaded"
            fresh = not marker.exists()
            if fresh:
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
            target = start(kind, folder, bulk_load=True, setup=fresh)
            targets[kind] = target
            if fresh:
                seconds, failures = storescu(target, files, associations)
                log(
                    f"{kind}: loaded {len(files)} instances in {seconds:.0f} s ({failures} failures)"
                )
                if failures == 0:
                    marker.write_text(json.dumps({"seconds": seconds}))
                loaded[kind] = {"load_seconds": seconds, "load_failures": failures}
            else:
                loaded[kind] = {**json.loads(marker.read_text()), "reused": True}
        for n, (_, keys) in enumerate(queries[:warmup]):
            for kind in kinds if n % 2 == 0 else kinds[::-1]:
                findscu(targets[kind], keys)
        times: dict[str, dict[str, list[float]]] = {k: {} for k in kinds}
        counts: dict[str, dict[str, list[int]]] = {k: {} for k in kinds}
        loads: list[float] = []
        for n, (kind_name, keys) in enumerate(queries):
            for kind in kinds if n % 2 == 0 else kinds[::-1]:
                took, found = findscu(targets[kind], keys)
                times[kind].setdefault(kind_name, []).append(took * 1000)
                counts[kind].setdefault(kind_name, []).append(found)
            loads.append(float(load_average().split()[0]))
    finally:
        for target in targets.values():
            target.stop()
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        result: dict[str, Any] = {**loaded[kind], "kinds": {}}
        for kind_name, values in times[kind].items():
            result["kinds"][kind_name] = {
                "p50_ms": pct(values, 50),
                "p95_ms": pct(values, 95),
                "matches": sum(counts[kind][kind_name]),
            }
        result["load_during_queries"] = f"{min(loads):.1f}-{max(loads):.1f}"
        log(f"{kind}: C-FIND {json.dumps(result['kinds'])} (load {result['load_during_queries']})")
        results[kind] = result
    return results


# ------------------------------------------------------------------------------- main


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--policies", default="none,basic")
    parser.add_argument("--find-instances", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50, help="timed queries per kind")
    parser.add_argument("--find-load-parallel", type=int, default=8)
    parser.add_argument("--skip-store", action="store_true")
    parser.add_argument("--skip-find", action="store_true")
    parser.add_argument(
        "--dimse-processes",
        type=int,
        default=DIMSE_PROCESSES[0],
        help="the gateway's GATEWAY_DIMSE__PROCESSES (default: serve's, one per CPU, at most 4)",
    )
    args = parser.parse_args()
    DIMSE_PROCESSES[0] = args.dimse_processes
    CACHE.mkdir(parents=True, exist_ok=True)
    gateways = [f"gateway/{p}" for p in args.policies.split(",")]
    report: dict[str, Any] = {
        "args": vars(args),
        "nproc": os.cpu_count(),
        "load_start": load_average(),
    }

    lines: list[str] = []
    if not args.skip_store:
        data = corpus("ct512", args.instances, 512, 11, "CT")
        warm = corpus("ct512-warm", 30, 512, 97, "CT")
        rates: dict[tuple[str, int], list[float]] = {}
        passes: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = ["orthanc", *gateways]
            if r % 2:
                order.reverse()
            for assoc in (1, args.parallel) if r % 2 == 0 else (args.parallel, 1):
                for kind in order:
                    result = store_pass(kind, data, warm, assoc)
                    passes.append({"round": r, "target": kind, "associations": assoc, **result})
                    rates.setdefault((kind, assoc), []).append(result["rate"])
        report["store"] = passes
        mb = sum(p.stat().st_size for p in data) / 1e6
        lines += [
            f"C-STORE, {args.instances} CT 512x512 ({mb:.0f} MB), {args.rounds} rounds,"
            " instances/s median (min-max)",
            "",
            "| associations | target | instances/s | gateway/orthanc |",
            "|---|---|---|---|",
        ]
        for assoc in (1, args.parallel):
            base = statistics.median(rates[("orthanc", assoc)])
            for kind in ["orthanc", *gateways]:
                ratio = statistics.median(rates[(kind, assoc)]) / base
                shown = "" if kind == "orthanc" else f"{ratio:.2f}x"
                lines.append(f"| {assoc} | {kind} | {spread(rates[(kind, assoc)])} | {shown} |")
        lines.append("")

    if not args.skip_find:
        small = corpus("find16", args.find_instances, 16, 5, None)
        studies = study_keys(small)
        queries = make_queries(studies, args.queries, seed=7)
        found = find_pass(
            ["orthanc", gateways[0]], small, queries, args.find_load_parallel, warmup=20
        )
        report["find"] = found
        lines += [
            f"C-FIND (findscu, study level), {args.find_instances} instances"
            f" ({len(studies)} studies), {args.queries} queries per kind, interleaved, ms"
            f" (load average during the queries {found['orthanc']['load_during_queries']})",
            "",
            "| query | orthanc p50 / p95 | gateway p50 / p95 | gateway/orthanc p50 | matches"
            " orthanc / gateway |",
            "|---|---|---|---|---|",
        ]
        o, g = found["orthanc"]["kinds"], found[gateways[0]]["kinds"]
        for kind_name in o:
            lines.append(
                f"| {kind_name} | {o[kind_name]['p50_ms']:.0f} / {o[kind_name]['p95_ms']:.0f}"
                f" | {g[kind_name]['p50_ms']:.0f} / {g[kind_name]['p95_ms']:.0f}"
                f" | {g[kind_name]['p50_ms'] / o[kind_name]['p50_ms']:.2f}x"
                f" | {o[kind_name]['matches']} / {g[kind_name]['matches']} |"
            )
        lines.append("")
    report["load_end"] = load_average()
    lines.append(
        f"nproc {os.cpu_count()}, load average start {report['load_start']},"
        f" end {report['load_end']}"
    )
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"dimse-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print("\n".join(lines))
    print(f"\nraw figures: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

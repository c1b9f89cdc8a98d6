"""QIDO latency of the embedded index as it grows to 1,000,000 instances.

Bulk-loads metadata-only records (one parsed template per series, cloned with
new UIDs and attribute values) straight into the SQLite index, then starts the
gateway on that data directory and times QIDO requests over HTTP at each size.

    .venv/bin/python bench/index_scale.py --sizes 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.core.attributes import Level  # noqa: E402
from server.core.fhir.imaging import patient_id  # noqa: E402
from server.core.records import InstanceRecord, read_instance  # noqa: E402
from server.security.keys import InstallationSecret  # noqa: E402

# The installation secret of every bench data directory (so bench and server agree on
# the keyed Patient ids the bulk-loaded records carry).
BENCH_SECRET = bytes(range(32))
PATIENT_KEY = InstallationSecret(BENCH_SECRET).patient_id_key()


def bench_data_dir(path: Path) -> Path:
    """A data directory whose installation secret is BENCH_SECRET."""
    path.mkdir(parents=True, exist_ok=True)
    InstallationSecret.load_or_create(path, BENCH_SECRET)
    return path


from server.index.sqlite import SqliteIndex  # noqa: E402
from server.synthetic import generate_cohort, to_part10_bytes  # noqa: E402
from tests.live import LiveServer  # noqa: E402

NAMES = [
    "Müller^Jürgen",
    "Åström^Märta",
    "García^José",
    "Smith^John",
    "Nguyễn^Văn An",
    "Rossi^Maria",
    "Dubois^Luc",
    "Kowalski^Jan",
    "Novak^Petra",
    "Oliveira^Ana",
]
MODALITIES = ["CT", "MR", "PT"]


def _template(tmp: Path) -> InstanceRecord:
    ds = next(
        iter(
            generate_cohort(
                patients=1, series_per_study=1, instances_per_series=1, rows=8, columns=8
            )
        )
    )
    path = tmp / "template.dcm"
    path.write_bytes(to_part10_bytes(ds))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return read_instance(path, digest, patient_secret=PATIENT_KEY)


def _clone(
    t: InstanceRecord, n: int, per_series: int, per_study: int, rng: random.Random
) -> InstanceRecord:
    study_no, series_no = n // per_study, n // per_series
    study, series, sop = f"2.25.1{study_no}", f"2.25.2{series_no}", f"2.25.3{n}"
    patient = study_no // 2
    name = f"{NAMES[patient % len(NAMES)].split('^')[0]}{patient}^{NAMES[patient % len(NAMES)].split('^')[1]}"
    rng.seed(study_no)
    date = f"{rng.randint(2015, 2025)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    modality = MODALITIES[(series_no) % 3]
    cols = {level: dict(values) for level, values in t.columns.items()}
    cols[Level.STUDY].update(
        studyinstanceuid=study,
        patientid=f"PAT{patient:07d}",
        studydate=date,
        patientname=name.lower(),
        patientname_fuzzy=" " + " ".join(name.lower().split("^")) + " ",
    )
    cols[Level.SERIES].update(seriesinstanceuid=series, modality=modality)
    cols[Level.INSTANCE].update(sopinstanceuid=sop, instancenumber=n % per_series + 1)
    study_json = orjson.loads(t.level_json[Level.STUDY])
    study_json.update(
        {
            "0020000D": {"vr": "UI", "Value": [study]},
            "00100020": {"vr": "LO", "Value": [f"PAT{patient:07d}"]},
            "00080020": {"vr": "DA", "Value": [date]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
        }
    )
    series_json = orjson.loads(t.level_json[Level.SERIES])
    series_json.update(
        {"0020000E": {"vr": "UI", "Value": [series]}, "00080060": {"vr": "CS", "Value": [modality]}}
    )
    inst_json = orjson.loads(t.level_json[Level.INSTANCE])
    inst_json.update({"00080018": {"vr": "UI", "Value": [sop]}})
    day = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    return dataclasses.replace(
        t,
        patient_key=patient_id(PATIENT_KEY, f"PAT{patient:07d}", "SYNTHETIC"),
        started=(f"{day}T10:00:00.000000", f"{day}T10:00:00.999999"),
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        columns=cols,
        level_json={
            Level.STUDY: orjson.dumps(study_json),
            Level.SERIES: orjson.dumps(series_json),
            Level.INSTANCE: orjson.dumps(inst_json),
        },
        blob_key=f"k{n}",
        sha256=f"s{n}",
    )


def _time(client: httpx.Client, url: str, params: dict[str, str], runs: int) -> dict[str, float]:
    for _ in range(5):
        client.get(url, params=params)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        r = client.get(url, params=params)
        samples.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, r.text
    samples.sort()
    return {
        "p50": statistics.median(samples),
        "p95": samples[int(len(samples) * 0.95) - 1],
        "hits": len(r.json()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="index-scale-"))
    data = bench_data_dir(tmp / "data")
    template = _template(tmp)
    index = SqliteIndex(data / "index.sqlite")
    rng = random.Random(0)
    loaded, results = 0, []
    for size in sizes:
        start = time.perf_counter()
        for first in range(loaded, size, 20000):
            batch = [
                _clone(template, n, 10, 20, rng) for n in range(first, min(size, first + 20000))
            ]
            index.add_instances(batch, overwrite=False)
        rate = (size - loaded) / (time.perf_counter() - start)
        loaded = size
        live = LiveServer(data, extra_env={"GATEWAY_LOG_LEVEL": "warning"}).start()
        queries = {
            "PatientID exact": ("/studies", {"PatientID": f"PAT{size // 80:07d}"}),
            "StudyDate range + ModalitiesInStudy": (
                "/studies",
                {"StudyDate": "20200101-20200131", "ModalitiesInStudy": "MR", "limit": "100"},
            ),
            "PatientName wildcard": ("/studies", {"PatientName": "gar*", "limit": "100"}),
            "PatientName fuzzy": (
                "/studies",
                {"PatientName": "jose", "fuzzymatching": "true", "limit": "100"},
            ),
            "series of a study": (f"/studies/2.25.1{size // 40}/series", {}),
            "instances of a series": (
                f"/studies/2.25.1{size // 40}/series/2.25.2{size // 20}/instances",
                {},
            ),
        }
        with httpx.Client(base_url=live.dicomweb, timeout=60) as client:
            row = {
                "instances": size,
                "load_per_s": round(rate),
                **{
                    name: _time(client, path, params, args.runs)
                    for name, (path, params) in queries.items()
                },
            }
        live.stop()
        results.append(row)
        print(json.dumps(row, indent=None), flush=True)
    out = io.StringIO()
    names = [k for k in results[0] if k not in ("instances", "load_per_s")]
    out.write(
        "| query | " + " | ".join(f"{r['instances']:,} p50 / p95 ms" for r in results) + " |\n"
    )
    out.write("|---|" + "---|" * len(results) + "\n")
    for name in names:
        cells = [f"{r[name]['p50']:.1f} / {r[name]['p95']:.1f}" for r in results]
        out.write(f"| {name} | " + " | ".join(cells) + " |\n")
    out.write(
        "| bulk index load (instances/s) | "
        + " | ".join(f"{r['load_per_s']:,}" for r in results)
        + " |\n"
    )
    print(out.getvalue())
    index.close()


if __name__ == "__main__":
    main()

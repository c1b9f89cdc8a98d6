"""EUCAIM federated-search latency of the embedded (SQLite) index as it grows.

Bulk-inserts study and series rows straight into a fresh index (synthetic values, 20
datasets, two series per study), then times ``federation_counts`` for typical query
trees (what one ``POST /api/datasets/eucaimSearch`` asks of the index). Also times opening
the federation on that index (adds and fills the patients' first-study age and year: the
migration of an index made before them) and writing studies afterwards, one transaction
each (the first-study triggers run then).

    .venv/bin/python bench/federation_scale.py --studies 200000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.core.federation.plan import resolve  # noqa: E402
from server.core.federation.query import parse  # noqa: E402
from server.index.federation_sql import SqlFederation  # noqa: E402
from server.index.sqlite import SqliteIndex  # noqa: E402

DATASETS = [f"ds{i:02d}" for i in range(20)]
MOD = ["MR", "CT", "PT", "NM"]
BODY = ["PROSTATE", "BREAST", "LUNG", "COLON", "PELVIS"]
MAKER = ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips Medical Systems", "TOSHIBA"]


def load(index: SqliteIndex, studies: int) -> None:
    rng = random.Random(1)
    with index.db.write() as conn:
        study_rows, series_rows = [], []
        for pk in range(1, studies + 1):
            age = f"{rng.randint(20, 90):03d}Y" if rng.random() < 0.7 else None
            blob = orjson.dumps({"00101010": {"vr": "AS", "Value": [age]}} if age else {})
            study_rows.append((pk, f"1.2.{pk}", rng.choice(DATASETS), f"p{pk // 2}",
                               rng.choice("MFO"), f"{rng.randint(2005, 2024)}0{rng.randint(1, 9)}15",
                               f"19{rng.randint(30, 99)}0101", blob))  # fmt: skip
            for n in range(2):
                series_rows.append((pk * 2 + n, pk, f"1.2.{pk}.{n}", rng.choice(MOD),
                                    rng.choice(BODY), rng.choice(MAKER)))  # fmt: skip
        conn.executemany(
            "INSERT INTO study (pk, studyinstanceuid, dataset, patient_key, patientsex, studydate,"
            " patientbirthdate, json, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)", study_rows)  # fmt: skip
        conn.executemany(
            "INSERT INTO series (pk, study_pk, seriesinstanceuid, modality, bodypartexamined,"
            " manufacturer, json, updated) VALUES (?, ?, ?, ?, ?, ?, x'7b7d', 0)", series_rows)  # fmt: skip
        conn.execute("ANALYZE")


def writes(index: SqliteIndex, studies: int, n: int) -> list[float]:
    """Insert ``n`` studies of existing patients (earlier dates: they become first), one
    transaction each, and delete them again; the time of each insert."""
    rng = random.Random(2)
    times = []
    for k in range(n):
        pk = studies + 1 + k
        patient = rng.randint(1, studies) // 2
        blob = orjson.dumps({"00101010": {"vr": "AS", "Value": [f"{rng.randint(20, 90):03d}Y"]}})
        t0 = time.perf_counter()
        with index.db.write() as conn:
            conn.execute(
                "INSERT INTO study (pk, studyinstanceuid, dataset, patient_key, patientsex,"
                " studydate, patientbirthdate, json, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (pk, f"1.3.{pk}", rng.choice(DATASETS), f"p{patient}", "F", "20000101",
                 "19500101", blob),
            )  # fmt: skip
        times.append(time.perf_counter() - t0)
    with index.db.write() as conn:
        conn.execute("DELETE FROM study WHERE pk > ?", (studies,))
    return times


def tree(*conds: dict[str, object]) -> dict[str, object]:
    return {"operand": "OR", "children": [{"operand": "AND", "children": [
        {"operand": "OR", "children": [c]} for c in conds]}]}  # fmt: skip


QUERIES = {
    "everything": {"operand": "OR", "children": []},
    "sex": tree({"key": "SNOMEDCT263495000", "type": "EQUALS", "value": "SNOMEDCT248152002"}),
    "age range": tree({"key": "SNOMEDCT423493009", "type": "BETWEEN", "value": {"min": 40.0, "max": 60.0}}),
    "modality + body part": tree({"key": "RID10311", "type": "EQUALS", "value": "RID10312"},
                                 {"key": "SNOMEDCT123037004", "type": "EQUALS", "value": "SNOMEDCT41216001"}),
    "sex + age + year + modality + maker": tree(
        {"key": "SNOMEDCT263495000", "type": "EQUALS", "value": "SNOMEDCT248153007"},
        {"key": "SNOMEDCT423493009", "type": "BETWEEN", "value": {"min": 50.0, "max": 80.0}},
        {"key": "SNOMEDCT432213005", "type": "BETWEEN", "value": {"min": 2010.0, "max": 2020.0}},
        {"key": "RID10311", "type": "IN", "value": ["RID10312", "RID10321"]},
        {"key": "C25392", "type": "EQUALS", "value": "C200140"}),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--writes", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = SqliteIndex(Path(tmp) / "index.sqlite")
        started = time.perf_counter()
        load(index, args.studies)
        print(
            f"loaded {args.studies} studies, {2 * args.studies} series in {time.perf_counter() - started:.1f} s"
        )
        t0 = time.perf_counter()
        fed = SqlFederation(index.db)
        print(f"{'open (first-study backfill)':40s}        {time.perf_counter() - t0:8.1f} s")
        write_times = writes(index, args.studies, args.writes)
        print(
            f"{f'write {args.writes} studies (1 per transaction)':40s} median"
            f" {statistics.median(write_times) * 1000:8.2f} ms"
            f"  p95 {sorted(write_times)[int(len(write_times) * 0.95)] * 1000:.2f} ms"
        )
        for name, ast in QUERIES.items():
            plan = resolve(parse(ast).plan, frozenset())
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                found = fed.federation_counts([(plan, DATASETS)])
                times.append(time.perf_counter() - t0)
            total = sum(s for s, _ in found.values())
            print(f"{name:40s} median {statistics.median(times) * 1000:8.1f} ms  ({total} studies)")
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fed.federation_profiles(DATASETS)
            times.append(time.perf_counter() - t0)
        print(
            f"{'profiles (age range, sexes)':40s} median {statistics.median(times) * 1000:8.1f} ms"
        )
        index.close()


if __name__ == "__main__":
    main()

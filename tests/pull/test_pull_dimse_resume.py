"""``pull`` from Orthanc over DIMSE (C-FIND + C-GET, C-FIND + C-MOVE), and a pull killed mid-way."""

from __future__ import annotations

import sqlite3
import time

from tests.pull.conftest import (
    CREDENTIALS_ENV,
    GATEWAY_AE,
    Archive,
    Gateway,
    basic_env,
    dataset_bytes,
    kill,
)
from tests.pull.test_pull_dicomweb import _summary


def _data_sets(instances: dict[str, bytes]) -> dict[str, bytes]:
    return {sop: dataset_bytes(data) for sop, data in instances.items()}


def test_pull_over_c_get_stores_every_data_set_as_orthanc_holds_it(
    archive: Archive, gateway: Gateway
) -> None:
    done = gateway.pull("--dataset", "raw", "--from", archive.orthanc.dimse,
                        "--calling-ae", GATEWAY_AE, "--patient", "PULL-P2")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    sent = archive.of_studies(*[u for u, (p, _) in archive.studies.items() if p == "PULL-P2"])
    assert _summary(done.stdout)["new"] == len(sent)
    # DIMSE carries the data set; the File Meta is the receiver's: the data sets are identical,
    # compressed transfer syntaxes included (no transcoding on the way)
    assert _data_sets(gateway.stored()) == _data_sets(sent)


def test_pull_over_c_move_to_the_gateway_ae_by_date(archive: Archive, gateway: Gateway) -> None:
    done = gateway.pull("--dataset", "raw", "--from", archive.orthanc.dimse, "--move",
                        "--move-port", str(archive.orthanc.move_port), "--calling-ae", GATEWAY_AE,
                        "--since", "20200101", "--until", "20211231")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    studies = [u for u, (_, day) in archive.studies.items() if day < "20220101"]
    assert _summary(done.stdout)["new"] == len(archive.of_studies(*studies)) == 16
    assert _data_sets(gateway.stored()) == _data_sets(archive.of_studies(*studies))


def _stored_so_far(gateway: Gateway) -> int:
    path = gateway.live.data_dir / "pull.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        try:
            return int(
                db.execute("SELECT count(*) FROM pull_item WHERE state='stored'").fetchone()[0]
            )
        except sqlite3.OperationalError:
            return 0


def _kill_after_some(gateway: Gateway, args: tuple[str, ...], env: dict[str, str]) -> int:
    process = gateway.start_pull(*args, env=env)
    deadline = time.monotonic() + 120
    while _stored_so_far(gateway) < 3 and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    kill(process)
    return _stored_so_far(gateway)


def test_a_killed_dicomweb_pull_resumes_and_stores_every_instance_exactly_once(
    archive: Archive, gateway: Gateway
) -> None:
    args = ("--dataset", "raw", "--from", archive.orthanc.dicomweb, "--basic",
            f"env:{CREDENTIALS_ENV}", "--since", "2000-01-01", "--rate", "8", "--quiet")  # fmt: skip
    before = _kill_after_some(gateway, args, basic_env())
    assert 3 <= before < len(archive.sent)
    done = gateway.pull(*args[:-3], env=basic_env())  # same selection, no throttle
    assert done.returncode == 0, done.stdout + done.stderr
    summary = _summary(done.stdout)
    assert summary["found"] == len(archive.sent)
    assert summary["present"] >= before and summary["new"] == len(archive.sent) - summary["present"]
    assert gateway.stored() == archive.sent  # each once, byte-identical (policy none)


def test_a_killed_dimse_pull_resumes_by_job_id_into_a_basic_dataset(
    archive: Archive, gateway: Gateway
) -> None:
    args = ("--dataset", "deid", "--from", archive.orthanc.dimse, "--calling-ae", GATEWAY_AE,
            "--patient", "PULL-P1", "--rate", "6")  # fmt: skip
    before = _kill_after_some(gateway, args, {})
    sent = archive.of_studies(*[u for u, (p, _) in archive.studies.items() if p == "PULL-P1"])
    assert 3 <= before < len(sent)
    with sqlite3.connect(gateway.live.data_dir / "pull.sqlite") as db:
        (job,) = [r[0] for r in db.execute("SELECT id FROM pull_job")]
    done = gateway.pull("--resume", job, "--calling-ae", GATEWAY_AE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _summary(done.stdout)["found"] == len(sent)
    stored = gateway.stored()
    assert len(stored) == len(sent)  # each instance once: its pseudonymised UID is stable
    assert not set(stored) & set(sent)
    assert not any(b"PULL-P1" in data for data in stored.values())

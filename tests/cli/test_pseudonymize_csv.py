"""``imaging-gateway pseudonymize-csv``: clinical CSVs hashed as LETHE does, checked against vectors
computed here with hashlib from the RSNA CTP definitions (never with the gateway's functions).

CTP ``@hashptid(secret, PatientID)``: ``EUCAIM-`` + the MD5 of ``"[" + secret + "]" +
trim(PatientID)`` as an unsigned base-10 integer (an empty PatientID hashes as ``null``,
as LETHE's hash_clinical does). CTP ``@hashuid(root, uid, PatientID)``: root + ``.`` +
that integer rendering of the MD5 of ``uid + <pseudonymised PatientID>``, a ``9`` in
front when it starts with ``0``, cut to 64 characters.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_dataset_deid import CTP_SECRET, lethe_secret
from tests.live import LiveServer

ROOT = "1.3.6.1.4.1.58108.2023"


def usmd5(text: str) -> str:
    return str(int.from_bytes(hashlib.md5(text.encode("utf-8")).digest(), "big"))


def ptid(secret: str, patient_id: str) -> str:
    pid = patient_id.strip() if patient_id else "null"
    return "EUCAIM-" + usmd5(f"[{secret.strip()}]{pid}")


def hashuid(uid: str, anonymised_pid: str) -> str:
    digits = usmd5(uid + anonymised_pid)
    return (f"{ROOT}." + ("9" if digits.startswith("0") else "") + digits)[:64]


def basic_pid(secret: str, patient_id: str) -> str:
    """The basic profile's pseudonym (the engine's definition): ANON- + HMAC-SHA256, 32 hex."""
    mac = hmac.new(secret.encode(), b"patient\x00" + patient_id.strip().encode(), hashlib.sha256)
    return "ANON-" + mac.hexdigest()[:32].upper()


def basic_uid(secret: str, uid: str) -> str:
    """A 2.25 UID from a keyed UUIDv8: HMAC-SHA256 cut to 16 bytes, version and variant set."""
    raw = bytearray(
        hmac.new(secret.encode(), b"uid\x00" + uid.encode(), hashlib.sha256).digest()[:16]
    )
    raw[6] = 0x80 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    return "2.25." + str(int.from_bytes(raw, "big"))


LETHE = lethe_secret()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("csv") / "data")
    for rid, secret in (("eu-lethe", LETHE), ("eu-ctp", CTP_SECRET)):
        done = server.cli("dataset", "create", rid, "--title", rid, "--cancer-type", "lung",
                          "--deidentify", "eucaim", "--provider-id", "SITE-9",
                          "--pseudonym-secret", secret)  # fmt: skip
        assert done.returncode == 0, done.stderr
    for rid, options in (
        ("plain-basic", ("--deidentify", "basic", "--pseudonym-secret", CTP_SECRET)),
        (
            "basic-uids",
            (
                "--deidentify",
                "basic",
                "--deid-option",
                "retain-uids",
                "--pseudonym-secret",
                CTP_SECRET,
            ),
        ),
        ("plain-none", ("--deidentify", "none")),
    ):
        done = server.cli(
            "dataset", "create", rid, "--title", rid, "--cancer-type", "lung", *options
        )
        assert done.returncode == 0, done.stderr
    yield server
    server.stop()


def pseudonymize(live: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return live.cli("pseudonymize-csv", *args)


IDS = ["P001", "  P002  ", "Zoë-Ünïcode-ß", "", "0000123", "with inner space"]


@pytest.mark.parametrize(("dataset", "secret"), [("eu-lethe", LETHE), ("eu-ctp", CTP_SECRET)])
def test_clinical_file_column_one_is_hashed_header_kept_rfc4180(
    live: LiveServer, tmp_path: Path, dataset: str, secret: str
) -> None:
    source = tmp_path / "clinical.csv"
    rows = [f'"{pid}",{n},"note, with comma and ""quotes"""' for n, pid in enumerate(IDS)]
    source.write_text("PatientID,age,notes\n" + "\n".join(rows) + "\n", encoding="utf-8")
    target = tmp_path / "out.csv"
    done = pseudonymize(live, "--dataset", dataset, "--quiet", str(source), str(target))
    assert done.returncode == 0, done.stderr
    expected = "PatientID,age,notes\r\n" + "".join(
        f'{ptid(secret, pid)},{n},"note, with comma and ""quotes"""\r\n'
        for n, pid in enumerate(IDS)
    )
    assert target.read_bytes() == expected.encode("utf-8")
    assert ptid(secret, "") == "EUCAIM-" + usmd5(f"[{secret}]null")  # LETHE's empty id


def test_studies_metadata_by_name_and_by_switch(live: LiveServer, tmp_path: Path) -> None:
    uids = ["1.2.840.113619.2.55.3.604688119.969.1268071029.320", "2.25.1" + "9" * 60, "1.2.3"]
    body = "PatientID;StudyInstanceUID;StudyDate\n" + "".join(
        f"{pid};{uid};20240131\n" for pid, uid in zip(IDS, uids * 2, strict=True)
    )
    expected = "PatientID,StudyInstanceUID,StudyDate\r\n" + "".join(
        f"{ptid(LETHE, pid)},{hashuid(uid, ptid(LETHE, pid))},20240131\r\n"
        for pid, uid in zip(IDS, uids * 2, strict=True)
    )
    by_name = tmp_path / "dcm_studies_metadata.csv"
    by_name.write_text(body, encoding="utf-8")
    out = tmp_path / "a.csv"
    done = pseudonymize(live, "--dataset", "eu-lethe", str(by_name), str(out))
    assert done.returncode == 0, done.stderr
    assert "studies-metadata" in done.stdout and "pseudonymize" in done.stderr  # progress bar
    assert out.read_bytes() == expected.encode("utf-8")
    assert all(len(line.split(",")[1]) <= 64 for line in expected.splitlines()[1:])
    other = tmp_path / "studies-2024.csv"
    other.write_text(body, encoding="utf-8")
    switched = tmp_path / "b.csv"
    done = pseudonymize(live, "--dataset", "eu-lethe", "--studies", "--quiet", str(other), str(switched))  # fmt: skip
    assert done.returncode == 0 and switched.read_bytes() == out.read_bytes()
    plain = tmp_path / "c.csv"  # without the switch, the same file is a clinical one
    assert pseudonymize(live, "--dataset", "eu-lethe", "--quiet", str(other), str(plain)).returncode == 0  # fmt: skip
    assert plain.read_text().splitlines()[1].split(",")[1] == uids[0]


def test_basic_datasets_get_the_basic_profiles_pseudonyms(live: LiveServer, tmp_path: Path) -> None:
    uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    rows = [
        ("P001", uid),
        ("  P002 ", "1.2.3"),
        ("", "1.2.3.4"),
    ]  # no PatientID: keyed on the study
    source = tmp_path / "dcm_studies_metadata.csv"
    source.write_text("PatientID,StudyInstanceUID\n" + "".join(f"{p},{u}\n" for p, u in rows))
    for dataset, keep_uids in (("plain-basic", False), ("basic-uids", True)):
        out = tmp_path / f"{dataset}.csv"
        done = pseudonymize(live, "--dataset", dataset, "--quiet", str(source), str(out))
        assert done.returncode == 0, done.stderr
        expected = "PatientID,StudyInstanceUID\r\n" + "".join(
            f"{basic_pid(CTP_SECRET, p or 'study:' + u)},{u if keep_uids else basic_uid(CTP_SECRET, u)}\r\n"
            for p, u in rows
        )
        assert out.read_bytes().decode() == expected
    clinical = tmp_path / "clinical.csv"
    clinical.write_text("PatientID,age\nP1,3\n ,4\n")
    done = pseudonymize(
        live, "--dataset", "plain-basic", "--quiet", str(clinical), str(tmp_path / "x.csv")
    )
    assert done.returncode == 1 and "row 3" in done.stderr and "studies file" in done.stderr
    assert not (tmp_path / "x.csv").exists()


REFUSED = {
    "a none dataset": ("plain-none", "nothing to pseudonymise"),
    "an unknown dataset": ("no-such", "not known"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_refused_datasets_write_nothing(live: LiveServer, tmp_path: Path, case: str) -> None:
    dataset, words = REFUSED[case]
    source = tmp_path / "in.csv"
    source.write_text("PatientID\nP1\n")
    done = pseudonymize(live, "--dataset", dataset, str(source), str(tmp_path / "out.csv"))
    assert done.returncode == 1 and words in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_bad_input_writes_nothing(live: LiveServer, tmp_path: Path) -> None:
    short = tmp_path / "dcm_studies_metadata.csv"
    short.write_text("PatientID,StudyInstanceUID\nP1,1.2.3\nP2\n")
    done = pseudonymize(live, "--dataset", "eu-ctp", "--quiet", str(short), str(tmp_path / "o.csv"))
    assert done.returncode == 1 and "row 3" in done.stderr, done.stderr
    latin = tmp_path / "latin.csv"
    latin.write_bytes("PatientID\nZo\u00eb\n".encode("latin-1"))
    done = pseudonymize(live, "--dataset", "eu-ctp", "--quiet", str(latin), str(tmp_path / "o.csv"))
    assert done.returncode == 1 and "not UTF-8" in done.stderr, done.stderr
    same = pseudonymize(live, "--dataset", "eu-ctp", str(latin), str(latin))
    assert same.returncode == 1 and "another file" in same.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcm_studies_metadata.csv", "latin.csv"]


def test_runs_are_audited_without_the_secret(live: LiveServer) -> None:
    shown = live.cli("audit", "show", "--limit", "100").stdout
    lines = [line for line in shown.splitlines() if "pseudonymize-csv" in line]
    assert any("datasets=eu-lethe" in line and " ok " in line for line in lines), shown
    assert any("datasets=plain-none" in line and "refused" in line for line in lines), shown
    assert LETHE not in shown and CTP_SECRET not in shown


def _peak_rss_kib(live: LiveServer, args: list[str]) -> int:
    """Peak resident memory of one CLI run (its own process, measured by a parent)."""
    probe = ("import resource, subprocess, sys; "
             "r = subprocess.run(sys.argv[1:], capture_output=True); "
             "assert r.returncode == 0, r.stderr; "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "server.cli.main", *args],
                          env=live.env(), capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_large_files_stream_in_bounded_memory(live: LiveServer, tmp_path: Path) -> None:
    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    small.write_text("PatientID,notes\nP1,x\n")
    note = "n" * 200
    with big.open("w") as f:
        f.write("PatientID,notes\n")
        for n in range(250_000):
            f.write(f"P{n},{note}\n")
    assert big.stat().st_size > 50_000_000
    base = _peak_rss_kib(live, ["pseudonymize-csv", "--dataset", "eu-ctp", "--quiet",
                                str(small), str(tmp_path / "s.out")])  # fmt: skip
    peak = _peak_rss_kib(live, ["pseudonymize-csv", "--dataset", "eu-ctp", "--quiet",
                                str(big), str(tmp_path / "b.out")])  # fmt: skip
    assert peak - base < 30_000, (base, peak)  # KiB: far below the 50 MB the file holds
    with (tmp_path / "b.out").open() as f:
        assert next(f) == "PatientID,notes\n"
        assert next(f) == f"{ptid(CTP_SECRET, 'P0')},{note}\n"

"""``imaging-gateway dataset create --deidentify ...``, ``dataset list``, ``dataset secret``, backup.

Real CLI processes on a data dir, and a gateway serving it over FHIR. The policy is set
once and shown wherever the dataset is described; each dataset has one pseudonym secret
(0600 file, LETHE format when generated) that only ``dataset secret`` prints (audited),
and that backup and restore carry.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhir.resources.R4B.researchstudy import ResearchStudy

from tests.deid.policy_helpers import policy_of, secrets_on_disk
from tests.live import LiveServer

DEFAULT_ENV = {"GATEWAY_DEID__DEFAULT_PROFILE": "basic"}
CTP_SECRET = "site-secret-for-ctp-0123456789-ABCDEFGHIJ"  # 41 printable chars, strong enough


def luhn16(text: str) -> str:
    """Luhn mod N check character over 0-9a-f (written here, not taken from the gateway)."""
    factor, total = 2, 0
    for char in reversed(text):
        addend = factor * int(char, 16)
        factor = 1 if factor == 2 else 2
        total += addend // 16 + addend % 16
    return "0123456789abcdef"[(16 - total % 16) % 16]


def lethe_secret() -> str:
    raw = uuid.uuid4().hex
    text = raw[:12] + "7" + raw[13:]  # any 32 hex digits carry a check digit
    return text + luhn16(text)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("ds-deid") / "data", extra_env=DEFAULT_ENV)
    yield server
    server.stop()


class Runs:
    """Every CLI output of this module (none may show a secret, except ``dataset secret``)."""

    outputs: list[str] = []


def run(live: LiveServer, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "server.cli.main", *args], env=live.env(),
                          input=stdin, capture_output=True, text=True, timeout=300)  # fmt: skip
    if args[:2] != ("dataset", "secret"):
        Runs.outputs.append(done.stdout + done.stderr)
    return done


def create(live: LiveServer, rid: str, *options: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return run(live, "dataset", "create", rid, "--title", f"T {rid}", "--cancer-type", "lung",
               *options, stdin=stdin)  # fmt: skip


def listed(live: LiveServer) -> dict[str, str]:
    done = run(live, "dataset", "list")
    assert done.returncode == 0, done.stderr
    return {line.split("\t")[0]: line for line in done.stdout.splitlines()}


def test_default_policy_and_explicit_none_are_shown(live: LiveServer) -> None:
    made = create(live, "cli-default")
    assert made.returncode == 0, made.stderr
    assert "de-identification: basic (burned-in: refuse)" in made.stdout
    assert "pseudonym secret: generated" in made.stdout
    none = create(live, "cli-none", "--deidentify", "none")
    assert none.returncode == 0 and "de-identification: none" in none.stdout, none.stderr
    rows = listed(live)
    assert "\tde-identification: basic (burned-in: refuse)\t" in rows["cli-default"]
    assert "\tde-identification: none (burned-in: refuse)\t" in rows["cli-none"]
    assert re.match(r"cli-none\tactive\t0 studies\t0 subjects\t", rows["cli-none"])


def test_every_flag_round_trips_to_the_research_study(live: LiveServer) -> None:
    made = create(live, "cli-eucaim", "--deidentify", "eucaim", "--provider-id", "SITE-42",
                  "--burned-in", "quarantine", "--pseudonym-secret", CTP_SECRET)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "pseudonym secret: stored" in made.stdout
    basic = create(live, "cli-basic", "--deidentify", "basic", "--deid-option", "retain-uids",
                   "--deid-option", "retain-device-identity", "--burned-in", "clean")  # fmt: skip
    assert basic.returncode == 0, basic.stderr
    live.start()
    try:
        eucaim = httpx.get(f"{live.url}/fhir/ResearchStudy/cli-eucaim").json()
        chosen = httpx.get(f"{live.url}/fhir/ResearchStudy/cli-basic").json()
    finally:
        live.stop()
    ResearchStudy.model_validate(eucaim)
    assert policy_of(eucaim) == {"profile": ["eucaim"], "providerId": ["SITE-42"],
                                 "burnedIn": ["quarantine"]}  # fmt: skip
    assert policy_of(chosen) == {"profile": ["basic"], "burnedIn": ["clean"],
                                 "option": ["retain-device-identity", "retain-uids"]}  # fmt: skip
    assert secrets_on_disk(live.data_dir)["dataset-cli-eucaim"] == CTP_SECRET


def _state(live: LiveServer, rid: str) -> tuple[str, dict[str, str]]:
    return listed(live).get(rid, ""), secrets_on_disk(live.data_dir)


def test_a_policy_or_secret_change_is_refused_and_changes_nothing(live: LiveServer) -> None:
    assert create(live, "cli-fixed", "--deidentify", "basic", "--deid-option", "retain-uids").returncode == 0  # fmt: skip
    before = _state(live, "cli-fixed")
    for options, words in (
        (("--deidentify", "none"), "rotation means a new dataset"),
        (("--deidentify", "basic"), "rotation means a new dataset"),
        (("--deidentify", "basic", "--deid-option", "retain-uids", "--burned-in", "clean"), "rotation"),
        (("--pseudonym-secret", CTP_SECRET), "never changes"),
    ):  # fmt: skip
        refused = run(live, "dataset", "create", "cli-fixed", "--title", "changed",
                      "--cancer-type", "lung", *options)  # fmt: skip
        assert refused.returncode == 1 and words in refused.stderr, (options, refused.stderr)
        assert _state(live, "cli-fixed") == before, options
    kept = run(
        live, "dataset", "create", "cli-fixed", "--title", "renamed", "--cancer-type", "lung"
    )
    assert kept.returncode == 0 and "retain-uids" in kept.stdout and "kept" in kept.stdout


INVALID = {
    "eucaim without a provider id": (("--deidentify", "eucaim"), "provider id"),
    "an option with none": (("--deidentify", "none", "--deid-option", "retain-uids"), "basic profile only"),
    "a provider id with basic": (("--deidentify", "basic", "--provider-id", "S"), "eucaim profile only"),
    "an unknown profile": (("--deidentify", "strict"), "Invalid value"),
    "an unknown option": (("--deid-option", "retain-names"), "Invalid value"),
    "a short secret": (("--pseudonym-secret", "0123456789abcdef"), "refused"),
    "a LETHE secret with a wrong check digit": (("--pseudonym-secret", "0" * 32 + "1"), "refused"),
    "a secret with spaces around": (("--pseudonym-secret", f" {CTP_SECRET} "), "refused"),
    "a monotonous secret": (("--pseudonym-secret", "ab" * 20), "refused"),
}  # fmt: skip


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_invalid_options_create_nothing(live: LiveServer, case: str) -> None:
    options, words = INVALID[case]
    before = secrets_on_disk(live.data_dir)
    refused = create(live, "cli-invalid", *options)
    assert refused.returncode != 0 and words in refused.stderr, refused.stderr
    assert "cli-invalid" not in listed(live)
    assert secrets_on_disk(live.data_dir) == before


def test_a_lethe_secret_from_stdin_and_dataset_secret_is_audited(live: LiveServer) -> None:
    secret = lethe_secret()
    made = create(live, "cli-stdin", "--deidentify", "eucaim", "--provider-id", "S1",
                  "--pseudonym-secret", "-", stdin=secret + "\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    shown = run(live, "dataset", "secret", "cli-stdin")
    assert shown.returncode == 0 and shown.stdout == secret + "\n"
    generated = run(live, "dataset", "secret", "cli-default")  # made in LETHE's format
    assert re.fullmatch(r"[0-9a-f]{33}\n", generated.stdout), generated.stdout
    assert luhn16(generated.stdout[:32]) == generated.stdout[32]
    unknown = run(live, "dataset", "secret", "no-such-dataset")
    assert unknown.returncode == 1 and "not known" in unknown.stderr
    events = run(live, "audit", "show", "--limit", "50").stdout.splitlines()
    mine = [e for e in events if "dataset secret" in e]
    assert any("ok" in e and "datasets=cli-stdin" in e for e in mine), events
    assert any("refused" in e and "datasets=no-such-dataset" in e for e in mine), events
    assert all(secret not in e for e in events)
    assert run(live, "audit", "verify").returncode == 0


def test_secret_files_are_private_and_never_printed_elsewhere(live: LiveServer) -> None:
    folder = live.data_dir / "pseudonym-secrets"
    assert folder.stat().st_mode & 0o777 == 0o700
    secrets = secrets_on_disk(live.data_dir)
    assert {"dataset-cli-default", "dataset-cli-none", "dataset-cli-eucaim"} <= set(secrets)
    for name in secrets:
        assert (folder / name).stat().st_mode & 0o777 == 0o600, name
    assert Runs.outputs
    assert [s for s in secrets.values() for out in Runs.outputs if s in out] == []
    log = live.log_path.read_text(errors="replace") if live.log_path.exists() else ""
    assert [s for s in secrets.values() if s in log] == []


def test_backup_and_restore_carry_the_secrets(live: LiveServer, tmp_path: Path) -> None:
    secrets = secrets_on_disk(live.data_dir)
    assert len(secrets) >= 4
    dest = tmp_path / "backup"
    done = run(live, "backup", "--quiet", str(dest))
    assert done.returncode == 0, done.stderr
    assert "unclassified" not in done.stdout.lower() or "unclassified: 0" in done.stdout.lower()
    target = tmp_path / "restored"
    restored = run(live, "restore", "--quiet", "--data-dir", str(target), str(dest))
    assert restored.returncode == 0, restored.stderr
    assert secrets_on_disk(target) == secrets
    for path in (target / "pseudonym-secrets").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
    again = LiveServer(target, extra_env=DEFAULT_ENV)
    shown = run(again, "dataset", "secret", "cli-eucaim")
    assert shown.stdout == CTP_SECRET + "\n"
    assert "de-identification: eucaim (provider SITE-42" in listed(again)["cli-eucaim"]

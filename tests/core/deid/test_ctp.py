"""Properties of the CTP-compatible functions (independent vectors live elsewhere)."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from server.core.deid import ctp


def _md5_decimal(text: str) -> str:
    return str(int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16))


@pytest.mark.parametrize("text", ["", "abc", "Müller^Zoë", "12345 ", "\u4e2d\u6587"])
def test_usmd5_is_unsigned_decimal_of_utf8_md5(text: str) -> None:
    value = ctp.usmd5(text)
    assert value == _md5_decimal(text)
    assert value.isdigit() and not value.startswith("0") and len(value) <= 39


def test_hash_cuts_to_maxlen_and_none_hashes_null() -> None:
    assert ctp.ctp_hash("A123", 16) == _md5_decimal("A123")[:16]
    assert ctp.ctp_hash(None) == _md5_decimal("null")
    assert ctp.ctp_hash("x", 0) == _md5_decimal("x")


def test_hash_patient_id_trims_both_and_prefixes() -> None:
    secret = ctp.generate_secret()
    expected = "EUCAIM-" + _md5_decimal(f"[{secret}]PAT 1")
    assert ctp.hash_patient_id(secret, "PAT 1") == expected
    assert ctp.hash_patient_id(f" {secret} ", "  PAT 1  ") == expected
    assert ctp.hash_patient_id(secret, None) == "EUCAIM-" + _md5_decimal(f"[{secret}]null")
    assert ctp.hash_patient_name(secret, "PAT 1") == expected + "^Anonymous"
    assert len(ctp.hash_patient_name(secret, "x")) <= 64


def test_hash_uid_appends_anonymised_pid_and_caps_at_64() -> None:
    pid = ctp.hash_patient_id("s", "P")
    uid = ctp.hash_uid(ctp.EUCAIM_UID_ROOT, "1.2.3", pid)
    assert uid == ("1.3.6.1.4.1.58108.2023." + _md5_decimal("1.2.3" + pid))[:64]
    assert len(uid) <= 64 and uid.startswith(ctp.EUCAIM_UID_ROOT + ".")
    assert ctp.hash_uid(ctp.EUCAIM_UID_ROOT + ".", "1.2.3", pid) == uid
    assert ctp.hash_uid(ctp.EUCAIM_UID_ROOT, "1.2.3", ctp.hash_patient_id("s", "Q")) != uid
    # DICOMAnonymizer adds the dot before hashUID trims: an empty root gives ".<digits>"
    assert ctp.hash_uid("", "9") == "." + _md5_decimal("9")
    assert ctp.hash_uid_raw("", "9") == _md5_decimal("9")


def test_hash_uid_raw_prepends_nine_only_for_leading_zero() -> None:
    # a base-10 BigInteger never starts with 0, so the rule never fires on real digests
    assert ctp.hash_uid_raw("1.2", "x") == "1.2." + _md5_decimal("x")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240117", "20240101"),
        ("2024-01-17", "2024-01-01"),
        ("20240117120000.5+0100", "20240101120000.5+0100"),
        ("20240117\\19991231", "20240101\\19991201"),
        ("2024011", ""),
        ("notadate", ""),
    ],
)
def test_modify_date_sets_day_keeps_suffix(value: str, expected: str) -> None:
    assert ctp.modify_date(value) == expected


def test_hashdate_shift_is_per_source_and_within_ten_years() -> None:
    for pid in ["A", "B", "PAT-0001", "ß"]:
        days = ctp.date_shift_days(pid)
        assert -3649 <= days <= -1
        assert days == (-(int(_md5_decimal(pid)[-4:]) % 3650) or -1)
        shifted = ctp.hash_date_shift("20200301\\20200302", pid)
        first, second = (dt.datetime.strptime(v, "%Y%m%d").date() for v in shifted.split("\\"))
        assert (first - dt.date(2020, 3, 1)).days == days
        assert (second - first).days == 1
    assert ctp.hash_date_shift("20200301101010", "A")[8:] == "101010"


def test_generated_secrets_are_valid_uuid7_with_check_digit() -> None:
    secrets = {ctp.generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert len(secret) == 33 and ctp.valid_secret(secret)
        assert secret[12] == "7" and secret[16] in "89ab"


def test_valid_secret_rejects_any_single_digit_change_and_bad_shapes() -> None:
    secret = ctp.generate_secret()
    for i in range(33):
        for c in "0123456789abcdef":
            if c != secret[i]:
                mutated = secret[:i] + c + secret[i + 1 :]
                assert not ctp.valid_secret(mutated)
    assert not ctp.valid_secret(secret[:-1])
    assert not ctp.valid_secret(secret.upper())
    assert not ctp.valid_secret("")


def test_luhn_mod16_matches_the_textbook_algorithm() -> None:
    # Luhn mod N: double every second digit from the right of the payload+check, sum digits base N
    body = "0123456789abcdef0123456789abcdef"
    check = ctp.luhn16_check_digit(body)
    total = 0
    for i, ch in enumerate(reversed(body + check)):
        d = int(ch, 16) * (2 if i % 2 else 1)
        total += d // 16 + d % 16
    assert total % 16 == 0


def test_scrub_removes_whole_identifying_words_only() -> None:
    from server.core.deid import values

    words = values.identifying_words(["Kowalski^Carla", "St Mary Hospital", "PAT-001"])
    assert values.scrub("CT chest Kowalski, St Mary; id PAT-001", words) == "CT chest , ; id"
    assert values.scrub("Stomach study", words) == "Stomach study"

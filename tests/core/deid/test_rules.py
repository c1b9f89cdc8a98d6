"""The generated rule tables and how compound Annex E actions are resolved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.core.deid import annex_e_table, generate_lethe, generate_table, lethe_table
from server.core.deid.policy import Option
from server.core.deid.rules import basic_action

ACTIONS = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}


def test_annex_e_table_is_well_formed() -> None:
    assert annex_e_table.EDITION == "2026c" and annex_e_table.OPTION_EDITION == "2024b"
    assert len(annex_e_table.RULES) > 600
    options = {o.value for o in Option}
    for basic, cols in annex_e_table.RULES.values():
        assert basic in ACTIONS
        assert set(cols) <= options and set(cols.values()) <= {"K", "C"}
    # rows everybody knows (PS3.15 Table E.1-1)
    assert annex_e_table.RULES[0x00100010][0] == "Z"  # Patient's Name
    assert annex_e_table.RULES[0x00080050][0] == "Z"  # Accession Number
    assert annex_e_table.RULES[0x0020000D] == ("U", {"retain-uids": "K"})
    assert annex_e_table.RULES[0x00100040][1] == {"retain-patient-characteristics": "K"}


@pytest.mark.parametrize(
    ("tag", "vr", "options", "expected"),
    [
        (0x00081010, "SH", set(), "D"),  # Station Name X/Z/D
        (0x00081010, "SH", {Option.retain_device_identity}, "K"),
        (0x00080022, "DA", set(), "Z"),  # Acquisition Date X/Z
        (0x00080022, "DA", {Option.retain_long_modified_dates}, "C"),
        (0x00080022, "DA", {Option.retain_long_full_dates}, "K"),
        (0x00081140, "SQ", set(), "K"),  # Referenced Image Sequence X/Z/U*: walk the items
        (0x0008103E, "LO", {Option.clean_descriptors}, "C"),  # Series Description
        (0x60003000, "OW", set(), "X"),  # Overlay Data (60xx)
        (0x60023000, "OW", {Option.clean_graphics}, "C"),
        (0x60020010, "US", set(), "X"),  # the rest of an overlay group goes with it
        (0x50001234, "OB", set(), "X"),  # curves
        (0x00140104, "PN", set(), "Z"),  # unlisted person name (Secondary Reviewer Name)
        (0x00140102, "DA", set(), "D"),  # unlisted date (Secondary Review Date)
        (0x00140102, "DA", {Option.retain_long_modified_dates}, "C"),
        (0x00080108, "LT", set(), "X"),  # unlisted free text (Extended Code Meaning)
        (0x00080108, "LT", {Option.clean_descriptors}, "C"),
        (0x00041432, "UI", set(), "U"),  # unlisted UID: remapped unless a definition
        (0x00041432, "UI", {Option.retain_uids}, "K"),
        (0x00209999, "LO", set(), "X"),  # not in the dictionary: removed
        (0x00280010, "US", set(), "K"),  # Rows: not identifying
        (0x0040A160, "UT", set(), "X"),  # SR TextValue
        (0x0040A160, "UT", {Option.clean_structured_content}, "C"),
    ],
)
def test_basic_action(tag: int, vr: str, options: set[Option], expected: str) -> None:
    assert basic_action(tag, vr, frozenset(options)) == expected


def test_lethe_table_covers_the_script_rules() -> None:
    assert lethe_table.KEEP_GROUPS == (0x0018, 0x0020, 0x0028)
    assert len(lethe_table.RULES) > 4600
    assert lethe_table.RULES[0x00100020] == "PID" and lethe_table.RULES[0x00100010] == "PN"
    assert lethe_table.RULES[0x00080018] == "U" and lethe_table.RULES[0x00080020] == "M1"
    assert lethe_table.RULES[0x00080050] == "H16" and lethe_table.RULES[0x00080080] == "SITE"
    assert lethe_table.RULES[0x0018100B] == "U"  # the rule written without "@"


def test_lethe_classifier_refuses_unknown_scripts() -> None:
    assert generate_lethe.classify(" @remove() ") == "X"
    with pytest.raises(ValueError, match="unknown"):
        generate_lethe.classify("@lookup(this,ptid)")


def test_table_generator_round_trip(tmp_path: Path) -> None:
    basic = tmp_path / "dicomfields_test.py"
    basic.write_text(
        "D_TAGS = [\n    (0x0008, 0x1010),  # Station Name\n]\n"
        "X_TAGS = [\n    (0x6000, 0x3000, 0xFF00, 0xFFFF),  # Overlay Data\n]\n"
    )
    options = tmp_path / "conf.json"
    rows = [
        {"id": "00081010", "basicProfile": "D", "rtnDevIdOpt": "K"},
        {"id": "60xx3000", "basicProfile": "X", "cleanGraphOpt": "C"},
        {"id": "ggggeeee-where-gggg-is-odd", "basicProfile": "X"},
    ]
    options.write_text(json.dumps(rows))
    code = generate_table.render([str(basic), str(options), "2099a", "2098z", "test"])
    namespace: dict[str, object] = {}
    exec(compile(code, "generated", "exec"), namespace)  # the generated module is data only
    assert namespace["RULES"] == {0x00081010: ("D", {"retain-device-identity": "K"})}
    assert namespace["MASKED"] == [(0x60003000, 0xFF00FFFF, "X", {"clean-graphics": "C"})]
    assert namespace["EDITION"] == "2099a"

"""The engine's exact output bytes and records, pinned: optimisations must change nothing.

Every file of pydicom's test data goes through ``basic`` (no option), ``basic`` with
options switched on, and ``eucaim``, under a fixed secret. The sha256 of each output file
and of its DeidRecord (or the exception it raised) must equal the values recorded in
``data/pinned_output.json``. The pins hold for the pydicom version recorded with them
(its writer encodes the output); regenerate only for a deliberate change of output:

    .venv/bin/python -m tests.core.deid.test_pinned_output
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import orjson
import pydicom
import pydicom.data
import pytest

from server.core.deid import stream
from server.core.deid.engine import deidentify
from server.core.deid.policy import DeidPolicy, Option, Profile

SECRET = "0193c0de5e1b7a3c8d2f4e6a1b3c5d7e9"
PINS = Path(__file__).parent / "data" / "pinned_output.json"
POLICIES = {
    "basic": DeidPolicy(profile=Profile.basic),
    "basic-options": DeidPolicy(
        profile=Profile.basic,
        options=frozenset(Option) - {Option.retain_long_full_dates, Option.retain_uids},
    ),
    "basic-full-dates-uids": DeidPolicy(
        profile=Profile.basic,
        options=frozenset({Option.retain_long_full_dates, Option.retain_uids}),
    ),
    "eucaim": DeidPolicy(profile=Profile.eucaim, provider_id="PIN-SITE"),
}


def _files() -> dict[str, Path]:
    """pydicom's bundled test files (no download), keyed by path inside its folder."""
    root = Path(pydicom.data.__file__).parent / "test_files"
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def outcome(src: Path, policy: DeidPolicy, tmp: Path) -> str:
    """sha256 of the output bytes + of the record JSON, or the exception's type."""
    dst = tmp / "out.dcm"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record = deidentify(src, dst, policy, SECRET).record
    except Exception as exc:  # the refusal is part of the pinned behaviour
        return f"raised {type(exc).__name__}"
    finally:
        out = dst.read_bytes() if dst.exists() else b""
        dst.unlink(missing_ok=True)
    record_json = orjson.dumps(record.to_json(), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(out).hexdigest() + " " + hashlib.sha256(record_json).hexdigest()


def _pins() -> dict[str, dict[str, str]]:
    return json.loads(PINS.read_text())


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_output_bytes_unchanged(name: str, tmp_path: Path) -> None:
    pins = _pins()
    if pins["pydicom"] != pydicom.__version__:
        pytest.skip(f"pins made with pydicom {pins['pydicom']}, not {pydicom.__version__}")
    expected = pins[name]
    files = _files()
    assert set(expected) <= set(files), "a pinned test file is missing"
    assert len(expected) > 150
    wrong = [
        f for f, want in expected.items() if outcome(files[f], POLICIES[name], tmp_path) != want
    ]
    assert not wrong, f"{name}: output changed for {wrong}"


def main() -> None:
    import tempfile

    pins: dict[str, object] = {"pydicom": pydicom.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        for name, policy in POLICIES.items():
            pins[name] = {f: outcome(p, policy, Path(tmp)) for f, p in _files().items()}
    PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()


@pytest.mark.parametrize("name", ["basic", "eucaim"])
def test_direct_encoding_equals_pydicoms_writer_and_hash_is_the_files(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever pydicom version: the writer's shortcuts (file meta, decoded strings and
    numbers encoded directly) write the bytes pydicom's own writer writes, and the
    sha256 computed while writing is the sha256 of the file written."""
    files = _files()
    direct, hashed = {}, 0
    for f, path in files.items():
        dst = tmp_path / "direct.dcm"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                digest = deidentify(path, dst, POLICIES[name], SECRET).sha256
        except Exception:
            continue
        direct[f] = dst.read_bytes()
        dst.unlink()
        if digest is not None:
            hashed += 1
            assert digest == hashlib.sha256(direct[f]).hexdigest(), f
    assert hashed > 100
    monkeypatch.setattr(stream, "_meta_bytes", lambda ds, ts: None)
    monkeypatch.setattr(stream, "_string", lambda out, elem, source, ascii_text: False)
    monkeypatch.setattr(stream, "_ints", lambda out, elem, source: False)
    differ = []
    for f, want in direct.items():
        dst = tmp_path / "pydicom.dcm"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deidentify(files[f], dst, POLICIES[name], SECRET)
        if dst.read_bytes() != want:
            differ.append(f)
        dst.unlink()
    assert not differ, f"{name}: direct encoding differs from pydicom's for {differ}"

"""``backup`` and ``restore`` copy the data directory's blobs: with GATEWAY_STORAGE=s3 they
refuse, say what to do instead, and write nothing (no S3 server needed: they stop first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.live import LiveServer

pytestmark = pytest.mark.index_independent

S3_ENV = {
    "GATEWAY_STORAGE": "s3",
    "GATEWAY_S3__ENDPOINT_URL": "http://127.0.0.1:9",
    "GATEWAY_S3__BUCKET": "gateway-blobs",
    "GATEWAY_S3__ACCESS_KEY_ID": "key",
    "GATEWAY_S3__SECRET_ACCESS_KEY": "not-in-any-output",
}


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_backup_and_restore_refuse_s3_storage_and_write_nothing(
    tmp_path: Path, command: str
) -> None:
    live = LiveServer(tmp_path / "data", extra_env=S3_ENV)
    target = tmp_path / "copy"
    if command == "restore":
        target.mkdir()
    done = live.cli(command, str(target))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "GATEWAY_STORAGE=s3" in done.stderr and "bucket" in done.stderr
    assert "Traceback" not in done.stderr and "not-in-any-output" not in done.stdout + done.stderr
    assert not (target.exists() and any(target.iterdir()))
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.sqlite"))


def test_storage_s3_without_a_bucket_is_a_one_line_settings_error(tmp_path: Path) -> None:
    env = {k: v for k, v in S3_ENV.items() if k != "GATEWAY_S3__BUCKET"}
    done = LiveServer(tmp_path / "data", extra_env=env).cli("check")
    assert done.returncode != 0
    assert "GATEWAY_S3__BUCKET" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr

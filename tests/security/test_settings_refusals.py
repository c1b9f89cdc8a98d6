"""Settings refuse unsafe values outside development (authorisation off, fault injection)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings
from tests.live import LiveServer

pytestmark = pytest.mark.index_independent  # not in the Elasticsearch pass


@pytest.mark.parametrize("environment", ["production", "test"])
def test_authorisation_cannot_be_switched_off_outside_development(
    tmp_path: Path, environment: str
) -> None:
    with pytest.raises(ValueError, match="authorisation can only be switched off"):
        Settings(environment=environment, auth={"enabled": False}, data_dir=tmp_path)
    live = LiveServer(
        tmp_path / "d",
        extra_env={"GATEWAY_ENVIRONMENT": environment, "GATEWAY_AUTH__ENABLED": "false"},
    )
    result = live.cli("check")
    assert result.returncode != 0
    assert "authorisation can only be switched off" in result.stderr


def test_development_may_switch_it_off_and_production_is_secure_by_default(tmp_path: Path) -> None:
    assert (
        Settings(environment="development", auth={"enabled": False}, data_dir=tmp_path).auth.enabled
        is False
    )
    assert Settings(data_dir=tmp_path).auth.enabled is True
    assert Settings(data_dir=tmp_path).environment.value == "production"

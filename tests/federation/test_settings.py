"""Federated-search settings: safe defaults, unsafe values refused (the CLI says why)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.services.backup_files import Kind, classify
from server.settings import Settings
from tests.live import LiveServer

pytestmark = pytest.mark.index_independent  # not in the Elasticsearch pass


def test_defaults_are_safe(tmp_path: Path) -> None:
    f = Settings(data_dir=tmp_path).federation
    assert f.eucaim_search_token is None  # the route is off until an operator sets a secret
    assert (f.min_count, f.rounding_step, f.noise) == (10, 1, False)
    assert f.oauth_clients == []


@pytest.mark.parametrize(
    ("federation", "message"),
    [({"eucaim_search_token": "short"}, "at least 16"), ({"min_count": 0}, "greater than or equal"),
     ({"min_count": 1}, "MIN_COUNT=1"), ({"rounding_step": 0}, "greater than or equal"),
     ({"epsilon": 0}, "greater than"), ({"epsilon": 100}, "less than"),
     ({"delta_subjects": 0.5}, "greater than or equal"), ({"delta_studies": 0}, "greater than")],
)  # fmt: skip
def test_unsafe_values_are_refused(
    tmp_path: Path, federation: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(environment="production", data_dir=tmp_path, federation=federation)


def test_no_minimum_count_only_in_development(tmp_path: Path) -> None:
    assert Settings(environment="development", data_dir=tmp_path, federation={"min_count": 1})
    live = LiveServer(tmp_path / "d", extra_env={"GATEWAY_ENVIRONMENT": "production",
                                                 "GATEWAY_FEDERATION__MIN_COUNT": "1"})  # fmt: skip
    result = live.cli("federation", "status")
    assert result.returncode != 0 and "MIN_COUNT=1" in result.stderr


def test_the_noise_file_is_backed_up_as_a_database(tmp_path: Path) -> None:
    from server.index.federation_noise import NoiseStore

    store = NoiseStore(tmp_path / "federation.sqlite")
    assert store.sample(("d", "subjects", 12, 0.28, 1.0), lambda: 1.5) == 1.5
    assert store.sample(("d", "subjects", 12, 0.28, 1.0), lambda: 9.0) == 1.5  # kept
    store.close()
    from pathlib import PurePosixPath

    assert classify(tmp_path, PurePosixPath("federation.sqlite")) is Kind.sqlite

"""``gateway.deid_policies.for_dataset``: what every ingest asks, answered fast and right.

A gateway built from settings on a temporary data directory (the composition root the
server uses), with datasets written by it and by a separate CLI process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from server.app import Gateway, build_gateway
from server.core.deid.policy import BurnedIn, Option, Profile
from server.settings import Settings
from tests.deid.policy_helpers import policy_ext, secrets_on_disk, study


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    env = {"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_ENVIRONMENT": "development",
           "GATEWAY_AUTH__ENABLED": "false", "GATEWAY_DEID__DEFAULT_PROFILE": "basic"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    built = build_gateway(Settings())
    yield built
    built.close()


def _put(gateway: Gateway, rid: str, *extensions: dict[str, object]) -> None:
    gateway.fhir_write.update("ResearchStudy", rid, orjson.dumps(study(rid, *extensions)))


def test_no_dataset_gets_the_default_and_a_secret_of_its_own(gateway: Gateway) -> None:
    policy, secret = gateway.deid_policies.for_dataset(None)
    assert policy.profile is Profile.basic and not policy.options
    assert policy.burned_in is BurnedIn.refuse
    assert secrets_on_disk(gateway.settings.data_dir) == {"no-dataset": secret}
    path = gateway.settings.data_dir / "pseudonym-secrets" / "no-dataset"
    assert path.stat().st_mode & 0o777 == 0o600
    assert gateway.deid_policies.for_dataset(None) == (policy, secret)


def test_each_dataset_its_policy_and_secret(gateway: Gateway) -> None:
    _put(gateway, "a", policy_ext("basic", "retain-uids", burned_in="quarantine"))
    _put(gateway, "b", policy_ext("eucaim", provider="SITE"))
    _put(gateway, "c")
    a, b, c = (gateway.deid_policies.for_dataset(x) for x in "abc")
    assert a[0].options == frozenset({Option.retain_uids})
    assert a[0].burned_in is BurnedIn.quarantine
    assert b[0].profile is Profile.eucaim and b[0].provider_id == "SITE"
    assert c[0].profile is Profile.basic  # the default, written on it
    assert len({a[1], b[1], c[1], gateway.deid_policies.for_dataset(None)[1]}) == 4
    on_disk = secrets_on_disk(gateway.settings.data_dir)
    assert on_disk["dataset-a"] == a[1] and on_disk["dataset-b"] == b[1]


def test_a_dataset_created_later_by_another_process_is_seen(gateway: Gateway) -> None:
    """An id looked up before its ResearchStudy exists is not cached with the default."""
    before, _ = gateway.deid_policies.for_dataset("later")
    assert before.profile is Profile.basic
    env = {**os.environ}
    done = subprocess.run(
        [sys.executable, "-m", "server.cli.main", "dataset", "create", "later", "--title", "L",
         "--cancer-type", "lung", "--deidentify", "none"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    after, secret = gateway.deid_policies.for_dataset("later")
    assert after.profile is Profile.none
    assert "kept" in done.stdout  # the secret made on first use stays the dataset's
    assert secrets_on_disk(gateway.settings.data_dir)["dataset-later"] == secret


def test_lookups_are_cached_and_fast(gateway: Gateway) -> None:
    _put(gateway, "fast", policy_ext("basic", "clean-graphics"))
    gateway.deid_policies.for_dataset("fast")
    start = time.perf_counter()
    for _ in range(20_000):
        gateway.deid_policies.for_dataset("fast")
    per_call = (time.perf_counter() - start) / 20_000
    assert per_call < 20e-6, f"{per_call * 1e6:.1f} µs per lookup"


def test_a_deleted_dataset_keeps_its_policy(gateway: Gateway) -> None:
    _put(gateway, "w", policy_ext("none"))
    assert gateway.deid_policies.for_dataset("w")[0].profile is Profile.none
    gateway.fhir_write.delete("ResearchStudy", "w")
    # a deleted id keeps its policy (and its secret): re-created with it, nothing else
    assert gateway.deid_policies.for_dataset("w")[0].profile is Profile.none
    _put(gateway, "w")
    assert gateway.deid_policies.for_dataset("w")[0].profile is Profile.none

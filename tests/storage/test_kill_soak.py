"""A short kill -9 soak (the long one: ``python -m bench.kill_soak --kills 20``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.kill_soak import soak


def test_kill_9_of_every_worker_during_stow_loses_nothing_and_needs_no_repair(
    index_backend: str,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    es_url = request.getfixturevalue("elasticsearch_url") if index_backend != "sqlite" else ""
    args = argparse.Namespace(
        kills=2, clients=3, workers=2, max_uptime=2.0, seed=7,
        index_backend=index_backend, es_url=es_url, data_dir=tmp_path,
    )  # fmt: skip
    verdict = soak(args)
    out = capsys.readouterr().out
    assert verdict == 0, out
    assert "lost or altered: 0" in out and "listed but not retrievable: 0" in out
    assert "check without --repair: exit 0" in out

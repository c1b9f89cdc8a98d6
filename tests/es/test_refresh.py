"""What an acknowledged write on Elasticsearch guarantees to the next search.

Default (``GATEWAY_ELASTICSEARCH__REFRESH=immediate``): read-after-write. Every STOW
that answered 200 is found by a QIDO sent right after the answer, even with many
clients writing at once (they share refreshes). ``wait_for`` keeps the guarantee with
Elasticsearch's periodic refresh; ``none`` answers once durable and the instance shows
up (in searches and retrieval) within the refresh interval. Real Elasticsearch, real HTTP.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from elasticsearch import Elasticsearch

from server.index.es_refresh import SharedRefresh
from server.settings import Settings
from tests.helpers import cohort, part10, stow
from tests.live import LiveServer


def _gateway(tmp_path: Path, es_url: str, **env: str) -> LiveServer:
    extra = {
        "GATEWAY_INDEX": "elasticsearch",
        "GATEWAY_ELASTICSEARCH__HOSTS": f'["{es_url}"]',
        "GATEWAY_ELASTICSEARCH__INDEX_PREFIX": f"refresh{time.time_ns()}",
        **env,
    }
    return LiveServer(tmp_path / "data", extra_env=extra).start()


def _found(live: LiveServer, study: str) -> int:
    """Instances a QIDO instance search finds in ``study`` (0: not searchable yet)."""
    answer = httpx.get(f"{live.dicomweb}/studies/{study}/instances", timeout=30)
    assert answer.status_code in (200, 204), answer.text
    return len(answer.json()) if answer.status_code == 200 else 0


def _cleanup(es_url: str, live: LiveServer) -> None:
    prefix = live.extra_env["GATEWAY_ELASTICSEARCH__INDEX_PREFIX"]
    es = Elasticsearch(es_url)
    names = list(es.indices.get(index=f"{prefix}-*"))
    if names:
        es.indices.delete(index=",".join(names))


def test_the_default_is_read_after_write() -> None:
    assert Settings().elasticsearch.refresh == "immediate"


def test_every_acknowledged_stow_of_concurrent_clients_is_found_by_an_immediate_qido(
    elasticsearch_url: str, tmp_path: Path
) -> None:
    live = _gateway(tmp_path, elasticsearch_url)  # the default setting
    studies = [cohort(instances_per_series=2) for _ in range(24)]
    missing: list[tuple[str, int]] = []
    errors: list[str] = []

    def client(mine: list[list[object]]) -> None:
        for datasets in mine:
            answer = stow(live, [part10(ds) for ds in datasets])  # type: ignore[arg-type]
            if answer.status_code != 200:
                errors.append(answer.text[:200])
                continue
            uid = str(datasets[0].StudyInstanceUID)  # type: ignore[attr-defined]
            seen = _found(live, uid)
            if seen != 2:
                missing.append((uid, seen))

    try:
        threads = [
            threading.Thread(target=client, args=(studies[i::8],)) for i in range(8)
        ]  # 8 clients writing at once: the refreshes they share must cover every one
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert not missing, f"acknowledged but not searchable: {missing[:5]}"
    finally:
        live.stop()
        _cleanup(elasticsearch_url, live)


def test_a_deleted_study_is_gone_from_an_immediate_qido(
    elasticsearch_url: str, tmp_path: Path
) -> None:
    live = _gateway(tmp_path, elasticsearch_url)
    try:
        datasets = cohort(instances_per_series=2)
        assert stow(live, [part10(ds) for ds in datasets]).status_code == 200
        uid = str(datasets[0].StudyInstanceUID)
        assert httpx.delete(f"{live.dicomweb}/studies/{uid}").status_code in (200, 202, 204)
        assert _found(live, uid) == 0
        studies = httpx.get(f"{live.dicomweb}/studies", params={"StudyInstanceUID": uid})
        assert studies.status_code == 204 or studies.json() == []
    finally:
        live.stop()
        _cleanup(elasticsearch_url, live)


def test_wait_for_keeps_read_after_write(elasticsearch_url: str, tmp_path: Path) -> None:
    live = _gateway(tmp_path, elasticsearch_url, GATEWAY_ELASTICSEARCH__REFRESH="wait_for")
    try:
        for _ in range(3):
            datasets = cohort(instances_per_series=2)
            assert stow(live, [part10(ds) for ds in datasets]).status_code == 200
            assert _found(live, str(datasets[0].StudyInstanceUID)) == 2
    finally:
        live.stop()
        _cleanup(elasticsearch_url, live)


def test_none_answers_once_durable_and_the_write_is_searchable_within_the_refresh_interval(
    elasticsearch_url: str, tmp_path: Path
) -> None:
    live = _gateway(tmp_path, elasticsearch_url, GATEWAY_ELASTICSEARCH__REFRESH="none")
    try:
        datasets = cohort(instances_per_series=2)
        assert stow(live, [part10(ds) for ds in datasets]).status_code == 200
        uid = str(datasets[0].StudyInstanceUID)
        deadline = time.monotonic() + 5  # refresh_interval 1 s, with room for a loaded host
        while _found(live, uid) != 2:
            assert time.monotonic() < deadline, "not searchable after the refresh interval"
            time.sleep(0.1)
    finally:
        live.stop()
        _cleanup(elasticsearch_url, live)


def test_a_bad_refresh_setting_stops_the_start_with_the_choices(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data", extra_env={"GATEWAY_ELASTICSEARCH__REFRESH": "sometimes"})
    with pytest.raises(RuntimeError) as failed:
        live.start(timeout=60)
    assert "immediate" in str(failed.value) and "wait_for" in str(failed.value)


def test_concurrent_waiters_share_refreshes_and_each_sees_its_own_write(
    elasticsearch_url: str,
) -> None:
    es = Elasticsearch(elasticsearch_url)
    name = f"shared-refresh-{time.time_ns()}"
    es.indices.create(index=name, settings={"refresh_interval": "-1"})  # only ours
    shared = SharedRefresh(lambda: es.indices.refresh(index=name))
    unseen: list[int] = []
    together = threading.Barrier(32)

    def writer(n: int) -> None:
        es.index(index=name, id=str(n), document={"n": n}, refresh=False)
        together.wait()
        shared.wait()
        if es.count(index=name, query={"term": {"n": n}})["count"] != 1:
            unseen.append(n)

    try:
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not unseen
        assert shared.refreshes < 32  # shared, not one per writer
    finally:
        es.indices.delete(index=name)

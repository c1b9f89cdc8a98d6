"""Elasticsearch unreachable: the FAIR Data Point answers 503 with Retry-After and no-store
(an outage must not be cached as a fact about the catalogue), and recovers with the cluster."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.es.test_outage import Proxy
from tests.live import LiveServer


def test_fdp_during_an_outage_is_503_not_cached(elasticsearch_url: str, tmp_path: Path) -> None:
    proxy = Proxy(elasticsearch_url)
    proxy.start()
    env = {
        "GATEWAY_INDEX": "elasticsearch",
        "GATEWAY_ELASTICSEARCH__HOSTS": f'["http://127.0.0.1:{proxy.port}"]',
        "GATEWAY_ELASTICSEARCH__INDEX_PREFIX": f"fdpoutage{proxy.port}",
        "GATEWAY_ELASTICSEARCH__REQUEST_TIMEOUT": "3",
        "GATEWAY_CATALOGUE__CACHE_SECONDS": "0",
    }
    live = LiveServer(tmp_path / "data", extra_env=env)
    assert live.cli("dataset", "create", "d1", "--title", "D1", "--cancer-type", "lung",
                    "--access-rights", "PUBLIC").returncode == 0  # fmt: skip
    live.start()
    url = f"{live.url}/fdp/dataset/d1"
    try:
        assert httpx.get(url, timeout=60).status_code == 200
        proxy.cut()
        down = httpx.get(url, timeout=60)
        assert down.status_code == 503, down.text
        assert down.headers["cache-control"] == "no-store" and int(down.headers["retry-after"]) > 0
        proxy.start()
        assert httpx.get(url, timeout=60).status_code == 200
    finally:
        live.stop()
        proxy.cut()
        httpx.delete(f"{elasticsearch_url}/fdpoutage{proxy.port}-*", timeout=120)

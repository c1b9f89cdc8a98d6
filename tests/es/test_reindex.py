"""``imaging-gateway reindex``: rebuild from the blob store while serving; aliases switch atomically."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import cohort, part10, stow
from tests.live import LiveServer


def _studies(live: LiveServer) -> list[tuple[str, int, int, tuple[str, ...]]]:
    rows = httpx.get(f"{live.dicomweb}/studies", params={"limit": 1000}).json()
    return sorted(
        (r["0020000D"]["Value"][0], r["00201206"]["Value"][0], r["00201208"]["Value"][0],
         tuple(r["00080061"].get("Value", [])))
        for r in rows
    )  # fmt: skip


def test_reindex_rebuilds_identical_answers_and_switches_aliases(
    elasticsearch_url: str, tmp_path: Path
) -> None:
    prefix = f"reidx{abs(hash(str(tmp_path))) % 10**8}"
    env = {
        "GATEWAY_INDEX": "elasticsearch",
        "GATEWAY_ELASTICSEARCH__HOSTS": f'["{elasticsearch_url}"]',
        "GATEWAY_ELASTICSEARCH__INDEX_PREFIX": prefix,
    }
    live = LiveServer(tmp_path / "data", extra_env=env)
    assert (
        live.cli("dataset", "create", "lung", "--title", "Lung", "--cancer-type", "lung").returncode
        == 0
    )
    live.start()
    try:
        r = httpx.post(
            f"{live.url}/datasets/lung/dicom-web/studies",
            content=b"".join(
                [b"--b\r\nContent-Type: application/dicom\r\n\r\n" + part10(ds) + b"\r\n"
                 for ds in cohort(patients=2, series_per_study=2, instances_per_series=3)] + [b"--b--\r\n"]
            ),
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        assert stow(live, [part10(ds) for ds in cohort(instances_per_series=2)]).status_code == 200
        before = _studies(live)
        old_indices = set(httpx.get(f"{elasticsearch_url}/_alias/{prefix}-*").json())

        done = live.cli("reindex", "--quiet")  # while the gateway keeps serving
        assert done.returncode == 0, done.stderr
        assert "indexed 14" in done.stdout

        assert _studies(live) == before
        aliases = httpx.get(f"{elasticsearch_url}/_alias/{prefix}-*").json()
        assert set(aliases).isdisjoint(old_indices)
        assert {a for v in aliases.values() for a in v["aliases"]} == {
            f"{prefix}-studies",
            f"{prefix}-series",
            f"{prefix}-instances",
        }
        in_lung = httpx.post(
            f"{elasticsearch_url}/{prefix}-studies/_count",
            json={"query": {"term": {"dataset": "lung"}}},
        ).json()["count"]
        assert in_lung == 2  # dataset membership lives only in the index: carried over
        moved = stow(live, [part10(ds) for ds in cohort(instances_per_series=1)])
        assert moved.status_code == 200  # writes go to the new indices
        assert len(_studies(live)) == len(before) + 1
    finally:
        live.stop()
        httpx.delete(f"{elasticsearch_url}/{prefix}-*", timeout=120)

"""``imaging-gateway reindex``: rebuild from the blob store while serving; aliases switch atomically."""

from __future__ import annotations

import time
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


def _es_gateway(elasticsearch_url: str, data: Path, **extra: str) -> tuple[LiveServer, str]:
    prefix = f"reidx{abs(hash(str(data))) % 10**8}"
    env = {
        "GATEWAY_INDEX": "elasticsearch",
        "GATEWAY_ELASTICSEARCH__HOSTS": f'["{elasticsearch_url}"]',
        "GATEWAY_ELASTICSEARCH__INDEX_PREFIX": prefix,
        **extra,
    }
    return LiveServer(data, extra_env=env), prefix


def _concrete(elasticsearch_url: str, prefix: str) -> set[str]:
    return set(
        httpx.get(f"{elasticsearch_url}/{prefix}-*", params={"expand_wildcards": "all"}).json()
    )


def test_a_reindex_killed_mid_way_is_resumed_from_its_checkpoint_by_the_next_run(
    elasticsearch_url: str, tmp_path: Path
) -> None:
    """kill -9 after the first stored batch: ``--status`` shows the job running with no live
    runner; the next ``reindex`` takes the job over once its lease ran out, loads only the
    rest into the same new indices, and the answers are those of before."""
    settings = {"GATEWAY_REINDEX__BATCH_SIZE": "4", "GATEWAY_REINDEX__LEASE_SECONDS": "2",
                # the serving gateway's runner would take the abandoned job over as well:
                # here the command resumes it (the replica test covers the runners)
                "GATEWAY_REINDEX__POLL_SECONDS": "3600"}  # fmt: skip
    live, prefix = _es_gateway(elasticsearch_url, tmp_path / "data", **settings)
    live.start()
    try:
        assert stow(live, [part10(ds) for ds in cohort(patients=2, series_per_study=2,
                                                        instances_per_series=3)]).status_code == 200  # fmt: skip
        before = _studies(live)
        old = _concrete(elasticsearch_url, prefix)
        killer = LiveServer(live.data_dir, extra_env={**live.extra_env,
                                                      "GATEWAY_FAILPOINT": "reindex_after_first_batch"})  # fmt: skip
        killed = killer.cli("reindex", "--quiet")
        assert killed.returncode == 137, killed.stderr
        status = live.cli("reindex", "--status")
        assert status.returncode == 0, status.stderr
        assert " running " in status.stdout and "indexed 4 " in status.stdout, status.stdout
        assert "runner alive" in status.stdout  # its lease has not run out yet
        made = _concrete(elasticsearch_url, prefix) - old
        assert len(made) == 3  # the new indices of the first attempt

        time.sleep(2.5)  # the dead runner's lease runs out
        resumed = live.cli("reindex", "--quiet")
        assert resumed.returncode == 0, resumed.stderr
        assert "resumed reindex job" in resumed.stdout and "(attempt 2)" in resumed.stdout
        assert "indexed 12," in resumed.stdout  # 4 before the kill + the 8 after, none twice
        assert _studies(live) == before
        assert _concrete(elasticsearch_url, prefix) == made  # same new indices; old ones gone
        final = live.cli("reindex", "--status").stdout
        assert " complete " in final and "attempts 2" in final, final
    finally:
        live.stop()
        httpx.delete(f"{elasticsearch_url}/{prefix}-*", timeout=120)


def test_a_reindex_queued_through_the_admin_api_runs_on_a_serving_gateway_and_reports_progress(
    elasticsearch_url: str, tmp_path: Path
) -> None:
    live, prefix = _es_gateway(elasticsearch_url, tmp_path / "data",
                               GATEWAY_REINDEX__POLL_SECONDS="0.2", GATEWAY_REINDEX__BATCH_SIZE="3")  # fmt: skip
    live.start()
    try:
        assert stow(live, [part10(ds) for ds in cohort(instances_per_series=5)]).status_code == 200
        before = _studies(live)
        # the operation takes no body: one is refused and queues nothing
        refused = httpx.post(f"{live.url}/admin/reindex", content=b'{"keepOld": true}')
        assert refused.status_code == 400 and "no body" in refused.text, refused.text
        assert httpx.get(f"{live.url}/admin/reindex").json()["jobs"] == []
        queued = httpx.post(f"{live.url}/admin/reindex")
        assert queued.status_code == 202, queued.text
        job = queued.json()
        assert (
            job["state"] == "queued" and queued.headers["location"] == f"/admin/reindex/{job['id']}"
        )
        again = httpx.post(f"{live.url}/admin/reindex")
        assert again.status_code == 409, again.text  # one unfinished job at a time
        state = job
        deadline = time.monotonic() + 120
        while state["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            state = httpx.get(f"{live.url}/admin/reindex/{job['id']}").json()
        assert state["state"] == "complete" and state["indexed"] == 5, state
        assert state["phase"] == "done" and state["attempts"] == 1
        assert _studies(live) == before
        listed = httpx.get(f"{live.url}/admin/reindex").json()["jobs"]
        assert [j["id"] for j in listed] == [job["id"]]
        metrics = httpx.get(f"{live.url}/metrics").text
        assert 'gateway_jobs{job="reindex",state="complete"} 1.0' in metrics
        assert httpx.get(f"{live.url}/admin/reindex/nope").status_code == 404
    finally:
        live.stop()
        httpx.delete(f"{elasticsearch_url}/{prefix}-*", timeout=120)


def test_a_reindex_killed_mid_way_is_taken_over_by_a_serving_gateway_once_its_lease_ran_out(
    elasticsearch_url: str, tmp_path: Path
) -> None:
    settings = {"GATEWAY_REINDEX__BATCH_SIZE": "4", "GATEWAY_REINDEX__LEASE_SECONDS": "2",
                "GATEWAY_REINDEX__POLL_SECONDS": "0.3"}  # fmt: skip
    live, prefix = _es_gateway(elasticsearch_url, tmp_path / "data", **settings)
    live.start()
    try:
        assert stow(live, [part10(ds) for ds in cohort(patients=2, series_per_study=2,
                                                        instances_per_series=3)]).status_code == 200  # fmt: skip
        before = _studies(live)
        killer = LiveServer(live.data_dir, extra_env={**live.extra_env,
                                                      "GATEWAY_FAILPOINT": "reindex_after_first_batch"})  # fmt: skip
        assert killer.cli("reindex", "--quiet").returncode == 137
        jobs = httpx.get(f"{live.url}/admin/reindex").json()["jobs"]
        assert len(jobs) == 1 and jobs[0]["startedBy"] == "cli"
        state = jobs[0]
        deadline = time.monotonic() + 120
        while state["state"] != "complete" and time.monotonic() < deadline:
            time.sleep(0.3)
            state = httpx.get(f"{live.url}/admin/reindex/{state['id']}").json()
        assert state["state"] == "complete" and state["attempts"] == 2, state
        assert state["indexed"] == 12, state  # 4 by the killed command, 8 by the gateway
        assert _studies(live) == before
    finally:
        live.stop()
        httpx.delete(f"{elasticsearch_url}/{prefix}-*", timeout=120)

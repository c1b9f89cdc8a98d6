"""A live gateway on a real S3 server (SeaweedFS): STOW, WADO, frames by range, readiness,
``check``, and kill -9 during STOW."""

from __future__ import annotations

import argparse
import hashlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from bench.kill_soak import soak
from server.core.blobkeys import parse_blob_key
from server.storage.s3 import S3BlobStore
from tests.helpers import cohort, part10, stow
from tests.live import LiveServer
from tests.s3_server import S3Endpoint
from tests.storage.conftest import RAW, instance_url, raw

FRAMES = 48
SIDE = 256  # 16-bit: 128 KiB a frame, 6 MiB an instance: above the 5 MiB upload part


def multiframe() -> pydicom.Dataset:
    (ds,) = cohort(instances_per_series=1, rows=SIDE, columns=SIDE)
    rng = np.random.default_rng(7)
    ds.NumberOfFrames = FRAMES
    ds.PixelData = rng.integers(0, 4000, size=(FRAMES, SIDE, SIDE), dtype=np.uint16).tobytes()
    return pydicom.dcmread(io.BytesIO(part10(ds)))


def frame(ds: pydicom.Dataset, number: int) -> bytes:
    size = SIDE * SIDE * 2
    return bytes(ds.PixelData[(number - 1) * size : number * size])


def bucket_objects(endpoint: S3Endpoint, bucket: str) -> dict[str, bytes]:
    client = endpoint.client()
    out: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            out[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return out


def s3_gateway(endpoint: S3Endpoint, data_dir: Path, bucket: str, **env: str) -> LiveServer:
    extra = {**endpoint.env(bucket), "GATEWAY_S3__PART_SIZE_MB": "5", **env}
    return LiveServer(data_dir, extra_env=extra)


@pytest.fixture(scope="module")
def on_s3(
    s3_endpoint: S3Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str]]:
    bucket = s3_endpoint.new_bucket()
    live = s3_gateway(s3_endpoint, tmp_path_factory.mktemp("s3gw") / "data", bucket).start()
    yield live, bucket
    live.stop()


def test_stow_on_s3_is_served_back_identical_and_frames_are_read_by_range(
    on_s3: tuple[LiveServer, str], s3_endpoint: S3Endpoint
) -> None:
    live, bucket = on_s3
    big = multiframe()
    small = cohort(instances_per_series=2)
    answer = stow(live, [part10(big)] + [part10(ds) for ds in small])
    assert answer.status_code == 200, answer.text[:500]

    objects = {
        k: v for k, v in bucket_objects(s3_endpoint, bucket).items() if k.startswith("blobs/")
    }
    assert len(objects) == 3
    for name, data in objects.items():  # content-addressed: every object matches its key
        key = parse_blob_key(name.removeprefix("blobs/"))
        assert key is not None and hashlib.sha256(data).hexdigest().startswith(key.content_hash)
    assert part10(big) in objects.values()
    assert not any(p.is_file() for p in (live.data_dir / "blobs").rglob("*"))  # nothing local

    for ds in [big, *small]:
        assert raw(live, ds) == part10(ds)

    client = DICOMwebClient(live.dicomweb)
    uids = (big.StudyInstanceUID, big.SeriesInstanceUID, big.SOPInstanceUID)
    wanted = [1, 17, FRAMES]
    assert client.retrieve_instance_frames(*uids, frame_numbers=wanted) == [
        frame(big, n) for n in wanted
    ]
    cache = live.data_dir / "s3-cache"
    assert not any(cache.iterdir()), "frames were read by downloading the whole object"

    rendered = httpx.get(instance_url(live, big) + "/frames/2/rendered",
                         headers={"Accept": "image/png"}, timeout=60)  # fmt: skip
    assert rendered.status_code == 200 and rendered.content.startswith(b"\x89PNG")

    ready = httpx.get(f"{live.url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    done = live.cli("check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "consistent" in done.stdout, done.stdout


def test_deleting_a_study_on_s3_removes_its_objects(
    on_s3: tuple[LiveServer, str], s3_endpoint: S3Endpoint
) -> None:
    live, bucket = on_s3
    datasets = cohort(instances_per_series=2)
    assert stow(live, [part10(ds) for ds in datasets]).status_code == 200
    before = set(bucket_objects(s3_endpoint, bucket))
    study = datasets[0].StudyInstanceUID
    gone = httpx.delete(f"{live.dicomweb}/studies/{study}", timeout=60)
    assert gone.status_code in (200, 202, 204), gone.text[:300]
    after = set(bucket_objects(s3_endpoint, bucket))
    assert len(before - after) == 2 and not after - before
    assert httpx.get(instance_url(live, datasets[0]), headers={"Accept": RAW}).status_code == 404


def test_a_missing_bucket_makes_readyz_name_the_store(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    bucket = f"absent-{uuid.uuid4().hex[:12]}"
    live = s3_gateway(s3_endpoint, tmp_path / "data", bucket).start()
    try:
        ready = httpx.get(f"{live.url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["failing"] == ["store"], ready.text
    finally:
        live.stop()
    assert f"bucket {bucket} not found" in live.log_path.read_text()


def test_refused_credentials_fail_readyz_and_stow_acknowledges_nothing(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    bucket = s3_endpoint.new_bucket()
    wrong = f"wrong-{uuid.uuid4().hex}"
    live = s3_gateway(s3_endpoint, tmp_path / "data", bucket,
                      GATEWAY_S3__SECRET_ACCESS_KEY=wrong).start()  # fmt: skip
    try:
        ready = httpx.get(f"{live.url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["failing"] == ["store"], ready.text
        (ds,) = cohort(instances_per_series=1)
        answer = stow(live, [part10(ds)])
        assert answer.status_code == 409, answer.text[:300]
        failed = answer.json()["00081198"]["Value"][0]
        assert failed["00081197"]["Value"] == [0xA700]  # out of resources: storage write failed
        assert raw(live, ds) is None
        listed = httpx.get(f"{live.dicomweb}/instances", timeout=30)
        assert listed.status_code in (200, 204) and not (listed.content and listed.json())
    finally:
        live.stop()
    assert bucket_objects(s3_endpoint, bucket) == {}
    log = live.log_path.read_text()
    assert "access to bucket" in log and wrong not in log


def test_kill_9_during_stow_on_s3_loses_no_acknowledged_instance_and_shows_no_partial_object(
    s3_endpoint: S3Endpoint,
    index_backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = s3_endpoint.new_bucket()
    es_url = request.getfixturevalue("elasticsearch_url") if index_backend != "sqlite" else ""
    store = S3BlobStore(s3_endpoint.config(bucket, abandoned_after=0), tmp_path / "cache")

    def count_blobs() -> tuple[int, int]:
        quarantined = [
            k for k in bucket_objects(s3_endpoint, bucket) if k.startswith("quarantine/")
        ]
        return len(list(store.keys())), len([k for k in quarantined if not k.endswith(".reason")])

    extra: dict[str, Any] = {**s3_endpoint.env(bucket), "GATEWAY_S3__PART_SIZE_MB": "5"}
    args = argparse.Namespace(
        kills=2, clients=3, workers=2, max_uptime=4.0, seed=11, index_backend=index_backend,
        es_url=es_url, data_dir=tmp_path, extra_env=extra, big_share=0.4, count_blobs=count_blobs,
    )  # fmt: skip
    verdict = soak(args)
    out = capsys.readouterr().out
    print(out)
    assert verdict == 0, out
    assert "lost or altered: 0" in out and "listed but not retrievable: 0" in out

    objects = bucket_objects(s3_endpoint, bucket)
    for name, data in objects.items():  # no partial object is visible
        if name.startswith("blobs/"):
            key = parse_blob_key(name.removeprefix("blobs/"))
            assert key is not None and hashlib.sha256(data).hexdigest().startswith(
                key.content_hash
            ), f"{name} does not hold the content its key names"
    # uploads cut by the kills are invisible; clean-up aborts them and touches no object
    left = store.incomplete_uploads()
    print(f"multipart uploads cut by kill -9: {len(left)}")
    store.clean_spool()
    assert store.incomplete_uploads() == []
    assert set(bucket_objects(s3_endpoint, bucket)) == set(objects)


def test_an_upload_cut_by_a_dead_process_is_invisible_and_aborted_only_once_abandoned(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    """What kill -9 in the middle of a multipart upload leaves: parts but no object."""
    bucket = s3_endpoint.new_bucket()
    client = s3_endpoint.client()
    key = "a" * 64 + ".0123456789abcdef.00112233aabb.ds.dcm"
    upload = client.create_multipart_upload(Bucket=bucket, Key=f"blobs/{key}")["UploadId"]
    client.upload_part(Bucket=bucket, Key=f"blobs/{key}", UploadId=upload, PartNumber=1,
                       Body=b"x" * (5 * 1024 * 1024))  # fmt: skip
    # ...and the process died here.
    live_replica = S3BlobStore(s3_endpoint.config(bucket), tmp_path / "a")
    assert not live_replica.exists(key) and list(live_replica.keys()) == []
    assert live_replica.clean_spool(older_than_seconds=0) == 0  # young: may be a live upload
    assert live_replica.incomplete_uploads() == [f"blobs/{key}"]
    later = S3BlobStore(s3_endpoint.config(bucket, abandoned_after=0), tmp_path / "b")
    assert later.clean_spool() == 1
    assert later.incomplete_uploads() == [] and list(later.keys()) == []

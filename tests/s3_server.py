"""A real S3 server for the tests: SeaweedFS (tests/s3/setup.sh builds it, start.sh starts it).

``S3_URL`` (with ``S3_ACCESS_KEY`` / ``S3_SECRET_KEY``) points the tests at a running
S3-compatible server instead. Without either, tests that need S3 are skipped on a developer
machine and fail in CI (CI=true).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent


class S3Unavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self) -> Any:
        from server.storage.s3 import make_client

        return make_client(self.config("unused"))

    def config(self, bucket: str, **more: Any) -> Any:
        from server.storage.s3 import S3Config

        return S3Config(
            bucket=bucket, endpoint_url=self.url, region=self.region,
            access_key_id=self.access_key, secret_access_key=self.secret_key, **more,
        )  # fmt: skip

    def new_bucket(self) -> str:
        """A fresh, empty bucket (retried while the servers behind the gateway settle)."""
        name = f"t-{uuid.uuid4().hex[:16]}"
        client = self.client()
        deadline = time.monotonic() + 90
        while True:
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=name)
                client.put_object(Bucket=name, Key="probe", Body=b"x")
                client.delete_object(Bucket=name, Key="probe")
                return name
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def env(self, bucket: str) -> dict[str, str]:
        """The gateway settings that use ``bucket`` on this server."""
        return {
            "GATEWAY_STORAGE": "s3",
            "GATEWAY_S3__ENDPOINT_URL": self.url,
            "GATEWAY_S3__BUCKET": bucket,
            "GATEWAY_S3__REGION": self.region,
            "GATEWAY_S3__ACCESS_KEY_ID": self.access_key,
            "GATEWAY_S3__SECRET_ACCESS_KEY": self.secret_key,
        }


def must_run() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def ensure_s3(workdir: Path) -> tuple[S3Endpoint, Callable[[], None]]:
    """S3_URL if set, else a SeaweedFS started in ``workdir`` on free ports."""
    if os.environ.get("S3_URL"):
        endpoint = S3Endpoint(
            os.environ["S3_URL"],
            os.environ.get("S3_ACCESS_KEY", "gateway-test"),
            os.environ.get("S3_SECRET_KEY", "gateway-test-secret"),
        )
        return endpoint, lambda: None
    ports = " ".join(str(free_port()) for _ in range(8))
    access, secret = "gateway-test", f"secret-{uuid.uuid4().hex}"
    env = {**os.environ, "S3_ACCESS_KEY": access, "S3_SECRET_KEY": secret}
    done = subprocess.run(
        ["bash", str(ROOT / "tests/s3/start.sh"), "--data", str(workdir), "--ports", ports],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise S3Unavailable(done.stderr[-2000:])
    url = done.stdout.strip().splitlines()[-1]
    pid = int((workdir / "weed.pid").read_text())

    def stop() -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(30):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    return S3Endpoint(url, access, secret), stop

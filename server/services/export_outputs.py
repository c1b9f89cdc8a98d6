"""Where finished bulk-export files live: one protocol, the data directory or the bucket.

A worker writes a job's NDJSON files into a local working folder (``folder``); when the
job is complete they are ``publish``-ed, before the job is marked complete:

- :class:`LocalExportOutputs` (filesystem blob store): the working folder *is* the output
  (``<data dir>/bulk/<job>/``), as before; several replicas must share that folder.
- :class:`BucketExportOutputs` (``GATEWAY_STORAGE=s3``): the files are uploaded under
  ``<prefix>exports/<job>/`` in the blob store's bucket and the working folder removed,
  so any replica serves the download from the bucket; no shared volume is needed.

Files go with their job (cancel, expiry), from the folder or the bucket alike.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from server.errors import NotFound

CHUNK = 1024 * 1024
NDJSON = "application/fhir+ndjson"


class ExportOutputs(Protocol):
    def folder(self, job_id: str) -> Path:
        """An empty local folder to write the job's files into."""

    def publish(self, job_id: str, names: list[str]) -> None:
        """Make the written files downloadable from any replica (before the job completes)."""

    def remove(self, job_id: str) -> None:
        """The job's files, wherever they are (and its working folder), gone."""

    def job_ids(self) -> set[str]:
        """Jobs that have files (to remove those of jobs that are gone)."""

    def open(self, job_id: str, name: str) -> Path | Iterator[bytes]:
        """A published file: a local path, or its bytes streamed from the bucket."""


class LocalExportOutputs:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, job_id: str) -> Path:
        folder = self.root / job_id
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def publish(self, job_id: str, names: list[str]) -> None:
        """Nothing to do: the files are where they are served from."""

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    def job_ids(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.name for p in self.root.iterdir() if p.is_dir()}

    def open(self, job_id: str, name: str) -> Path | Iterator[bytes]:
        path = self.root / job_id / name
        if not path.is_file():
            raise NotFound("no such export file")
        return path


class BucketExportOutputs:
    """Export files as objects ``<prefix><job>/<name>`` (``prefix``: ``<s3 prefix>exports/``)."""

    def __init__(self, client: Any, bucket: str, prefix: str, work: Path) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.work = work  # per-replica working folders (local disk)

    def folder(self, job_id: str) -> Path:
        return LocalExportOutputs(self.work).folder(job_id)

    def publish(self, job_id: str, names: list[str]) -> None:
        for name in names:
            self.client.upload_file(
                str(self.work / job_id / name), self.bucket, f"{self.prefix}{job_id}/{name}",
                ExtraArgs={"ContentType": NDJSON},
            )  # fmt: skip
        shutil.rmtree(self.work / job_id, ignore_errors=True)

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.work / job_id, ignore_errors=True)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}{job_id}/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    def job_ids(self) -> set[str]:
        found = LocalExportOutputs(self.work).job_ids()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                found.add(common["Prefix"][len(self.prefix) :].rstrip("/"))
        return found

    def open(self, job_id: str, name: str) -> Path | Iterator[bytes]:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}{job_id}/{name}")
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound("no such export file") from exc
            raise
        return _stream(answer["Body"])


def _stream(body: Any) -> Iterator[bytes]:
    with contextlib.closing(body):
        yield from body.iter_chunks(CHUNK)

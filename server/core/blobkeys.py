"""Blob key names: which instance, which content, which write, which dataset.

``<sha256(SOP Instance UID)>.<sha256(content)[:16]>.<write id>.<dataset or _>.dcm``

* Every write gets a key of its own (the write id is random), so a blob has exactly
  one writer: a refused or failed write removes only the blob it made itself, never
  one that an index row of another request points to.
* The content hash lets ``check`` verify a blob without the index.
* The dataset (a FHIR id, which never contains ``_``) makes membership durable beside
  the bytes: re-indexing from the blobs alone puts every instance back in its dataset.

Keys written before this scheme (``<uid hash>.<content hash>.dcm``) stay valid; they
carry no dataset.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

_NO_DATASET = "_"
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class BlobName:
    uid_hash: str
    content_hash: str  # the first 16 hex digits of the content's SHA-256
    dataset: str | None
    legacy: bool  # written before keys carried a write id and a dataset

    def matches(self, sop_uid: str, sha256: str) -> bool:
        """True if the blob's bytes (``sha256``) and SOP Instance UID are the ones named."""
        return self.uid_hash == uid_hash(sop_uid) and sha256.startswith(self.content_hash)


def uid_hash(sop_uid: str) -> str:
    return hashlib.sha256(sop_uid.encode()).hexdigest()


def new_blob_key(sop_uid: str, sha256: str, dataset: str | None) -> str:
    """A key no other write will ever use."""
    if dataset is not None and not _FHIR_ID.match(dataset):
        raise ValueError(f"dataset id {dataset!r} is not a FHIR id")
    return f"{uid_hash(sop_uid)}.{sha256[:16]}.{secrets.token_hex(6)}.{dataset or _NO_DATASET}.dcm"


def parse_blob_key(key: str) -> BlobName | None:
    """The parts of a key, or None if ``key`` is not a blob name at all."""
    if not key.endswith(".dcm"):
        return None
    parts = key[: -len(".dcm")].split(".", 3)
    if len(parts) < 2 or len(parts[0]) != 64 or len(parts[1]) != 16:
        return None
    if not (_HEX.match(parts[0]) and _HEX.match(parts[1])):
        return None
    if len(parts) == 2:
        return BlobName(parts[0], parts[1], None, legacy=True)
    if len(parts) != 4 or not _HEX.match(parts[2]):
        return None
    dataset = None if parts[3] == _NO_DATASET else parts[3]
    if dataset is not None and not _FHIR_ID.match(dataset):
        return None
    return BlobName(parts[0], parts[1], dataset, legacy=False)

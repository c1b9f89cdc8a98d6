"""STOW answers do not tell a store client which UIDs exist in datasets it cannot see.

Model: UIDs are global (one instance per SOP Instance UID, one dataset per study), and
every refusal caused by UIDs already in use gives one answer: the same status, Failure
Reason, Error Comment and body shape, whether the UIDs are held by the client's own
dataset (other content, another study) or by a dataset it cannot see. The client learns
that the UIDs are taken, never where, nor that a dataset it cannot see exists.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.live import LiveServer
from tests.security.conftest import (
    AS_SENT,
    add_client,
    auth_env,
    cli_ok,
    make_study,
    stow_into,
    token,
)

A, B = "oracle-a", "oracle-b"
UID_TAGS = ("00081150", "00081155")


def _renamed(ds: pydicom.Dataset, **uids: str) -> pydicom.Dataset:
    out = copy.deepcopy(ds)
    out.SOPInstanceUID = uids.get("sop", generate_uid())
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if keyword in uids:
            setattr(out, keyword, uids[keyword])
    return out


def _other_content(ds: pydicom.Dataset) -> pydicom.Dataset:
    out = copy.deepcopy(ds)
    out.PatientName = "Someone^Else"
    return out


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    live = LiveServer(Path(tmp_path_factory.mktemp("oracle")) / "data", extra_env=auth_env())
    for dataset in (A, B):
        cli_ok(
            live,
            "dataset",
            "create",
            dataset,
            "--title",
            dataset,
            "--cancer-type",
            "lung",
            *AS_SENT,
        )
    pusher_a = add_client(live, "pusher-a", "--store", A)
    pusher_b = add_client(live, "pusher-b", "--store", B)
    live.start()
    try:
        _, own = make_study(A, instances_per_series=1)
        _, foreign = make_study(B, instances_per_series=1)
        push_a, push_b = token(live, pusher_a), token(live, pusher_b)
        assert stow_into(live, A, push_a, own).status_code == 200
        assert stow_into(live, B, push_b, foreign).status_code == 200
        yield {"live": live, "token": push_a, "own": own[0], "foreign": foreign[0]}
    finally:
        live.stop()


def _attempts(own: pydicom.Dataset, foreign: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    new_study = generate_uid()
    return {
        "own: same SOP UID, other content": _other_content(own),
        "own: series of another study": _renamed(own, StudyInstanceUID=new_study),
        "foreign: exact bytes": foreign,
        "foreign: same SOP UID, other content": _other_content(foreign),
        "foreign: new instance in its study": _renamed(foreign),
        "foreign: its series under a new study": _renamed(foreign, StudyInstanceUID=new_study),
    }


def _normalised(answer: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """Everything but the instance's own UIDs (which the client sent) and the date."""
    body = answer.json()
    for item in body.get("00081198", {}).get("Value", []):
        for tag in UID_TAGS:
            item.pop(tag, None)
    headers = {
        k: v
        for k, v in answer.headers.items()
        if k not in ("date", "content-length", "x-request-id")
    }
    return answer.status_code, headers, body


def test_every_uid_refusal_gives_one_answer(stored: dict[str, Any]) -> None:
    live: LiveServer = stored["live"]
    answers = {
        name: _normalised(stow_into(live, A, stored["token"], [ds]))
        for name, ds in _attempts(stored["own"], stored["foreign"]).items()
    }
    first = answers["own: same SOP UID, other content"]
    status, _, body = first
    assert status == 409
    (item,) = body["00081198"]["Value"]
    assert item["00081197"]["Value"] == [0xA900]
    for text in item["00001902"]["Value"]:
        assert A not in text and B not in text and "dataset" not in text
    different = {name: answer for name, answer in answers.items() if answer != first}
    assert not different, (first, different)
    assert B.encode() not in b"".join(str(a).encode() for a in answers.values())

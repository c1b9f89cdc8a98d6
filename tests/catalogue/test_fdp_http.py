"""The FAIR Data Point over HTTP: content negotiation, absence of what is not listed, caching
headers, hostile paths, and administrator changes through the CLI and FHIR while serving."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
from rdflib import Graph, URIRef

from tests.catalogue.conftest import DCAT, EXT, HIDDEN, Node
from tests.live import LiveServer

PATHS = ("", "/catalog/imaging", "/dataset/breast-p", "/distribution/breast-p/dicomweb")


def test_content_negotiation(node: Node) -> None:
    cases = {
        None: "text/turtle", "*/*": "text/turtle", "text/*": "text/turtle", "text/plain": "text/turtle",
        "application/*": "application/ld+json", "text/turtle;q=0.2, application/rdf+xml": "application/rdf+xml",
        "application/json, application/ld+json;q=0.5": "application/ld+json", "text/n3": "text/n3",
        "text/html, application/rdf+xml;q=0.9": "application/rdf+xml",
    }  # fmt: skip
    for path in PATHS:
        for accept, expected in cases.items():
            headers = {"Accept": accept} if accept else {}
            answer = node.http.get(node.fdp(path), headers=headers)
            assert answer.status_code == 200, (path, accept, answer.text)
            assert answer.headers["content-type"].split(";")[0] == expected, (path, accept)
        for refused in ("application/json", "text/html", "image/png", "application/ld+json;q=0"):
            answer = node.http.get(node.fdp(path), headers={"Accept": refused})
            assert answer.status_code == 406, (path, refused)
            assert "text/turtle" in answer.json()["message"]


def test_non_public_and_unlisted_datasets_are_absent_like_unknown_ones(node: Node) -> None:
    """NON_PUBLIC, not active and unknown ids: the same 404, nothing in the catalogue."""

    def answer(path: str, dataset: str) -> tuple[int, bytes, str | None]:
        got = node.http.get(node.fdp(path.format(dataset)))
        return (
            got.status_code,
            got.content.replace(dataset.encode(), b"X"),
            got.headers.get("cache-control"),
        )

    for path in ("/dataset/{}", "/distribution/{}/dicomweb"):
        unknown = answer(path, "never-existed")
        assert unknown[0] == 404
        assert answer(path, HIDDEN) == unknown and answer(path, "draft-r") == unknown
    catalog = Graph().parse(data=node.http.get(node.fdp("/catalog/imaging")).text, format="turtle")
    listed = {str(o) for o in catalog.objects(None, DCAT.dataset)}
    assert listed == {node.fdp("/dataset/breast-p"), node.fdp("/dataset/lung-r")}
    # the data of a NON_PUBLIC dataset is not counted anywhere either
    assert HIDDEN not in node.http.get(node.fdp("/catalog/imaging")).text


def test_public_caching_headers_and_no_token_needed(node: Node) -> None:
    for path in (*PATHS, "/dataset/nope", "/catalog/other"):
        answer = node.http.get(node.fdp(path))
        assert answer.headers["cache-control"] == "public, max-age=0", path
        assert "Accept" in answer.headers["vary"] and "set-cookie" not in answer.headers
    # a token is not needed, and a broken one is not looked at (public metadata)
    assert node.http.get(node.fdp(), headers={"Authorization": "Bearer broken"}).status_code == 200


def test_hostile_paths_are_clean_4xx(node: Node) -> None:
    for path in ("/dataset/" + "a" * 5000, "/dataset/%00", "/dataset/..%2F..%2Fetc", "/dataset/a%20b",
                 "/dataset/%C3%A9", "/distribution/breast-p/other", "/catalog/imaging/x", "/dataset/",
                 "/dataset/breast-p%22%3E%3Cscript%3E"):  # fmt: skip
        answer = node.http.get(node.fdp(path))
        assert 400 <= answer.status_code < 500, (path[:60], answer.status_code)
    for method in ("POST", "PUT", "DELETE"):
        assert node.http.request(method, node.fdp("/dataset/breast-p")).status_code in (401, 405)


def test_administrator_changes_show_and_bad_values_change_nothing(node: Node) -> None:
    live = node.live
    before = live.cli("catalogue", "show", "breast-p").stdout
    bad = live.cli("catalogue", "set", "breast-p", "--publisher-email", "not-an-email")
    assert bad.returncode != 0 and "not an email" in bad.stderr
    bad = live.cli("catalogue", "set", "breast-p", "--access-url", "ftp://x")
    assert bad.returncode != 0 and "http(s)" in bad.stderr
    assert live.cli("catalogue", "set", HIDDEN + "-missing", "--version", "1").returncode != 0
    assert live.cli("catalogue", "show", "breast-p").stdout == before
    done = live.cli("catalogue", "set", "breast-p", "--version", "3.0.0", "--keyword", "breast", "--license",
                    "http://publications.europa.eu/resource/authority/licence/CC_BY_4_0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    ds = Graph().parse(data=node.http.get(node.fdp("/dataset/breast-p")).text, format="turtle")
    subject = URIRef(node.fdp("/dataset/breast-p"))
    assert {str(o) for o in ds.objects(subject, DCAT.version)} == {"3.0.0"}
    assert {str(o) for o in ds.objects(subject, DCAT.keyword)} == {"breast"}
    # FHIR: the same fields are ResearchStudy extensions, served and validated like the others
    fhir = httpx.get(f"{live.url}/fhir/ResearchStudy/breast-p").json()
    assert {"url": f"{EXT}/dataset-version", "valueString": "3.0.0"} in fhir["extension"]
    outcome = httpx.post(f"{live.url}/fhir/ResearchStudy/$validate", content=orjson.dumps(fhir),
                         headers={"Content-Type": "application/fhir+json"}).json()  # fmt: skip
    assert not [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")], outcome
    assert live.cli("catalogue", "show", HIDDEN).returncode != 0  # NON_PUBLIC: not listed


def test_records_are_cached_and_this_process_writes_invalidate(tmp_path: Path) -> None:
    """With a cache period, repeated requests reuse the record (bounded work) and say so in
    Cache-Control; a FHIR write through this server shows at once; a write by another process
    (the CLI) shows within the period."""
    live = LiveServer(tmp_path / "data", extra_env={"GATEWAY_CATALOGUE__CACHE_SECONDS": "15"})
    assert live.cli("dataset", "create", "c1", "--title", "First", "--cancer-type", "lung",
                    "--access-rights", "RESTRICTED").returncode == 0  # fmt: skip
    live.start()
    try:
        url = f"{live.url}/fdp/dataset/c1"
        first = httpx.get(url)
        assert first.headers["cache-control"] == "public, max-age=15"
        study = httpx.get(f"{live.url}/fhir/ResearchStudy/c1").json()
        study["title"] = "Second"
        put = httpx.put(f"{live.url}/fhir/ResearchStudy/c1", json=study,
                        headers={"Content-Type": "application/fhir+json"})  # fmt: skip
        assert put.status_code == 200, put.text
        assert '"Second"@en' in httpx.get(url).text  # invalidated by the write
        cached_at = time.monotonic()
        assert live.cli("catalogue", "set", "c1", "--version", "9.9.9").returncode == 0
        assert '"9.9.9"' not in httpx.get(url).text  # another process: cached record reused
        time.sleep(max(0.0, cached_at + 15.5 - time.monotonic()))
        assert '"9.9.9"' in httpx.get(url).text
    finally:
        live.stop()

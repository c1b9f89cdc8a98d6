"""A researcher's session in the gateway's own viewer, in headless Chromium.

A real OpenID provider (oidc-provider from npm) is started; the gateway (production settings,
no public reads) is its relying party and serves OHIF at ``/viewer``. The researcher signs in
at the provider's login form, sees in the study list the restricted study their agreement
allows (and not the one of a dataset they have no agreement for), opens it and sees pixels,
opens a study of an in-situ-processing agreement (metadata, and a notice instead of pixels),
stays past the access token's lifetime (30 s; the viewer renews it with the refresh token),
and, once the agreement is revoked, no longer sees the study.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from e2e_harness import CACHE_DIR, OHIF_DIST, BrowserTools
from e2e_sample_ct import DEFAULT_STUDIES, StudySpec, build_study

from tests.live import LiveServer
from tests.oidc_provider import OpenIdProvider, gateway_signing_in_at_a_provider
from tests.security.conftest import AS_SENT, add_client, cli_ok, stow_into, token

pytestmark = pytest.mark.e2e

ALLOWED, FORBIDDEN, IN_SITU = "viewer-allowed", "viewer-forbidden", "viewer-in-situ"
CHARLIE = StudySpec("PHANTOM^CHARLIE", "E2E-0003", "E2E CT PELVIS CHARLIE", "AXIAL 3MM", "20240320", 4, 64)  # fmt: skip
SPECS = {ALLOWED: DEFAULT_STUDIES[0], FORBIDDEN: DEFAULT_STUDIES[1], IN_SITU: CHARLIE}
TOKEN_LIFETIME = 30
USER = "alice"


@dataclass
class World:
    gateway: LiveServer
    provider: OpenIdProvider
    allowed_uid: str
    forbidden_uid: str
    in_situ_uid: str


@pytest.fixture(scope="module")
def world(browser_tools: BrowserTools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("viewer-login")
    with gateway_signing_in_at_a_provider(
        root, GATEWAY_AUTH__TOKEN_LIFETIME=str(TOKEN_LIFETIME), GATEWAY_VIEWER__DIST=str(OHIF_DIST)
    ) as (gateway, provider):
        for dataset in SPECS:
            cli_ok(gateway, "dataset", "create", dataset, "--title", dataset, "--cancer-type", "lung", *AS_SENT)  # fmt: skip
        pusher = add_client(gateway, "pacs", *[x for d in SPECS for x in ("--store", d)])
        for name, dataset, condition in (("daa-alice", ALLOWED, "download"),
                                         ("daa-alice-in-situ", IN_SITU, "in-situ-processing")):  # fmt: skip
            cli_ok(gateway, "daa", "create", name, "--dataset", dataset, "--condition", condition,
                   "--issuer", provider.issuer, "--subject", USER)  # fmt: skip
        gateway.start()
        push = token(gateway, pusher)
        uids = []
        for dataset, spec in SPECS.items():
            instances = build_study(spec)
            answer = stow_into(gateway, dataset, push, instances)
            assert answer.status_code == 200, answer.text
            uids.append(str(instances[0].StudyInstanceUID))
        yield World(gateway, provider, *uids)


def test_the_viewer_is_served_same_origin_with_a_sign_in_at_the_gateway(world: World) -> None:
    url = world.gateway.url
    page = httpx.get(f"{url}/viewer/", timeout=30)
    assert page.status_code == 200
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    assert 'src="/viewer/app-config.js"' in page.text and 'PUBLIC_URL="/viewer/"' in page.text
    config = httpx.get(f"{url}/viewer/app-config.js", timeout=30).text
    body = json.loads(config.split("window.config = ", 1)[1].split(";\n", 1)[0])
    assert body["routerBasename"] == "/viewer"
    assert body["dataSources"][0]["configuration"]["qidoRoot"] == f"{url}/dicom-web"
    oidc = body["oidc"][0]
    assert oidc["authority"] == url and oidc["response_type"] == "code"
    assert oidc["metadata"]["authorization_endpoint"] == f"{url}/oauth/authorize"
    assert httpx.get(f"{url}/viewer/../oauth/jwks", timeout=30).status_code in (200, 404)
    assert httpx.get(f"{url}/viewer/%2e%2e/pyproject.toml", timeout=30).status_code == 404


def test_a_signed_in_researcher_views_a_restricted_study_past_the_token_lifetime_until_revoked(
    browser_tools: BrowserTools, world: World
) -> None:
    alpha, bravo = DEFAULT_STUDIES[0], DEFAULT_STUDIES[1]
    out_dir = CACHE_DIR / "viewer-login"
    out_dir.mkdir(parents=True, exist_ok=True)
    signal = out_dir / "revoked"
    signal.unlink(missing_ok=True)
    spec = {
        "viewerUrl": f"{world.gateway.url}/viewer",
        "username": USER,
        "expectTexts": [alpha.study_description],
        "openText": alpha.study_description,
        "studyInstanceUID": world.allowed_uid,
        "inSituText": CHARLIE.study_description,
        "holdSeconds": TOKEN_LIFETIME + 15,
        "revokeSignal": str(signal),
        "outDir": str(out_dir),
        "chromium": browser_tools.chromium,
        "timeoutMs": 90000,
    }
    script = Path(__file__).with_name("login_browser.mjs")
    proc = subprocess.Popen([browser_tools.node, str(script), json.dumps(spec)], cwd=script.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    result: dict = {}
    try:
        for line in proc.stdout:
            message = json.loads(line) if line.startswith("{") else {}
            if message.get("waiting"):
                cli_ok(world.gateway, "daa", "revoke", "daa-alice")
                signal.write_text("revoked")
            elif "steps" in message:
                result = message
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read() if proc.stderr else ""
    print(stderr[-4000:])
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    assert result.get("ok"), f"browser run failed: {result.get('error')}\n{stderr[-2000:]}"

    # signed in at the provider; the study list shows the allowed study, not the other one
    assert result["studyList"]["found"], result["studyList"]["text"]
    assert bravo.study_description not in result["studyList"]["text"]
    # the study opened and shows pixels
    assert world.allowed_uid in result["viewer"]["url"]
    stats = result["viewer"]["stats"]
    assert stats["std"] > 8 and stats["nonDarkFraction"] > 0.02, stats
    # the in-situ study opens with its metadata, and the viewer says why there are no pixels
    in_situ = result["inSitu"]
    assert world.in_situ_uid in in_situ["url"], in_situ
    assert in_situ["notice"] and "in-situ processing" in in_situ["notice"], in_situ
    metadata = [r for r in result["dicomweb"]
                if world.in_situ_uid in r["path"] and r["path"].endswith("/metadata")]  # fmt: skip
    assert metadata and all(r["status"] == 200 for r in metadata), metadata
    # every DICOMweb request carried the bearer token
    assert result["dicomweb"] and all(r["bearer"] for r in result["dicomweb"]), result["dicomweb"][
        :5
    ]
    # the session outlived the access token: a refresh grant succeeded, and later requests worked
    grants = [(r["grant"], r["status"]) for r in result["tokenRequests"]]
    assert ("authorization_code", 200) in grants, grants
    assert ("refresh_token", 200) in grants, grants
    assert result["afterRefresh"]["found"], "the study list failed after the token lifetime"
    assert world.allowed_uid in result["afterRefresh"]["session"]["uids"], result["afterRefresh"]
    late = [r for r in result["dicomweb"] if r["atMs"] > result["afterRefresh"]["atMs"] - 20000]
    assert late and all(r["status"] in (200, 204) for r in late if "/studies" in r["path"]), late
    # revoking the agreement ends the session's access to the study at once, and a reloaded
    # viewer (given a new session by the gateway) does not list it either
    revoked = result["afterRevocation"]
    assert revoked["session"]["status"] in (200, 204), revoked
    assert world.allowed_uid not in revoked["session"]["uids"], revoked
    # within the agreement cache time (2 s by default) plus the browser's polling and load
    assert revoked["session"]["goneAfterMs"] < 8000, revoked
    assert revoked["gone"], revoked
    # the reload kept the sign-in: a new code at once from the gateway's own browser session,
    # no page of the OpenID provider after the first sign-in
    assert revoked["newSignIn"], revoked
    back_at = next(s["atMs"] for s in result["steps"] if s["name"] == "back in the viewer")
    assert result["elsewhere"] and all(p["atMs"] < back_at for p in result["elsewhere"]), result[
        "elsewhere"
    ]

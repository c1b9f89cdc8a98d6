"""Settings from the environment as an operator writes them: plain comma-separated lists,
URLs that are checked, and a bad value named in one line by the real command (no traceback).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.settings import Settings, unknown_variables


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        ("GATEWAY_TRUSTED_PROXIES", "10.0.0.1, 10.0.0.0/8", lambda s: s.trusted_proxies),
        ("GATEWAY_TRUSTED_PROXIES", '["10.0.0.1", "10.0.0.0/8"]', lambda s: s.trusted_proxies),
        ("GATEWAY_CORS__ALLOW_ORIGINS", "https://a.example,https://b.example",
         lambda s: s.cors.allow_origins),
        ("GATEWAY_ELASTICSEARCH__HOSTS", "http://a:9200,http://b:9200",
         lambda s: s.elasticsearch.hosts),
        ("GATEWAY_METRICS__ALLOW", "10.0.0.1,10.0.0.0/8", lambda s: s.metrics.allow),
    ],
)  # fmt: skip
def test_lists_accept_json_or_a_plain_comma_separated_form(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, read: object
) -> None:
    got = read(_settings(monkeypatch, **{name: value}))  # type: ignore[operator]
    expected = [v.strip() for v in value.strip("[]").replace('"', "").split(",")]
    assert got == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PUBLIC_BASE_URL", "localhost:8080"),
        ("GATEWAY_PUBLIC_BASE_URL", "ftp://imaging.example.org"),
        ("GATEWAY_PUBLIC_BASE_URL", "https://imaging.example.org/?x=1"),
        ("GATEWAY_AUTH__ISSUER", "imaging.example.org"),
        ("GATEWAY_LOG_LEVEL", "verbose"),
        ("GATEWAY_LOG_FORMAT", "xml"),
        ("GATEWAY_AUTH__EXTERNAL_ISSUERS", "not json"),
        ("GATEWAY_TRUSTED_PROXIES", "10.0.0.1,not-an-address"),
    ],
)
def test_a_bad_value_is_one_clear_line_naming_the_setting(
    tmp_path: Path, name: str, value: str
) -> None:
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(tmp_path), name: value}
    done = subprocess.run(
        [sys.executable, "-m", "server.cli.main", "check"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    setting = name.removeprefix("GATEWAY_").lower().split("__")[-1]
    assert setting in done.stderr, done.stderr


def test_good_urls_are_kept_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _settings(
        monkeypatch,
        GATEWAY_PUBLIC_BASE_URL="https://imaging.example.org/node",
        GATEWAY_AUTH__ISSUER="https://login.example.org/realms/eucaim",
    )
    assert s.public_base_url == "https://imaging.example.org/node"
    assert s.auth.issuer == "https://login.example.org/realms/eucaim"


def test_unknown_variables_are_named_known_ones_are_not() -> None:
    env = {
        "GATEWAY_STOW__MAX_PARTS": "5",
        "GATEWAY_STOW__MAX_PART": "5",
        "GATEWAY_AUTH__ENABLED": "true",
        "GATEWAY_AUTH__ENABLEDD": "true",
        "GATEWAY_PORT__X": "1",
        "GATEWAY_CONFORMANCE_DIR": "/x",
        "GATEWAY_METRICS__ALLOW": "10.0.0.1",
        "OTHER": "1",
    }
    assert unknown_variables(env) == [
        "GATEWAY_AUTH__ENABLEDD",
        "GATEWAY_PORT__X",
        "GATEWAY_STOW__MAX_PART",
    ]


def test_route_templates_hide_every_path_value_even_multi_segment_ones() -> None:
    from server.api.access_log import route_template

    uid, sop = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.12"
    scope = {
        "route": object(),
        "path": f"/dicom-web/studies/{uid}/series/{uid}9/instances/{sop}/bulkdata/00420011/0/x",
        "path_params": {"study": uid, "series": uid + "9", "sop": sop, "path": "00420011/0/x"},
    }
    assert route_template(scope) == (
        "/dicom-web/studies/{study}/series/{series}/instances/{sop}/bulkdata/{path}"
    )
    assert route_template({"path": f"/dicom-web/{uid}"}) == "(unmatched)"


def test_metrics_are_closed_to_anonymous_networks_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_METRICS__ALLOW", raising=False)
    assert Settings().metrics.allow == []  # a reverse proxy on loopback must not open it

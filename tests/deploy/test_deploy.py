"""The deployment files say what the gateway reads: every ``GATEWAY_*`` variable that the
compose files, the example env files and the Helm chart (rendered by a real helm binary)
set names a setting; the example env file names every setting and reads the same in each
of its readers (systemd, docker, a shell), as written and with every example uncommented;
the chart lints, renders the production shape, and refuses the shapes that would lose
data or split state."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.settings import Settings, unknown_variables
from tests.test_readme import settings_variables

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "imaging-gateway"
# a helm built with `go install` has no cluster version stamped in (it would say 1.20)
KUBE = ["--kube-version", "1.31.0"]
# the least a production release needs (the chart refuses to render without them)
REQUIRED = [*KUBE, "--set", "gateway.publicBaseUrl=https://imaging.example.org",
            "--set", "signingKey.existingSecret=signing-key"]  # fmt: skip


# Elasticsearch + PostgreSQL + S3 + three replicas, every secret referenced
PRODUCTION_SHAPE = [
    "--set", "replicaCount=3", "--set", "database.existingSecret=gateway-db",
    "--set", "storage=s3", "--set", "s3.bucket=imaging", "--set", "s3.endpointUrl=https://s3.example.org",
    "--set", "s3.credentials.existingSecret=gateway-s3", "--set", "s3.ca.existingSecret=s3-ca",
    "--set", "elasticsearch.apiKey.existingSecret=es-key",
]  # fmt: skip


def _env_file_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        found = re.match(r"\s*#?\s*(GATEWAY_[A-Z0-9_]+)=", line)
        if found:
            names.add(found[1])
    return names


def _compose_names(path: Path) -> set[str]:
    doc = yaml.safe_load(path.read_text())
    names: set[str] = set()
    for service in doc["services"].values():
        env = service.get("environment") or {}
        keys = env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        names |= {k for k in keys if k.startswith("GATEWAY_")}
    text = path.read_text()  # ${GATEWAY_...} substitutions too
    names |= set(re.findall(r"\$\{(GATEWAY_[A-Z0-9_]+)", text))
    return names


@pytest.mark.parametrize(
    "path",
    sorted([*DEPLOY.glob("*.env.example"), *DEPLOY.glob("docker-compose*.yml")]),
    ids=lambda p: p.name,
)
def test_every_gateway_variable_in_the_deployment_files_names_a_setting(path: Path) -> None:
    names = _env_file_names(path) if path.name.endswith(".example") else _compose_names(path)
    assert names, f"{path.name} sets no GATEWAY_ variable: the parser is wrong"
    assert unknown_variables(dict.fromkeys(names, "x")) == []


EXAMPLE = DEPLOY / "gateway.env.example"
_ASSIGNMENT = re.compile(r"(#\s*)?(GATEWAY_[A-Z0-9_]+)=(.*)")


def _example() -> list[tuple[bool, str, str]]:
    """(active, name, value as written) of each assignment line, commented ones too."""
    found = [_ASSIGNMENT.fullmatch(line) for line in EXAMPLE.read_text().splitlines()]
    return [(not m[1], m[2], m[3]) for m in found if m]


def test_the_example_env_file_names_every_setting() -> None:
    named = {name for _, name, _ in _example()}
    assert sorted(set(settings_variables()) - named) == []


def test_each_line_of_the_example_env_file_means_the_same_to_systemd_docker_and_a_shell() -> None:
    """systemd's EnvironmentFile= and ``docker run --env-file`` keep a ``# ...`` after a
    value, and docker keeps quotes, as part of the value: only a plain value reads the same
    everywhere. The active lines are also read by a real shell and compared."""
    lines = _example()
    for _, name, value in lines:
        assert not re.search(r"\s#", value), f"{name}: a comment after the value is part of it"
        assert value == value.strip(), f"{name}: white space around the value"
        assert value[:1] not in ("'", '"'), f"{name}: docker keeps quotes as part of the value"
        assert not re.search(r"[$`\\]", value), f"{name}: a shell and compose expand $, ` and \\"
    active = {name: value for on, name, value in lines if on}
    shell = subprocess.run(
        ["env", "-i", "sh", "-c", f"set -a; . {shlex.quote(str(EXAMPLE))}; env"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    read = dict(line.split("=", 1) for line in shell.stdout.splitlines() if "=" in line)
    assert {name: read.get(name) for name in active} == active


@pytest.mark.parametrize("examples", [False, True], ids=["as-written", "every-example-uncommented"])
def test_the_example_env_file_is_a_valid_configuration(
    examples: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the literal readers (systemd, docker) give the gateway validates, and so does
    each commented example value once uncommented (all at once: some go together)."""
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    for active, name, value in _example():
        if active or examples:
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.environment.value == "production"
    if examples:
        assert settings.auth.oidc.issuer and settings.catalogue.publisher_name


@cache
def _helm() -> str:
    done = subprocess.run(["bash", str(ROOT / "tests/deploy/helm.sh")], capture_output=True,
                          text=True, timeout=3000)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def _helm_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_helm(), *args], capture_output=True, text=True, timeout=120)


def _render(*values: str) -> list[dict[str, Any]]:
    done = _helm_run("template", "gw", str(CHART), *REQUIRED, *values)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, [d["kind"] for d in docs]
    return found[0]


def _container_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every variable the gateway container gets: its env entries and its ConfigMap's."""
    pod = _kind(docs, "Deployment")["spec"]["template"]["spec"]
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    env: dict[str, Any] = {e["name"]: e.get("value", e.get("valueFrom")) for e in gateway.get("env", [])}  # fmt: skip
    for source in gateway.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_kind(docs, "ConfigMap")["data"])
    return env


def test_the_chart_lints_with_the_required_values() -> None:
    done = _helm_run("lint", "--strict", str(CHART), *REQUIRED)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "index=sqlite", "--set", "replicaCount=1"],
        ["--set", "replicaCount=3", "--set", "ingress.enabled=true"],
        PRODUCTION_SHAPE,
    ],
    ids=["default", "sqlite-one-replica", "three-replicas-ingress", "postgres-s3"],
)
def test_every_variable_the_chart_sets_names_a_setting(values: list[str]) -> None:
    env = _container_env(_render(*values))
    assert env, "the chart sets no variable: the renderer or this test is wrong"
    names = [n for n in env if n.startswith("GATEWAY_")]
    assert names and unknown_variables(dict.fromkeys(names, "x")) == []


def test_the_default_release_is_replicas_on_elasticsearch_probed_on_readyz_and_healthz() -> None:
    docs = _render()
    deployment = _kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    env = _container_env(docs)
    assert env["GATEWAY_INDEX"] == "elasticsearch"
    assert env["GATEWAY_PUBLIC_BASE_URL"] == "https://imaging.example.org"
    assert env["GATEWAY_ENVIRONMENT"] == "production"
    assert _kind(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_the_production_shape_takes_every_secret_from_a_secret_and_none_from_the_configmap() -> (
    None
):
    docs = _render(*PRODUCTION_SHAPE)
    config = _kind(docs, "ConfigMap")["data"]
    env = _container_env(docs)
    assert config["GATEWAY_STORAGE"] == "s3" and config["GATEWAY_S3__BUCKET"] == "imaging"
    assert config["GATEWAY_S3__CA_FILE"].startswith("/etc/imaging-gateway/s3-ca/")
    for name, secret in (("GATEWAY_DATABASE_URL", "gateway-db"),
                         ("GATEWAY_S3__ACCESS_KEY_ID", "gateway-s3"),
                         ("GATEWAY_S3__SECRET_ACCESS_KEY", "gateway-s3"),
                         ("GATEWAY_ELASTICSEARCH__API_KEY", "es-key")):  # fmt: skip
        assert name not in config, name
        assert env[name]["secretKeyRef"]["name"] == secret, name
    pod = _kind(docs, "Deployment")["spec"]["template"]["spec"]
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    assert config["GATEWAY_S3__CA_FILE"].startswith(mounts["s3-ca"])
    assert {v["name"] for v in pod["volumes"]} >= {"s3-ca", "data"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "index=sqlite"], "replicaCount to 1"),
        (["--set", "signingKey.existingSecret="], "ONE token signing key"),
        (["--set", "gateway.publicBaseUrl="], "publicBaseUrl is required"),
        (["--set", "persistence.enabled=false"], "persistence.enabled must be true"),
        (["--set", "index=mysql"], "index must be"),
        (["--set", "replicaCount=0"], "at least 1"),
        (["--set", "storage=s3"], "needs s3.bucket"),
        (["--set", "storage=nfs"], "storage must be"),
    ],
    ids=[
        "sqlite-with-replicas",
        "no-shared-key",
        "no-base-url",
        "no-volume",
        "bad-index",
        "no-pods",
        "s3-without-bucket",
        "bad-storage",
    ],
)
def test_the_chart_refuses_shapes_that_split_state_or_lose_data(
    values: list[str], message: str
) -> None:
    done = _helm_run("template", "gw", str(CHART), *REQUIRED, *values)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr

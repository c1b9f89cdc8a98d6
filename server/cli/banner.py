"""What `serve` says when it starts: where everything is, whether authorisation is on, and
the next command to run when the server is empty."""

from __future__ import annotations

from server.settings import Environment, Settings


def banner(settings: Settings, workers: int, instances: int, dimse_port: int | None) -> list[str]:
    base = (settings.public_base_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    auth = (
        "ON (OAuth2 bearer tokens; scopes from data-access agreements)"
        if settings.auth.enabled
        else "OFF (development mode: every caller sees everything)"
    )
    lines = [
        f"cancer-imaging gateway ({settings.environment.value}) on {base}"
        f" ({workers} worker process{'' if workers == 1 else 'es'}), data in {settings.data_dir}",
        f"  DICOMweb   {base}/dicom-web",
        f"  FHIR R4    {base}/fhir  (CapabilityStatement: {base}/fhir/metadata)",
        f"  OAuth2     {base}/oauth/token  ({base}/.well-known/oauth-authorization-server)",
        f"  catalogue  {base}/fdp",
        f"  API docs   {base}/docs",
        f"  health     {base}/healthz  readiness {base}/readyz  metrics {base}/metrics",
    ]
    if dimse_port is not None:
        lines.append(f"  DIMSE      {settings.dimse.ae_title}@{settings.host}:{dimse_port}")
    lines.append(f"  authorisation {auth}")
    if settings.environment is not Environment.production and settings.auth.enabled is False:
        lines.append("  (never expose a development-mode server beyond this machine)")
    if instances == 0:
        lines += [
            "The store is empty. Next:",
            "  imaging-gateway dataset create DATASET --title 'My cohort' --cancer-type lung",
            "  imaging-gateway import --dataset DATASET /path/to/dicom/folder",
            f"  (or STOW-RS to {base}/datasets/DATASET/dicom-web/studies, or `make run DEMO=1`)",
        ]
    return lines

"""``imaging-gateway pull``: copy studies from a DICOMweb server or a DIMSE peer into a dataset."""

from __future__ import annotations

import os
import re
import sys
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from server import tracing
from server.cli.config import load_settings

if TYPE_CHECKING:
    from server.app import Gateway
    from server.core.stow import PartOutcome
    from server.peers.base import Source
    from server.services.pull import PullSummary
    from server.services.pull_jobs import Job
    from server.settings import Settings

_DIMSE_URL = re.compile(
    r"^dicom://(?P<ae>[^@/\\]{1,16})@(?P<host>[^:/]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})/?$"
)


def _secret(spec: str | None, option: str) -> str | None:
    """``env:NAME`` or ``file:PATH``; a literal value is refused (it would show in ``ps``)."""
    if spec is None:
        return None
    kind, _, ref = spec.partition(":")
    if kind == "env" and ref:
        value = os.environ.get(ref)
        if not value:
            raise click.UsageError(f"{option}: the environment variable {ref} is not set")
        return value.strip()
    if kind == "file" and ref:
        try:
            return Path(ref).read_text().strip()
        except OSError as exc:
            raise click.UsageError(f"{option}: cannot read {ref}: {exc.strerror}") from exc
    raise click.UsageError(f"{option} takes env:NAME or file:PATH (never the secret itself)")


def _date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise click.UsageError(f"{option}: a date as YYYY-MM-DD, not {value!r}")


def _source(url: str, settings: Settings, opts: dict[str, Any]) -> Source:
    from server.peers.base import Pacer

    pacer = Pacer(opts["rate"])
    if (m := _DIMSE_URL.match(url)) is not None:
        from server.peers.dimse import DimseSource

        move_port = opts["move_port"] or settings.dimse.port
        if opts["move"] and move_port is None:
            raise click.UsageError("--move: give --move-port (or set GATEWAY_DIMSE__PORT)")
        tls, move_tls = _dimse_tls(settings, opts)
        return DimseSource(
            m["ae"], m["host"].strip("[]"), int(m["port"]), calling_ae=opts["calling_ae"] or settings.dimse.ae_title,
            move=opts["move"], move_port=move_port, timeout=opts["timeout"], pacer=pacer,
            tls=tls, move_tls=move_tls,
        )  # fmt: skip
    if opts["tls"]:
        raise click.UsageError("--tls is for dicom:// sources (https:// is TLS already)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.UsageError(
            "--from: an http(s):// DICOMweb service root or dicom://AET@host:port"
        )
    if parts.username or parts.password:
        raise click.UsageError("--from: no credentials in the URL; use --basic or --token")
    import httpx

    from server.peers.dicomweb import DicomwebSource

    token, basic = _secret(opts["token"], "--token"), _secret(opts["basic"], "--basic")
    if token and basic:
        raise click.UsageError("--token and --basic: give one")
    auth = None
    if basic is not None:
        user, sep, password = basic.partition(":")
        if not sep:
            raise click.UsageError("--basic: the secret must be USER:PASSWORD")
        auth = httpx.BasicAuth(user, password)
    verify: Any = str(opts["ca_file"]) if opts["ca_file"] else True
    return DicomwebSource(url, auth=auth, token=token, verify=verify, timeout=opts["timeout"],
                          retries=opts["retries"], concurrency=opts["concurrency"], pacer=pacer)  # fmt: skip


def _dimse_tls(settings: Settings, opts: dict[str, Any]) -> tuple[Any, Any]:
    """DICOM TLS contexts (PS3.15 B.9, TLS 1.2+): to the peer, and for --move's receiver.

    The peer's certificate is verified against --ca-file (default: the system's CAs) and
    its host name; the gateway's DICOM certificate and key (GATEWAY_DIMSE__TLS_CERT_FILE,
    __TLS_KEY_FILE), when set, are presented to the peer, and --move's receiver uses them
    (with GATEWAY_DIMSE__TLS_CA_FILE, the peer's C-STOREs need a certificate of that CA).
    """
    if not opts["tls"]:
        return None, None
    import ssl

    from server.dimse.service import tls_context

    dimse = settings.dimse
    client = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(opts["ca_file"]) if opts["ca_file"] else None
    )
    client.minimum_version = ssl.TLSVersion.TLSv1_2
    if dimse.tls_cert_file is not None and dimse.tls_key_file is not None:
        client.load_cert_chain(str(dimse.tls_cert_file), str(dimse.tls_key_file))
    server = tls_context(dimse) if opts["move"] else None
    if opts["move"] and server is None:
        raise click.UsageError(
            "--move --tls: the peer sends over TLS too; set GATEWAY_DIMSE__TLS_CERT_FILE"
            " and GATEWAY_DIMSE__TLS_KEY_FILE"
        )
    return client, server


class _Bar:
    """tqdm on a terminal; nothing when stderr is not one (or --quiet)."""

    def __init__(self, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0, unit="instance", desc="pull", disable=not enabled)

    def found(self, total: int) -> None:
        self.bar.total = total
        self.bar.refresh()

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _audit(gateway: Gateway) -> Any:
    from server.cli.admin_audit import cli_audit
    from server.core.stow import deidentified

    def audit(job: Job, outcomes: list[PartOutcome], not_received: int) -> None:
        stored = sum(o.stored for o in outcomes)
        total = len(outcomes) + not_received
        status = 200 if stored == total else (202 if stored else 409)
        studies = tuple(dict.fromkeys(f"study:{o.study_uid}" for o in outcomes if o.stored))
        cli_audit(gateway, "pull", status, action="store", datasets=(job.dataset,),
                  entities=studies, deidentified=deidentified(outcomes))  # fmt: skip

    return audit


def _print(summary: PullSummary) -> None:
    mib = summary.bytes / (1 << 20)
    click.echo(f"job {summary.job}: {summary.studies} stud{'y' if summary.studies == 1 else 'ies'}, "
               f"found {summary.found}, new {summary.new}, already present {summary.present}, "
               f"failed {summary.failed}; {mib:.1f} MiB in {summary.seconds:.1f} s "
               f"({summary.rate:.1f} instances/s)")  # fmt: skip
    for study, sop, reason in summary.failures[:50]:
        click.echo(f"  failed: study {study} instance {sop}: {reason}")
    if len(summary.failures) > 50:
        click.echo(f"  ... and {len(summary.failures) - 50} more")


@click.command()
@click.option("--dataset", default=None, help="ResearchStudy id to pull into (must exist).")
@click.option("--from", "url", default=None,
              help="DICOMweb service root (https://host/dicom-web) or dicom://AET@host:port.")  # fmt: skip
@click.option("--study", "studies", multiple=True, help="Study Instance UID; repeatable.")
@click.option("--patient", default=None, help="Patient ID: every study of that patient.")
@click.option("--since", default=None, help="Studies on or after this date (YYYY-MM-DD).")
@click.option("--until", default=None, help="Studies on or before this date (YYYY-MM-DD).")
@click.option(
    "--resume",
    "resume_job",
    default=None,
    help="Run job JOB again (its source, dataset, selection).",
)
@click.option("--token", default=None, help="Bearer token, as env:NAME or file:PATH.")
@click.option("--basic", default=None, help="HTTP Basic USER:PASSWORD, as env:NAME or file:PATH.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="PEM CA bundle to verify the server's certificate (DICOMweb, or DIMSE --tls).")  # fmt: skip
@click.option("--tls", is_flag=True,
              help="DIMSE: DICOM TLS to the peer (client certificate: GATEWAY_DIMSE__TLS_CERT_FILE).")  # fmt: skip
@click.option(
    "--rate", type=click.FloatRange(min=0.01), default=None, help="At most N instances per second."
)
@click.option("--concurrency", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Parallel WADO-RS requests (DICOMweb; DIMSE uses one association).")  # fmt: skip
@click.option("--retries", type=click.IntRange(0, 10), default=4, show_default=True,
              help="Retries of a request failing with 5xx/429/timeout (exponential backoff).")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True)
@click.option("--move", is_flag=True, help="DIMSE: C-MOVE to this gateway instead of C-GET.")
@click.option("--move-port", type=click.IntRange(1, 65535), default=None,
              help="DIMSE --move: port the peer sends to (default GATEWAY_DIMSE__PORT).")  # fmt: skip
@click.option(
    "--calling-ae", default=None, help="DIMSE: our AE title (default GATEWAY_DIMSE__AE_TITLE)."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def pull(dataset: str | None, url: str | None, studies: tuple[str, ...], patient: str | None,
         since: str | None, until: str | None, resume_job: str | None, quiet: bool,
         data_dir: Path | None, **opts: Any) -> None:  # fmt: skip
    """Pull studies from a DICOMweb server or a DIMSE peer into a dataset (resumable job).

    Select by --study (repeatable), --patient, and/or --since/--until. Run again with the
    same arguments (or --resume JOB) to continue a pull that was stopped: instances already
    stored are skipped. Exit status 1 when any instance failed.
    """
    from server.app import build_gateway
    from server.peers.base import Selection
    from server.services.pull import PullService, selection_json
    from server.services.pull_jobs import PullJobs

    settings = load_settings(data_dir)
    gateway = build_gateway(settings)
    jobs = PullJobs(settings.data_dir, settings.database())
    service = PullService(gateway.ingest, gateway.journal, jobs, audit=_audit(gateway))
    try:
        if resume_job is not None:
            job = service.jobs.get(resume_job)
            if job is None:
                raise click.UsageError(f"no pull job {resume_job} in this data directory")
            if dataset not in (None, job.dataset) or (url not in (None, job.source)):
                raise click.UsageError(f"job {job.id} pulls from {job.source} into {job.dataset}")
            url, dataset = job.source, job.dataset
            selection_data = job.selection
        else:
            if dataset is None or url is None:
                raise click.UsageError("--dataset and --from are required (or --resume JOB)")
            selection = Selection(
                tuple(studies), patient, _date(since, "--since"), _date(until, "--until")
            )
            if not (
                selection.studies or selection.patient_id is not None or selection.date_range()
            ):
                raise click.UsageError("select what to pull: --study, --patient or --since/--until")
            selection_data = selection_json(selection)
        if gateway.fhir_store.read("ResearchStudy", dataset)[0] is None:
            raise click.UsageError(
                f"dataset {dataset} is not known: create ResearchStudy/{dataset} first"
            )
        source = _source(url, settings, opts)
        job = service.jobs.open(source.name, dataset, selection_data,
                                {"move": opts["move"], "rate": opts["rate"]})  # fmt: skip
        click.echo(f"job {job.id}: {source.name} -> dataset {dataset}", err=True)
        bar = _Bar(enabled=not quiet and sys.stderr.isatty())
        try:
            with tracing.job("pull", settings.tracing.enabled):
                summary = service.run(job, source, bar)
        except Exception as exc:
            from server.errors import GatewayError

            if not isinstance(exc, GatewayError):
                raise
            raise click.ClickException(
                f"{exc.message} (job {job.id}; run again to resume)"
            ) from exc
        finally:
            bar.close()
            source.close()
    finally:
        service.close()
        gateway.close()
    _print(summary)
    if summary.failed:
        sys.exit(1)

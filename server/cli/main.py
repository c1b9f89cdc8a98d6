"""``imaging-gateway``: serve, import, check, reindex, backup, restore."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from server import tracing
from server.cli.audit import audit
from server.cli.backup import backup, restore
from server.cli.catalogue import catalogue
from server.cli.clients import clients
from server.cli.config import load_settings
from server.cli.daa import daa
from server.cli.datasets import dataset
from server.cli.federation import federation
from server.cli.pseudonymize import pseudonymize_csv
from server.cli.pull import pull
from server.cli.quarantine import instance, quarantine
from server.cli.reindex import reindex
from server.cli.studies import studies

if TYPE_CHECKING:
    from server.app import Gateway
    from server.dimse.processes import DimseProcesses
    from server.dimse.service import DimseService
    from server.services.check import CheckPlan
    from server.settings import Settings


def _logging(level: str, fmt: str = "plain") -> None:
    from server.logs import configure

    configure(level, fmt)


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        from server.database import DatabaseUnreachable

        try:
            return super().invoke(ctx)
        except DatabaseUnreachable as exc:  # a clear line, not a traceback
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Main)
@click.version_option(package_name="cancer-imaging-gateway")
def main() -> None:
    """Cancer-imaging interoperability gateway."""


@main.command()
@click.option("--host", default=None, help="Bind address (GATEWAY_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (GATEWAY_PORT, default 8080).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="GATEWAY_DATA_DIR (default ./var).",
)
@click.option(
    "--demo", is_flag=True, help="Load a small generated cohort first if the store is empty."
)
@click.option(
    "--workers",
    "workers_opt",
    type=int,
    default=None,
    help="Server processes (GATEWAY_WORKERS; 0 = one per CPU, at most 4).",
)
def serve(
    host: str | None, port: int | None, data_dir: Path | None, demo: bool, workers_opt: int | None
) -> None:
    """Serve DICOMweb on http://HOST:PORT/dicom-web."""
    import uvicorn

    from server.app import build_gateway, create_app
    from server.cli.loader import load_demo
    from server.serving import PROTOCOL

    settings = load_settings(data_dir)
    settings.host = host or settings.host
    settings.port = settings.port if port is None else port
    workers = settings.workers if workers_opt is None else workers_opt
    workers = workers or settings.effective_workers()
    _logging(settings.log_level, settings.log_format)
    log = logging.getLogger("gateway")
    if workers > 1:  # /metrics in any worker answers for all (before the first metric)
        from server.metrics import use_multiprocess

        use_multiprocess(settings.data_dir / "metrics")
    gateway = build_gateway(settings)
    try:
        gateway.store.clean_spool(older_than_seconds=3600)  # other replicas may be uploading
        gateway.recover()  # writes a killed server left in flight (no manual step)
        if demo:
            log.info("demo cohort: %d instance(s) stored", load_demo(gateway))
        instances = gateway.index.counts().get("instance", 0)
    finally:
        gateway.close()
    from server.cli.banner import banner
    from server.settings import unknown_variables

    for line in banner(settings, workers, instances, settings.dimse.port):
        log.info("%s", line)
    unknown = unknown_variables()
    if unknown:
        log.warning("ignored: no setting is named %s (see the README)", ", ".join(unknown))
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,  # the gateway's own access log (gateway.access) replaces it
        "log_config": None,  # uvicorn's loggers use the gateway's handler and format
        # Forwarding headers are read by the app, from GATEWAY_TRUSTED_PROXIES only: uvicorn's
        # own handling would believe any loopback peer (its forwarded_allow_ips default).
        "proxy_headers": False,
        "server_header": False,
    }
    if settings.zero_copy:  # httptools plus zero-copy file bodies (os.sendfile)
        options["http"] = PROTOCOL
    dimse = _start_dimse(settings, workers)
    try:
        if workers == 1:
            uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
        else:
            os.environ["GATEWAY_DATA_DIR"] = str(settings.data_dir)
            uvicorn.run("server.app:app_from_environment", factory=True, workers=workers, **options)  # type: ignore[arg-type]
    finally:
        if dimse is not None:
            dimse.close()


def _start_dimse(settings: Settings, workers: int) -> DimseService | DimseProcesses | None:
    """The DIMSE listener (GATEWAY_DIMSE__PORT), with its own components: in this process,
    or in GATEWAY_DIMSE__PROCESSES listener processes (default: one per HTTP worker)."""
    if settings.dimse.port is None:
        return None
    from server.app import build_gateway
    from server.dimse.processes import DimseProcesses
    from server.dimse.service import DimseService

    processes = settings.dimse.processes or workers
    try:
        if processes > 1:
            group = DimseProcesses(settings, processes)
            group.start()
            return group
        service = DimseService(build_gateway(settings))
        try:
            service.start()
        except OSError:
            service.gateway.close()
            raise
        return service
    except OSError as exc:
        raise click.ClickException(
            f"the DIMSE port {settings.dimse.port} cannot be opened: {exc}"
        ) from exc


@main.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--dataset", default=None, help="ResearchStudy id the studies belong to (must exist)."
)
@click.option(
    "--replace",
    is_flag=True,
    help="Corrections: an instance stored with other content under the same SOP Instance "
    "UID (in this dataset) is replaced; audited.",
)
def import_(
    paths: tuple[Path, ...], data_dir: Path | None, quiet: bool, dataset: str | None, replace: bool
) -> None:
    """Import DICOM files and folders (recursively) through the STOW ingest pipeline.

    DICOMDIR files and files that are not DICOM are skipped (counted, not failures);
    instances already stored are counted apart from new ones.
    """
    from server.app import build_gateway
    from server.cli.loader import import_paths

    settings = load_settings(data_dir)
    _logging("warning")
    gateway = build_gateway(settings)
    try:
        _check_import_dataset(gateway, dataset)
        with tracing.job("import", settings.tracing.enabled):
            summary = import_paths(
                gateway, list(paths), progress=not quiet, dataset=dataset, replace=replace
            )
    finally:
        gateway.close()
    click.echo(summary.line())
    for reason, count in summary.reasons.most_common():
        click.echo(f"  {count:6d} x {reason}")
    for path, message in summary.failures[:20]:
        click.echo(f"  failed: {path}: {message}")
    if summary.failed:
        sys.exit(1)


def _check_import_dataset(gateway: Gateway, dataset: str | None) -> None:
    """The dataset must exist; without one (and no default), refused when authorisation is on."""
    if dataset is None and gateway.settings.default_dataset is None:
        if gateway.ingest.needs_dataset:
            raise click.ClickException(
                "no dataset: pass --dataset ID (or set GATEWAY_DEFAULT_DATASET); studies in"
                " no dataset would be visible to nobody"
            )
        return
    target = dataset or gateway.settings.default_dataset
    if target is not None and gateway.fhir_store.read("ResearchStudy", target)[0] is None:
        raise click.ClickException(
            f"dataset {target} is not known: create ResearchStudy/{target} first"
        )


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--repair", is_flag=True, help="Apply the plan (default: only print it).")
@click.option("--force", is_flag=True, help="With --repair: allow removing many index rows.")
@click.option("--quick", is_flag=True, help="Do not hash blob contents (faster, finds less).")
def check(data_dir: Path | None, repair: bool, force: bool, quick: bool) -> None:
    """Verify index and blob store agree; print the repair plan; --repair applies it.

    Exit status: 0 consistent (or repaired), 1 the plan is not empty (nothing was
    changed), 2 --repair refused a mass removal (nothing was changed).
    """
    from server.app import build_gateway
    from server.services.check import MassRemovalRefused

    settings = load_settings(data_dir)
    _logging("warning")
    gateway = build_gateway(settings)
    try:
        if repair:
            plan, report = gateway.checker.repair(verify=not quick, force=force)
        else:
            plan, report = gateway.checker.plan(verify=not quick), None
    except MassRemovalRefused as exc:
        click.echo(f"refused: {exc}", err=True)
        sys.exit(2)
    finally:
        gateway.close()
    _print_plan(plan)
    if report is not None:
        click.echo(
            f"repaired: recovered {report.recovered} interrupted write(s), re-indexed "
            f"{len(report.reindexed)}, removed rows {len(report.removed_rows)}, quarantined "
            f"{len(report.quarantined)}, spools cleaned {report.spool_cleaned}"
        )
    elif not plan.consistent:
        click.echo("inconsistent: 'imaging-gateway check --repair' would apply the plan above")
        sys.exit(1)
    else:
        click.echo("consistent")


def _print_plan(plan: CheckPlan) -> None:
    click.echo(f"indexed instances: {plan.indexed}, blobs: {plan.blobs}, verified: {plan.verified}")
    click.echo(f"writes in flight or awaiting start-up recovery: {plan.in_flight}")
    click.echo(f"index rows without blob: {plan.rows_removed}")
    click.echo(
        f"blobs without index row: {sum(a.fix.name in ('QUARANTINE', 'REINDEX') for a in plan.actions)}"
    )
    for action in plan.actions:
        click.echo(f"  plan: {action}")


main.add_command(dataset)
main.add_command(catalogue)
main.add_command(daa)
main.add_command(audit)
main.add_command(clients)
main.add_command(backup)
main.add_command(restore)
main.add_command(pseudonymize_csv)
main.add_command(federation)
main.add_command(quarantine)
main.add_command(instance)
main.add_command(pull)
main.add_command(studies)
main.add_command(reindex)


if __name__ == "__main__":
    main()

"""``imaging-gateway reindex``: run, resume, queue or show the stored reindex jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from server import tracing
from server.cli.config import load_settings
from server.logs import configure


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--keep-old", is_flag=True, help="Keep the replaced indices (default: delete them).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--datasets-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Dataset of every blob: a backup's elasticsearch-datasets.jsonl or an index.sqlite.",
)
@click.option("--status", "show_status", is_flag=True,
              help="Show the latest reindex jobs (any replica's) and exit.")  # fmt: skip
@click.option("--queue", "queue_only", is_flag=True,
              help="Queue the job for the serving replicas' runners instead of running it here.")  # fmt: skip
def reindex(data_dir: Path | None, keep_old: bool, quiet: bool, datasets_from: Path | None,
            show_status: bool, queue_only: bool) -> None:  # fmt: skip
    """Rebuild the Elasticsearch index from the blob store and switch aliases atomically.

    The job is stored in the shared database: an unfinished one (its process was killed)
    is resumed where it stopped; one running elsewhere is refused."""
    from tqdm import tqdm

    from server.app import build_gateway
    from server.errors import GatewayError
    from server.services.restore import read_membership

    settings = load_settings(data_dir)
    configure("warning", settings.log_format)
    gateway = build_gateway(settings)
    try:
        runner = gateway.reindexer
        if show_status:
            _print_reindex_jobs(runner.jobs.latest())
            return
        if queue_only:
            job = runner.queue(keep_old=keep_old, started_by="cli")
            click.echo(f"queued reindex job {job.id}; a serving replica runs it "
                       "('imaging-gateway reindex --status')")  # fmt: skip
            return
        memberships = read_membership(datasets_from) if datasets_from else None
        bar = tqdm(unit="instance", disable=quiet, desc="reindex")
        try:
            with tracing.job("reindex", settings.tracing.enabled):
                job, resumed = runner.run_here(keep_old=keep_old, memberships=memberships,
                                               progress=bar.update)  # fmt: skip
        finally:
            bar.close()
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        gateway.close()
    report = job.report
    if resumed:
        click.echo(f"resumed reindex job {job.id} (attempt {job.attempts})")
    if job.message:
        raise click.ClickException(f"reindex job {job.id} {job.state.value}: {job.message}")
    click.echo(f"indexed {report.indexed}, caught up {report.caught_up}, skipped {report.skipped}")
    click.echo(f"now serving from: {', '.join(report.new_indices)}")


def _print_reindex_jobs(jobs: list[Any]) -> None:
    if not jobs:
        click.echo("no reindex jobs")
    for job in jobs:
        d = job.to_json()
        held = " (runner alive)" if d["running"] else ""
        click.echo(f"{d['id']}  {d['state']}{held}  phase {d['phase']}  indexed {d['indexed']}"
                   f"  skipped {d['skipped']}  attempts {d['attempts']}  started {d['created']}"
                   f" by {d['startedBy']}  updated {d['updated']}"
                   + (f"  message: {d['message']}" if d["message"] else ""))  # fmt: skip

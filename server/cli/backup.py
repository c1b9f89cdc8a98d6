"""``imaging-gateway backup DEST`` and ``restore SRC``: the CLI around server.services.backup/restore.

Exit codes: 0 done; 1 failed (nothing written at the destination / target);
2 (backup only) written, but damage in the live data was found on the way.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from server.cli.config import load_settings
from server.errors import GatewayError
from server.services.backup_manifest import BackupInvalid


class TqdmProgress:
    """One progress bar per phase (databases, blobs, verify, restore)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def phase(self, name: str, total: int | None) -> None:
        self.close()
        unit = "db" if name == "databases" else "B"
        self.bar = tqdm(total=total, desc=name, unit=unit, unit_scale=unit == "B",
                        disable=not self.enabled, leave=False)  # fmt: skip

    def advance(self, amount: int) -> None:
        if self.bar is not None:
            self.bar.update(amount)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _refuse_s3(storage: str, command: str) -> None:
    """backup/restore copy the blobs of the data directory; S3 blobs live in the bucket."""
    if storage == "s3":
        raise click.ClickException(
            f"'{command}' works on the data directory's blobs and GATEWAY_STORAGE=s3 keeps "
            "them in the bucket: nothing was written. Protect the bucket with the object "
            "store's own means (versioning, replication, a bucket copy) and the databases "
            "with theirs; 'check' and 'reindex' work on S3."
        )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"


@click.command()
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--link", is_flag=True,
              help="Hard-link blobs instead of copying them when DEST is on the same filesystem.")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar.")
def backup(dest: Path, data_dir: Path | None, link: bool, quiet: bool) -> None:
    """Copy every piece of state to DEST (a new or empty folder) while the gateway runs."""
    from server.services.backup import BackupService, MembershipSource, es_membership

    settings = load_settings(data_dir)
    _refuse_shared_database(settings, "backup")
    _refuse_s3(settings.storage, "backup")
    membership: MembershipSource | None = None
    index = None
    if settings.index == "elasticsearch":
        from server.app import elasticsearch_index

        index = elasticsearch_index(settings)
        membership = es_membership(index)
    progress = TqdmProgress(not quiet)
    service = BackupService(
        settings.data_dir, index_backend=settings.index, membership=membership, link=link,
        progress=progress, external_key=settings.auth.signing_key_file,
    )  # fmt: skip
    try:
        report = service.backup(dest)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc
    except OSError as exc:
        raise click.ClickException(f"backup failed, nothing written to {dest}: {exc}") from exc
    finally:
        progress.close()
        if index is not None:
            index.close()
    click.echo(f"backup written to {report.dest}: {report.files} files, {_size(report.bytes)}")
    click.echo(f"  databases: {', '.join(report.databases) or 'none'}")
    click.echo(f"  instances: {report.instances} (index: {report.index_backend}); "
               f"blobs hard-linked: {report.blobs_linked}; snapshot rounds: {report.rounds}")  # fmt: skip
    if report.rows_dropped:
        click.echo(
            f"  {len(report.rows_dropped)} instance(s) deleted while the backup ran: left out"
        )
    if report.unreferenced_blobs:
        click.echo(f"  {report.unreferenced_blobs} blob(s) not in the index snapshot (uploads in "
                   "progress or orphans) left out")  # fmt: skip
    left = ", ".join(f"{n} {kind}" for kind, n in sorted(report.not_copied.items()))
    click.echo(f"  not copied (recreated or unfinished): {left or 'nothing'}")
    if report.external_key is not None:
        click.echo(f"  NOTE: the signing key {report.external_key} is outside the data "
                   "directory and is not in the backup: keep a copy of it yourself")  # fmt: skip
    for name in report.unclassified:
        click.echo(f"  WARNING: {name} is not a known kind of state; copied as is")
    if report.index_backend == "elasticsearch":
        click.echo("  the Elasticsearch index is not copied (derived data); the dataset of every "
                   "instance is, for 'restore --reindex'")  # fmt: skip
    for problem in report.problems:
        click.echo(f"  DAMAGE IN THE LIVE DATA: {problem}")
    if report.problems:
        sys.exit(2)


def _refuse_shared_database(settings, command: str) -> None:  # type: ignore[no-untyped-def]
    """backup/restore copy SQLite files; a shared PostgreSQL database is pg_dump's job."""
    if settings.database():
        raise click.ClickException(
            f"{command} copies the embedded SQLite databases, but GATEWAY_DATABASE_URL points "
            "at PostgreSQL: back it up with pg_dump / restore it with pg_restore (see README, "
            "Backups), and the blobs and data directory with your storage's own tools"
        )


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Target data directory (GATEWAY_DATA_DIR).")  # fmt: skip
@click.option("--force", is_flag=True,
              help="Restore even if the target is not empty (its content is kept aside).")  # fmt: skip
@click.option("--verify-only", is_flag=True, help="Check the backup and stop.")
@click.option("--reindex", "run_reindex", is_flag=True,
              help="Elasticsearch: rebuild the index from the restored blobs afterwards.")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar.")
def restore(source: Path, data_dir: Path | None, force: bool, verify_only: bool,
            run_reindex: bool, quiet: bool) -> None:  # fmt: skip
    """Restore the backup in SOURCE as the data directory (the gateway must be stopped)."""
    from server.services.restore import restore as run_restore
    from server.services.restore import verify_backup

    settings = load_settings(data_dir)
    if not verify_only:
        _refuse_shared_database(settings, "restore")
        _refuse_s3(settings.storage, "restore")
    progress = TqdmProgress(not quiet)
    try:
        if verify_only:
            manifest, entries = verify_backup(source, progress)
            click.echo(f"backup {source} is intact: {len(entries)} files, "
                       f"index {manifest.get('index_backend')}, made {manifest.get('created')}")  # fmt: skip
            return
        report = run_restore(source, settings.data_dir, force=force, progress=progress)
    except BackupInvalid as exc:
        raise click.ClickException(str(exc)) from exc
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc
    except OSError as exc:
        raise click.ClickException(f"restore failed: {exc}") from exc
    finally:
        progress.close()
    made = report.manifest.get("created")
    click.echo(f"restored {report.files} files ({_size(report.bytes)}) from the backup of {made} "
               f"into {report.target}")  # fmt: skip
    if report.set_aside is not None:
        click.echo(f"  the previous content is kept in {report.set_aside}: remove it when done")
    _after_restore(report, settings, run_reindex, quiet)


def _after_restore(report, settings, run_reindex: bool, quiet: bool) -> None:  # type: ignore[no-untyped-def]
    from server.services.restore import membership_of

    if settings.index != "elasticsearch":
        if report.index_backend == "elasticsearch":
            click.echo("  NOTE: the backup was made with the Elasticsearch index; serve it with "
                       "GATEWAY_INDEX=elasticsearch after 'imaging-gateway reindex "
                       f"--datasets-from {report.membership}'")  # fmt: skip
        return
    source = membership_of(report)
    if not run_reindex:
        click.echo("  the Elasticsearch index does not match the restored data yet: run "
                   f"'imaging-gateway reindex --datasets-from {source}' before serving")  # fmt: skip
        return
    from server.app import build_gateway
    from server.security.keys import patient_id_key
    from server.services.reindex import reindex
    from server.services.restore import read_membership

    memberships = read_membership(source)
    gateway = build_gateway(settings)
    bar = tqdm(unit="instance", disable=quiet, desc="reindex")
    try:
        done = reindex(
            gateway.index, gateway.store, progress=bar.update, memberships=memberships,
            patient_secret=patient_id_key(settings.data_dir, settings.database()),
        )  # fmt: skip
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        bar.close()
        gateway.close()
    click.echo(f"  reindexed {done.indexed} instance(s) into {', '.join(done.new_indices)}")

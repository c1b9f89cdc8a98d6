"""``imaging-gateway pseudonymize-csv``: hash a clinical CSV as EUCAIM's LETHE does.

A site's clinical data then links to the images the gateway stored into a dataset,
without running LETHE: column 1 (PatientID) and, in the studies-metadata file (named
``dcm_studies_metadata.csv``, as LETHE recognises it, or any file with ``--studies``),
column 2 (StudyInstanceUID) get the pseudonyms the dataset's images got
(:mod:`server.core.clinical_csv`: LETHE's for ``eucaim``, the engine's keyed ones for
``basic``; ``none`` is refused).

The first row is a header and is copied unchanged; the input's delimiter (comma,
semicolon, tab or bar: the one the header row uses most) is detected, quotes are
RFC 4180's, and the output is RFC 4180 (comma, CRLF, quotes only where needed). The
file is streamed row by row and written to ``OUT`` only when complete. Each run is
audited (the secret never is).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
from tqdm import tqdm

from server.cli.deid_admin import audit_admin
from server.core.clinical_csv import Mapper, RowError, row_mapper
from server.core.deid.policy import Profile
from server.errors import GatewayError

STUDIES_FILE = "dcm_studies_metadata.csv"
DELIMITERS = (",", ";", "\t", "|")


def _dialect(handle: IO[str]) -> type[csv.Dialect]:
    """RFC 4180 quoting with the delimiter the header row uses most (comma when none)."""
    header = handle.readline()
    handle.seek(0)
    counts = {d: header.count(d) for d in DELIMITERS}
    chosen = max(DELIMITERS, key=lambda d: counts[d]) if any(counts.values()) else ","

    class Found(csv.excel):
        delimiter = chosen

    return Found


def _lines(handle: IO[str], bar: Any) -> Iterator[str]:
    for line in handle:
        bar.update(len(line))
        yield line


def pseudonymize(source: Path, target: Path, mapper: Mapper, quiet: bool) -> int:
    """Stream ``source`` through ``mapper`` into ``target`` (atomically); rows written."""
    partial = target.with_name(f".{target.name}.partial")
    rows = 0
    try:
        with (
            source.open("r", encoding="utf-8-sig", newline="") as handle,
            partial.open("w", encoding="utf-8", newline="") as out,
            tqdm(total=source.stat().st_size, unit="B", unit_scale=True, disable=quiet,
                 desc="pseudonymize") as bar,
        ):  # fmt: skip
            reader = csv.reader(_lines(handle, bar), _dialect(handle))
            writer = csv.writer(out, csv.excel)  # RFC 4180: comma, CRLF, minimal quoting
            for number, row in enumerate(reader, start=1):
                try:
                    writer.writerow(row if number == 1 or not row else mapper(row))
                except RowError as exc:
                    raise click.ClickException(f"{source.name} row {number}: {exc}") from None
                rows += 1
        os.replace(partial, target)
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{source.name} is not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise click.ClickException(f"{source.name} is not a readable CSV file: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return rows


@click.command("pseudonymize-csv")
@click.option(
    "--dataset", "dataset_id", required=True, help="The dataset whose pseudonyms to reproduce."
)
@click.option(
    "--studies",
    is_flag=True,
    help=f"The file is a studies-metadata file (column 2 StudyInstanceUID); "
    f"automatic for files named {STUDIES_FILE}.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.argument(
    "source", metavar="IN", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.argument("target", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
def pseudonymize_csv(
    dataset_id: str, studies: bool, quiet: bool, data_dir: Path | None, source: Path, target: Path
) -> None:
    """Hash the PatientIDs (and study UIDs) of clinical CSV IN into OUT, as LETHE does."""
    from server.cli.datasets import _gateway

    if target.exists() and target.resolve() == source.resolve():
        raise click.ClickException("OUT must be another file than IN")
    gateway = _gateway(data_dir)
    studies = studies or source.name == STUDIES_FILE
    try:
        try:
            mapper = _mapper(gateway, dataset_id, studies)
            rows = pseudonymize(source, target, mapper, quiet)
        except GatewayError as exc:
            raise click.ClickException(exc.message) from exc
        except click.ClickException:  # refusals are audited too
            audit_admin(gateway, "pseudonymize-csv", dataset_id, 422)
            raise
        audit_admin(gateway, "pseudonymize-csv", dataset_id, 200)
    finally:
        gateway.close()
    kind = "studies-metadata" if studies else "clinical"
    click.echo(f"wrote {rows} rows ({kind}: header kept) to {target}")


def _mapper(gateway: Any, dataset_id: str, studies: bool) -> Mapper:
    if gateway.fhir_store.last_content("ResearchStudy", dataset_id) is None:
        raise click.ClickException(f"dataset {dataset_id} is not known")
    policy, secret = gateway.deid_policies.for_dataset(dataset_id)
    if policy.profile is Profile.none:
        raise click.ClickException(
            f"dataset {dataset_id} uses the none profile: its images keep the PatientIDs "
            "they arrived with, so there is nothing to pseudonymise"
        )
    return row_mapper(policy, str(secret), studies)

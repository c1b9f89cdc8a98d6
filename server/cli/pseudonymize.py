"""``imaging-gateway pseudonymize-csv``: hash a clinical CSV as EUCAIM's LETHE does.

A site's clinical data then links to the imaging the gateway stored into a dataset of
the ``eucaim`` profile, without running LETHE: with the dataset's secret,

* column 1 (PatientID) becomes ``EUCAIM-`` + the unsigned decimal MD5 of
  ``[secret]`` + the trimmed PatientID (RSNA CTP ``@hashptid``; an empty PatientID
  hashes as ``null``, as LETHE does);
* in the studies-metadata file (named ``dcm_studies_metadata.csv``, as LETHE
  recognises it, or any file with ``--studies``), column 2 (StudyInstanceUID) becomes
  CTP ``@hashuid(@UIDROOT, this, PatientID)`` under root ``1.3.6.1.4.1.58108.2023``
  with the pseudonymised PatientID appended: the StudyInstanceUID the gateway stored.

The first row is a header and is copied unchanged; the input's delimiter (comma,
semicolon, tab or bar: the one the header row uses most) is detected, quotes are
RFC 4180's, and the output is RFC 4180
(comma, CRLF, quotes only where needed). The file is streamed row by row and written
to ``OUT`` only when complete. Each run is audited (the secret never is).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import click
from tqdm import tqdm

from server.cli.deid_admin import audit_admin
from server.core.deid import ctp
from server.core.deid.policy import Profile
from server.errors import GatewayError

STUDIES_FILE = "dcm_studies_metadata.csv"
DELIMITERS = (",", ";", "\t", "|")

Mapper = Callable[[list[str]], list[str]]


def patient_mapper(secret: str) -> Mapper:
    def mapper(row: list[str]) -> list[str]:
        return [_patient(secret, row[0]), *row[1:]]

    return mapper


def studies_mapper(secret: str) -> Mapper:
    def mapper(row: list[str]) -> list[str]:
        if len(row) < 2:
            raise ValueError("a studies-metadata row needs PatientID and StudyInstanceUID")
        patient = _patient(secret, row[0])
        return [patient, ctp.hash_uid(ctp.EUCAIM_UID_ROOT, row[1], patient), *row[2:]]

    return mapper


def _patient(secret: str, patient_id: str) -> str:
    return ctp.hash_patient_id(secret, patient_id if patient_id else "null")


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
                except ValueError as exc:
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
    "--dataset", "dataset_id", required=True, help="The eucaim dataset whose secret hashes."
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
            secret = _eucaim_secret(gateway, dataset_id)
            mapper = studies_mapper(secret) if studies else patient_mapper(secret)
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


def _eucaim_secret(gateway: Any, dataset_id: str) -> str:
    if gateway.fhir_store.last_content("ResearchStudy", dataset_id) is None:
        raise click.ClickException(f"dataset {dataset_id} is not known")
    policy, secret = gateway.deid_policies.for_dataset(dataset_id)
    if policy.profile is not Profile.eucaim:
        raise click.ClickException(
            f"dataset {dataset_id} uses the {policy.profile.value} profile: pseudonymize-csv "
            "reproduces the pseudonyms of the eucaim profile (LETHE) only, so its output "
            f"would not link to the images of {dataset_id}"
        )
    return str(secret)

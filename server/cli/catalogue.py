"""``imaging-gateway catalogue``: the descriptive fields of datasets in the FAIR Data Point (/fdp)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import orjson

from server.errors import GatewayError

FORMATS = {"turtle": "turtle", "json-ld": "json-ld", "rdf-xml": "xml"}


def _gateway(data_dir: Path | None) -> Any:
    from server.app import build_gateway
    from server.settings import Settings

    if data_dir is not None:
        os.environ["GATEWAY_DATA_DIR"] = str(data_dir)
    return build_gateway(Settings())


@click.group()
def catalogue() -> None:
    """Describe datasets for the EUCAIM catalogue (FAIR Data Point at /fdp)."""


_LISTS = {"keyword": "keywords", "legislation": "legislation", "collection_method": "collection_methods",
          "health_category": "health_categories", "dataset_type": "types", "provenance": "provenance"}  # fmt: skip
_SINGLE = {"publisher": "publisher_name", "publisher_email": "publisher_email",
           "publisher_url": "publisher_url", "contact_name": "contact_name",
           "contact_email": "contact_email", "contact_url": "contact_url", "version": "version",
           "interoperability_level": "interoperability_level", "access_url": "access_url",
           "license": "license"}  # fmt: skip


@catalogue.command("set")
@click.argument("dataset_id")
@click.option("--publisher", help="Publisher name (dct:publisher / foaf:name).")
@click.option("--publisher-email", help="Publisher contact email (cv:email).")
@click.option("--publisher-url", help="Publisher contact page (cv:contactPage).")
@click.option("--contact-name", help="Dataset contact point name (vcard:fn).")
@click.option("--contact-email", help="Dataset contact point email (vcard:hasEmail).")
@click.option("--contact-url", help="Dataset contact point page (vcard:hasURL).")
@click.option("--keyword", multiple=True, help="dcat:keyword; repeatable.")
@click.option(
    "--legislation", multiple=True, help="dcatap:applicableLegislation ELI IRI; repeatable."
)
@click.option("--version", help="dcat:version (SemVer or CalVer).")
@click.option("--interoperability-level", help="eucaim:interoperabilityLevel, e.g. SPEC1000011.")
@click.option(
    "--collection-method", multiple=True, help="eucaim:collectionMethod, e.g. SPEC1000003."
)
@click.option("--health-category", multiple=True, help="healthdcatap:healthCategory code or IRI.")
@click.option("--dataset-type", multiple=True, help="dct:type: EUCAIM code, dpv:Term or IRI.")
@click.option("--access-url", help="Distribution dcat:accessURL (e.g. the EUCAIM Negotiator URL).")
@click.option("--license", help="Distribution dct:license IRI.")
@click.option("--provenance", multiple=True, help="dct:provenance statement (English); repeatable.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def set_(dataset_id: str, data_dir: Path | None, **options: Any) -> None:
    """Set catalogue fields of ResearchStudy/DATASET_ID; an empty value removes a field."""
    from server.core.dcat.edit import set_fields

    changes = {_SINGLE[k]: v for k, v in options.items() if k in _SINGLE and v is not None}
    changes |= {_LISTS[k]: list(v) for k, v in options.items() if k in _LISTS and v}
    if not changes:
        raise click.UsageError("nothing to set: give at least one field option")
    gateway = _gateway(data_dir)
    try:
        resource, _ = gateway.fhir_store.read("ResearchStudy", dataset_id)
        if resource is None:
            raise click.ClickException(f"no ResearchStudy/{dataset_id}")
        updated = set_fields(resource, changes)
        version = resource.get("meta", {}).get("versionId")
        result = gateway.fhir_write.update("ResearchStudy", dataset_id, orjson.dumps(updated),
                                           if_match=f'W/"{version}"' if version else None)  # fmt: skip
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        gateway.close()
    click.echo(
        f"updated ResearchStudy/{dataset_id} (version {result.resource['meta']['versionId']})"
    )


@catalogue.command("show")
@click.argument("dataset_id")
@click.option(
    "--format", "fmt", type=click.Choice(list(FORMATS)), default="turtle", show_default=True
)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def show(dataset_id: str, fmt: str, data_dir: Path | None) -> None:
    """Print the dataset's catalogue record as /fdp serves it (exit 1 if it is not listed)."""
    gateway = _gateway(data_dir)
    try:
        settings = gateway.settings
        base = (settings.public_base_url or f"http://{settings.host}:{settings.port}").rstrip("/")
        body = gateway.catalogue.render("dataset", dataset_id, base + "/fdp", FORMATS[fmt])
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        gateway.close()
    click.echo(body.decode())

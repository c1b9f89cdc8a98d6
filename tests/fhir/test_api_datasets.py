"""Datasets: the CLI creates them, STOW names them, FHIR reports their live catalogue figures."""

from __future__ import annotations

from pathlib import Path

import httpx
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.researchstudy import ResearchStudy

from tests.helpers import cohort, multipart_body, part10, seq, value
from tests.live import LiveServer

EXT = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition"


def _stow(live: LiveServer, dataset: str, datasets: list) -> httpx.Response:  # type: ignore[type-arg]
    return httpx.post(
        f"{live.url}/datasets/{dataset}/dicom-web/studies",
        content=multipart_body([part10(ds) for ds in datasets], "b"),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
    )


def _figures(resource: dict) -> dict[str, list]:  # type: ignore[type-arg]
    out: dict[str, list] = {}  # type: ignore[type-arg]
    for e in resource.get("extension", []):
        v = e.get("valueInteger", e.get("valueString", e.get("valueCoding", {}).get("code")))
        out.setdefault(e["url"].rsplit("/", 1)[1], []).append(v)
    return out


def test_datasets_from_the_cli_receive_studies_and_report_live_figures(
    live_server_factory: type[LiveServer], tmp_path: Path
) -> None:
    live = live_server_factory(tmp_path / "d")
    made = live.cli("dataset", "create", "lung-a", "--title", "Lung CT A", "--cancer-type", "lung",
                    "--access-condition", "download")  # fmt: skip
    assert made.returncode == 0 and "created ResearchStudy/lung-a" in made.stdout, made.stderr
    assert (
        live.cli(
            "dataset", "create", "other", "--title", "Other", "--cancer-type", "363358000"
        ).returncode
        == 0
    )
    bad = live.cli("dataset", "create", "x", "--title", "X", "--cancer-type", "nonsense")
    assert bad.returncode != 0 and "unknown cancer type" in bad.stderr
    live.start()

    studies = cohort(patients=2, series_per_study=2, instances_per_series=2)
    r = _stow(live, "lung-a", studies)
    assert r.status_code == 200, r.text
    assert _stow(live, "no-such-dataset", cohort()).status_code == 404
    moved = _stow(live, "other", studies[:1])  # same study, other dataset: refused
    assert moved.status_code == 409
    assert value(seq(moved.json(), "00081198")[0], "00081197") == 0xA900

    resource = httpx.get(f"{live.url}/fhir/ResearchStudy/lung-a").json()
    ResearchStudy.model_validate(resource)
    figures = _figures(resource)
    assert figures["dataset-number-of-studies"] == [2]
    assert figures["dataset-number-of-subjects"] == [2]
    assert sorted(figures["dataset-modality"]) == sorted({ds.Modality for ds in studies})
    assert resource["condition"][0]["coding"][0]["code"] == "363358000"

    in_dataset = httpx.get(
        f"{live.url}/fhir/ImagingStudy", params={"dataset": "ResearchStudy/lung-a"}
    ).json()
    assert {e["resource"]["id"] for e in in_dataset.get("entry", [])} == {
        ds.StudyInstanceUID for ds in studies
    }
    modality = studies[0].Modality
    found = Bundle.model_validate(
        httpx.get(f"{live.url}/fhir/ResearchStudy", params={"modality": modality}).json()
    )
    assert [e.resource.id for e in found.entry or []] == ["lung-a"]
    none = httpx.get(f"{live.url}/fhir/ResearchStudy", params={"modality": "XA"}).json()
    assert none["total"] == 0

    listed = live.cli("dataset", "list")
    assert "lung-a\tactive\t2 studies\t2 subjects" in listed.stdout


def test_import_into_a_dataset_and_demo_is_a_public_dataset(tmp_path: Path) -> None:
    from server.synthetic import write_cohort

    folder = tmp_path / "in"
    files = write_cohort(
        folder, patients=1, series_per_study=1, instances_per_series=2, rows=16, columns=16, seed=5
    )
    live = LiveServer(tmp_path / "data", demo=True)
    refused = live.cli("import", "--dataset", "missing", str(folder))
    assert refused.returncode != 0 and "not known" in refused.stderr
    live.start()
    try:
        demo = httpx.get(f"{live.url}/fhir/ResearchStudy/demo").json()
        assert _figures(demo)["dataset-access-rights"] == ["PUBLIC"] or any(
            e.get("valueCode") == "PUBLIC" for e in demo["extension"]
        )
        assert _figures(demo)["dataset-number-of-studies"] == [6]
    finally:
        live.stop()
    done = live.cli("import", "--quiet", "--dataset", "demo", str(folder))
    assert done.returncode == 0 and f"stored {len(files)}" in done.stdout

"""Elasticsearch mappings and index names, generated from the attribute table.

One index per level (studies, series, instances); every level carries the matching
columns of the levels above it (denormalised), so a relational QIDO query
(``/instances?PatientID=...``) is one search on one index, and the dataset of every
document is there for the access-control narrowing. Why not a join field: joins need
parent and child on one shard and make every query a has_child query; copying a
few study fields into each series and instance document is cheaper at this size.
"""

from __future__ import annotations

from typing import Any

from server.core.attributes import MATCHING, Level

LEVEL_INDEX = {Level.STUDY: "studies", Level.SERIES: "series", Level.INSTANCE: "instances"}
_ABOVE = {Level.STUDY: (Level.STUDY,), Level.SERIES: (Level.STUDY, Level.SERIES),
          Level.INSTANCE: (Level.STUDY, Level.SERIES, Level.INSTANCE)}  # fmt: skip
_STORED = {"type": "binary"}  # base64 in _source, neither indexed nor aggregated
# Study-document facts of the EUCAIM federated search (server/index/federation_es.py): age and
# year at the study, the patient's first-study age and year (and which study that is), and
# each distinct (modality, body part, manufacturer) of its series as a nested object, so
# "some series is MR and PROSTATE" is one nested query on the study.
FEDERATION_FIELDS: dict[str, Any] = {
    "fed_age": {"type": "long"}, "fed_year": {"type": "long"},
    "fed_first_age": {"type": "long"}, "fed_first_year": {"type": "long"},
    "fed_first_study": {"type": "keyword"},
    "series_facts": {"type": "keyword", "index": False, "doc_values": False},
    "fed_series": {"type": "nested", "properties": {
        "modality": {"type": "keyword"}, "bodypart": {"type": "keyword"},
        "manufacturer": {"type": "keyword"}}},
}  # fmt: skip


def columns(level: Level) -> list[str]:
    """Matching fields held by documents of ``level`` (its own and those above)."""
    out: list[str] = []
    for spec in MATCHING.values():
        if spec.level in _ABOVE[level]:
            out.append(spec.column)
            if spec.vr == "PN":
                out.append(spec.column + "_tokens")
    return out


def _field(column: str) -> dict[str, Any]:
    for spec in MATCHING.values():
        if spec.column == column and spec.vr in ("IS", "US"):
            return {"type": "long"}
    return {"type": "keyword"}  # UIDs, codes, DA/TM as comparable text, lower-cased names


def mapping(level: Level) -> dict[str, Any]:
    props: dict[str, Any] = {c: _field(c) for c in columns(level)}
    props.update({
        "study_uid": {"type": "keyword"}, "dataset": {"type": "keyword"},
        "patient_key": {"type": "keyword"}, "started_lo": {"type": "keyword"},
        "started_hi": {"type": "keyword"}, "seq": {"type": "long"}, "updated": {"type": "double"},
        "json": _STORED,
    })  # fmt: skip
    if level is Level.STUDY:  # series/instance facts the study-level searches match on
        props["modalities"] = {"type": "keyword"}
        props["bodyparts"] = {"type": "keyword"}
        props["sop_classes"] = {"type": "keyword"}
        props.update(FEDERATION_FIELDS)
    if level in (Level.SERIES, Level.INSTANCE):
        props["series_uid"] = {"type": "keyword"}
        props["series_json"] = _STORED
    if level is Level.INSTANCE:
        props.update({
            "sop_uid": {"type": "keyword"}, "blob_key": {"type": "keyword"},
            "sha256": {"type": "keyword"}, "size": {"type": "long"},
            "transfer_syntax": {"type": "keyword"}, "sop_class_uid": {"type": "keyword"},
            "metadata": _STORED, "pixel_index": _STORED, "deid": _STORED,
        })  # fmt: skip
    return {"dynamic": "strict", "properties": props}


# Fields added after indices were first created: ``put_mapping`` adds them on open
# (adding a field to a strict mapping is allowed; documents without it stay valid).
ADDED_FIELDS: dict[Level, dict[str, Any]] = {Level.INSTANCE: {"deid": _STORED}}


def settings(shards: int, replicas: int) -> dict[str, Any]:
    # QIDO pages with limit/offset (PS3.18 8.3.4.4): allow deep offsets instead of failing.
    return {"number_of_shards": shards, "number_of_replicas": replicas, "refresh_interval": "1s",
            "max_result_window": 2_000_000}  # fmt: skip

"""A client's mistake is never a 500 on the FHIR API: walked over the parameter table.

Every searchable resource type x every parameter (and every chain target parameter) x
every modifier FHIR defines (and a made-up one) x values of every shape (empty, huge
numbers, dates at the edges of the calendar, tokens, references, long text) answers 200
or a 400 OperationOutcome. So do thousands of AND-ed parameters, huge ``_count``,
non-numeric AuditEvent ``outcome`` and garbage in every control parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from server.core.fhir.params import PARAMS, ParamType, params_of
from tests.fhir.conftest import FHIR_JSON, fhir_client, research_study
from tests.helpers import cohort, part10, stow
from tests.live import LiveServer

MODIFIERS = ("missing", "not", "text", "exact", "contains", "above", "below", "in", "not-in",
             "of-type", "identifier", "iterate", "code-text", "text-advanced", "Patient",
             "ResearchStudy", "zzz", "")  # fmt: skip
HUGE = "9" * 5000
VALUES = {
    ParamType.TOKEN: ("x", "true", "|", "sys|", "|code", "urn:oid:1.2|1.2.3", HUGE, "a,b,,c"),
    ParamType.STRING: ("B", "%_\\", HUGE[:1000], "ÅÄÖ"),
    ParamType.DATE: ("2020", "eq0001-01-01", "ap0001", "ap9999-12-31", "ge9999-12-31T23:59:59",
                     "lt0001", "sa2020-02-30", "2020-13", "99999", HUGE, "ne2020-01-01T10:00Z",
                     "gt2020-01-01T25:00"),
    ParamType.REFERENCE: ("x", "Patient/x", "ResearchStudy/x", "http://elsewhere/Patient/x",
                          "/", "A/B/C/", HUGE),
    ParamType.URI: ("urn:x", HUGE),
}  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    live = LiveServer(tmp_path_factory.mktemp("never500") / "data").start()
    try:
        answer = stow(live, [part10(ds) for ds in cohort(instances_per_series=1)])
        assert answer.status_code == 200, answer.text
        with fhir_client(live) as c:
            created = c.post("ResearchStudy", json=research_study("Never 500"),
                             headers={"Content-Type": FHIR_JSON})  # fmt: skip
            assert created.status_code == 201, created.text
            yield c
    finally:
        live.stop()


def _sane(response: httpx.Response, what: Any) -> None:
    assert response.status_code in (200, 400), (what, response.status_code, response.text[:400])
    if response.status_code == 400:
        OperationOutcome.model_validate(response.json())


def _keys(rtype: str) -> Iterator[tuple[str, ParamType]]:
    """Every parameter name of ``rtype`` with every modifier, and every chain."""
    for p in params_of(rtype).values():
        for modifier in MODIFIERS:
            yield (f"{p.name}:{modifier}" if modifier else p.name), p.type
        for target in p.targets:
            for t in params_of(target).values():
                for modifier in ("", "missing", "not", "text", "zzz"):
                    suffix = f":{modifier}" if modifier else ""
                    yield f"{p.name}:{target}.{t.name}{suffix}", t.type
                    yield f"{p.name}.{t.name}.x", t.type  # deeper than one level


@pytest.mark.parametrize("rtype", sorted(PARAMS))
def test_every_parameter_modifier_and_value(client: httpx.Client, rtype: str) -> None:
    walked = 0
    for key, kind in _keys(rtype):
        for value in VALUES[kind][:3] if "." in key else VALUES[kind]:
            _sane(client.get(rtype, params={key: value}), (rtype, key, value[:40]))
            walked += 1
    assert walked > 100, walked


@pytest.mark.parametrize(
    "params",
    [
        [("modality", f"CT{n}") for n in range(3000)],
        [("_id", ",".join(str(n) for n in range(3000)))],
        [("_lastUpdated", "gt2000")] * 500,
        [("identifier", "x" * 60_000)],
        [("_count", HUGE)],
        [("_count", "-1")],
        [("_count", "1e9")],
        [("_sort", "zzz")],
        [("_sort", "-" * 1000)],
        [("_include", "ImagingStudy:zzz")],
        [("_include", "*")],
        [("_revinclude", "ResearchSubject:individual:Group")],
        [("_elements", "," * 5000)],
        [("_summary", "zzz")],
        [("_total", "zzz")],
        [("_cursor", "x")],
        [("_cursor", HUGE)],
        [("_has:Group:member:_id", "x")],
        [("_lastUpdated", HUGE)],
    ],
    ids=lambda p: f"{p[0][0][:20]}x{len(p)}",
)
@pytest.mark.parametrize("rtype", ["ImagingStudy", "Patient", "ResearchStudy", "AuditEvent"])
def test_abusive_searches_are_400_or_200(
    client: httpx.Client, rtype: str, params: list[tuple[str, str]]
) -> None:
    answer = client.get(rtype, params=params)
    _sane(answer, (rtype, params[0][0], len(params)))
    post = client.post(f"{rtype}/_search", data=dict(params[:1]))
    _sane(post, ("POST", rtype, params[0][0]))


def test_thousands_of_and_ed_parameters_get_a_clear_400(client: httpx.Client) -> None:
    answer = client.get("ImagingStudy", params=[("modality", f"CT{n}") for n in range(3000)])
    assert answer.status_code == 400
    assert "at most" in answer.text


@pytest.mark.parametrize("outcome", ["x", "-1", "4.0", HUGE, "", "0,x", "12", "0"])
def test_audit_event_outcome(client: httpx.Client, outcome: str) -> None:
    answer = client.get("AuditEvent", params={"outcome": outcome})
    _sane(answer, outcome)
    if outcome in ("12", "0"):
        assert answer.status_code == 200


@pytest.mark.parametrize("path", ["ResearchStudy/_history", "ResearchStudy/x/_history"])
@pytest.mark.parametrize("params", [{"_count": HUGE}, {"_count": "-5"}, {"_since": HUGE},
                                    {"_since": "zzz"}, {"_count": "x"}])  # fmt: skip
def test_history_parameters(client: httpx.Client, path: str, params: dict[str, str]) -> None:
    answer = client.get(path, params=params)
    assert answer.status_code < 500, (path, params, answer.text[:300])

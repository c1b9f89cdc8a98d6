"""Data-access agreements (DAA) as FHIR R4 Contract resources, and the grants they give.

Profile: ``https://cancer-imaging-gateway.eu/fhir/StructureDefinition/daa-contract``.

==============================  ====================================================
element                         meaning
==============================  ====================================================
``identifier``                  business identifier of the agreement
``status``                      ``executed``: in force; any other status (revoked,
                                terminated, cancelled, entered-in-error, disputed,
                                ...) grants nothing
``applies``                     Period in force; active only while now lies within
                                [start, end]; a missing bound is open; dates
                                without a time zone are read as UTC
``subject[]``                   ``Reference(ResearchStudy/<dataset id>)``: the
                                datasets covered
``term[0].offer.party[]``       the parties given access; each ``reference[]`` is
                                ``Organization/<org id>`` (every client of the
                                organisation), or an identifier-only Reference
                                {system ``CLIENT_SYSTEM``, value <client id>} (one
                                registered client), or {system <issuer URL>,
                                value <user subject>} (a user of an external
                                OpenID provider); ``role`` (required by R4) is
                                informative only
``term[0].action[0].type``      access condition, a coding of ``ACCESS_CONDITION``
                                (download, in-situ-processing, remote-processing)
``term[0].action[0].intent``    purpose of use, a coding of HL7 v3 ActReason
                                (e.g. HRESCH)
``term[0].action[0].status``    required by R4; always contract-action-status
                                ``complete``
==============================  ====================================================

Terms and actions beyond the first are read the same way (each term's parties get that
term's conditions), so a hand-written agreement with several terms is not misread.
Anything that cannot be read (an unknown condition, an unparsable date) grants nothing.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from server.security.model import RANK, Condition, Grant, Party

if TYPE_CHECKING:
    from server.index.fhir_store import FhirStore

BASE = "https://cancer-imaging-gateway.eu/fhir"
PROFILE = f"{BASE}/StructureDefinition/daa-contract"
AGREEMENT_SYSTEM = f"{BASE}/sid/agreement"
CLIENT_SYSTEM = f"{BASE}/sid/client-id"
ACCESS_CONDITION = f"{BASE}/CodeSystem/access-condition"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACTION_STATUS = "http://hl7.org/fhir/contract-action-status"

ACTIVE = "executed"
INACTIVE = ("revoked", "terminated", "cancelled", "entered-in-error", "disputed")

CONDITION_DISPLAY = {
    Condition.DOWNLOAD: "download",
    Condition.IN_SITU: "in-situ processing",
    Condition.REMOTE: "remote processing without direct data access",
}
PURPOSE_DISPLAY = {
    "HRESCH": "healthcare research",
    "HTEST": "test health data",
    "HOPERAT": "healthcare operations",
    "PUBHLTH": "public health",
}

_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


# -- periods -----------------------------------------------------------------
def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _span(text: str) -> tuple[datetime, datetime]:
    """The instants a FHIR date/dateTime covers, as [low, high); ValueError if unreadable."""
    m = _PARTIAL.match(text)
    if m:
        year, month, day = int(m[1]), int(m[2] or 1), int(m[3] or 1)
        low = datetime(year, month, day, tzinfo=UTC)
        if m[3]:
            high = low + timedelta(days=1)
        elif m[2]:
            high = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        else:
            high = datetime(year + 1, 1, 1, tzinfo=UTC)
        return low, high
    if "T" not in text:
        raise ValueError(f"not a FHIR date/dateTime: {text!r}")
    moment = _utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    return moment, moment + timedelta(microseconds=1)


def in_period(period: dict[str, Any] | None, now: datetime) -> bool:
    """Whether ``now`` lies within the (inclusive) Period; a missing bound is open."""
    moment = _utc(now)
    period = period or {}
    try:
        if period.get("start") and moment < _span(str(period["start"]))[0]:
            return False
        return not (period.get("end") and moment >= _span(str(period["end"]))[1])
    except ValueError:
        return False


def is_active(contract: dict[str, Any], now: datetime) -> bool:
    """In force: status ``executed`` and ``now`` within ``applies``."""
    if contract.get("status") != ACTIVE or "applies" not in contract:
        return False
    return in_period(contract.get("applies"), now)


# -- reading -----------------------------------------------------------------
def _party(reference: dict[str, Any]) -> Party | None:
    target = reference.get("reference")
    if isinstance(target, str) and target:
        rtype, _, rid = "/".join(target.rstrip("/").split("/")[-2:]).partition("/")
        return Party(organization=rid) if rtype == "Organization" and rid else None
    identifier = reference.get("identifier") or {}
    system, value = identifier.get("system"), identifier.get("value")
    if not system or not value:
        return None
    if system == CLIENT_SYSTEM:
        return Party(client_id=value)
    return Party(issuer=system, subject=value)


def _term_parties(term: dict[str, Any]) -> list[Party]:
    out: list[Party] = []
    for party in (term.get("offer") or {}).get("party", []):
        for reference in party.get("reference", []):
            found = _party(reference)
            if found is not None and found not in out:
                out.append(found)
    return out


def contract_parties(contract: dict[str, Any]) -> list[Party]:
    """Every party the agreement gives access to, without duplicates."""
    out: list[Party] = []
    for term in contract.get("term", []):
        out += [p for p in _term_parties(term) if p not in out]
    return out


def matches(party: Party, caller: Party) -> bool:
    """Whether the agreement party ``party`` names ``caller``: the same organisation, the same
    client, or the same user (issuer and subject)."""
    if party.organization and party.organization == caller.organization:
        return True
    if party.client_id and party.client_id == caller.client_id:
        return True
    return bool(
        party.issuer
        and party.subject
        and party.issuer == caller.issuer
        and party.subject == caller.subject
    )


def contract_datasets(contract: dict[str, Any]) -> list[str]:
    """Ids of the ResearchStudy resources in ``subject``."""
    out: list[str] = []
    for ref in contract.get("subject", []):
        target = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(target, str):
            continue
        rtype, _, rid = "/".join(target.rstrip("/").split("/")[-2:]).partition("/")
        if rtype == "ResearchStudy" and rid and rid not in out:
            out.append(rid)
    return out


def _condition(action: dict[str, Any]) -> Condition | None:
    best: Condition | None = None
    for coding in (action.get("type") or {}).get("coding", []):
        if coding.get("system") != ACCESS_CONDITION:
            continue
        try:
            found = Condition(coding.get("code"))
        except ValueError:
            continue
        if best is None or RANK[found] > RANK[best]:
            best = found
    return best


def _purpose(action: dict[str, Any]) -> str | None:
    codings = (action.get("intent") or {}).get("coding", [])
    preferred = [c for c in codings if c.get("system") == ACT_REASON and c.get("code")]
    chosen = preferred or [c for c in codings if c.get("code")]
    return chosen[0]["code"] if chosen else None


def contract_conditions(contract: dict[str, Any]) -> list[tuple[Condition, str | None]]:
    """(condition, purpose) of every readable action of every term."""
    return [
        (condition, _purpose(action))
        for term in contract.get("term", [])
        for action in term.get("action", [])
        if (condition := _condition(action)) is not None
    ]


def _better(new: Grant, old: Grant | None) -> bool:
    if old is None:
        return True
    if RANK[new.condition] != RANK[old.condition]:
        return RANK[new.condition] > RANK[old.condition]
    return (new.agreement or "") < (old.agreement or "")  # ties: a stable choice


def grants_for(
    caller: Party, contracts: Iterable[dict[str, Any]], now: datetime
) -> dict[str, Grant]:
    """Dataset id -> Grant for every active agreement naming ``caller``; where several cover one
    dataset, the most permissive condition wins."""
    out: dict[str, Grant] = {}
    for contract in contracts:
        if not is_active(contract, now):
            continue
        datasets = contract_datasets(contract)
        for term in contract.get("term", []):
            if not any(matches(p, caller) for p in _term_parties(term)):
                continue
            for action in term.get("action", []):
                condition = _condition(action)
                if condition is None:
                    continue
                for dataset in datasets:
                    grant = Grant(dataset, condition, contract.get("id"), _purpose(action))
                    if _better(grant, out.get(dataset)):
                        out[dataset] = grant
    return out


# -- writing -----------------------------------------------------------------
def _instant(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="seconds").replace("+00:00", "Z")


def _reference(party: Party) -> dict[str, Any]:
    if party.organization:
        return {"reference": f"Organization/{party.organization}"}
    if party.client_id:
        return {"identifier": {"system": CLIENT_SYSTEM, "value": party.client_id}}
    return {"identifier": {"system": party.issuer, "value": party.subject}}


def new_contract(
    *,
    contract_id: str,
    datasets: list[str],
    condition: Condition,
    purpose: str = "HRESCH",
    organization: str | None = None,
    client_id: str | None = None,
    issuer: str | None = None,
    subject: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> dict[str, Any]:
    """An executed agreement (a FHIR R4 Contract of the daa-contract profile).

    Each of ``organization``, ``client_id`` and ``issuer`` + ``subject`` that is given becomes
    one party; at least one is needed. ``start`` defaults to now; ``end`` is open if omitted.
    Raises ValueError for arguments that would make an agreement that grants nothing.
    """
    if not contract_id:
        raise ValueError("an agreement needs an id")
    if not datasets or not all(datasets):
        raise ValueError("an agreement needs at least one dataset")
    if (issuer is None) != (subject is None):
        raise ValueError("a user party needs both issuer and subject")
    parties = [
        p
        for p in (
            Party(organization=organization) if organization else None,
            Party(client_id=client_id) if client_id else None,
            Party(issuer=issuer, subject=subject) if issuer and subject else None,
        )
        if p is not None
    ]
    if not parties:
        raise ValueError("an agreement needs a party: organization, client, or issuer + subject")
    condition = Condition(condition)
    period = {"start": start or _instant(datetime.now(UTC))}
    if end:
        period["end"] = end
    try:
        low, high = _span(period["start"]), _span(end) if end else None
    except ValueError as exc:
        raise ValueError(f"invalid agreement period: {exc}") from exc
    if high is not None and high[1] <= low[0]:
        raise ValueError("the agreement ends before it starts")
    purpose_coding = {"system": ACT_REASON, "code": purpose}
    if purpose in PURPOSE_DISPLAY:
        purpose_coding["display"] = PURPOSE_DISPLAY[purpose]
    return {
        "resourceType": "Contract",
        "id": contract_id,
        "meta": {"profile": [PROFILE]},
        "identifier": [{"system": AGREEMENT_SYSTEM, "value": contract_id}],
        "status": ACTIVE,
        "issued": _instant(datetime.now(UTC)),
        "applies": period,
        "subject": [{"reference": f"ResearchStudy/{d}"} for d in dict.fromkeys(datasets)],
        "term": [
            {
                "offer": {
                    "party": [
                        {"reference": [_reference(p)], "role": {"text": "data user"}}
                        for p in parties
                    ]
                },
                "action": [
                    {
                        "type": {
                            "coding": [
                                {
                                    "system": ACCESS_CONDITION,
                                    "code": condition.value,
                                    "display": CONDITION_DISPLAY[condition],
                                }
                            ]
                        },
                        "intent": {"coding": [purpose_coding]},
                        "status": {"coding": [{"system": ACTION_STATUS, "code": "complete"}]},
                    }
                ],
            }
        ],
    }


# -- loading and caching -----------------------------------------------------
def load_contracts(store: FhirStore) -> list[dict[str, Any]]:
    """Every Contract in the store that is not deleted (current versions), in one query."""
    return store.current("Contract")


def _keys(party: Party) -> list[tuple[str, ...]]:
    keys: list[tuple[str, ...]] = []
    if party.organization:
        keys.append(("organization", party.organization))
    if party.client_id:
        keys.append(("client", party.client_id))
    if party.issuer and party.subject:
        keys.append(("user", party.issuer, party.subject))
    return keys


class AgreementCache:
    """Active agreements by party, read from the FHIR store, cached for at most ``ttl`` seconds so
    revocation takes effect within ttl.

    Only executed agreements are kept; their periods are checked at every lookup, so an agreement
    that expires stops granting at once. ``clock`` measures the ttl (seconds, monotonic).
    """

    def __init__(
        self,
        load: Callable[[], list[dict[str, Any]]],
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._by_party: dict[tuple[str, ...], list[dict[str, Any]]] = {}

    def _index(self) -> dict[tuple[str, ...], list[dict[str, Any]]]:
        with self._lock:
            now = self._clock()
            if self._loaded_at is None or now - self._loaded_at >= self.ttl:
                by_party: dict[tuple[str, ...], list[dict[str, Any]]] = {}
                for contract in self._load():
                    if contract.get("status") != ACTIVE:
                        continue
                    for party in contract_parties(contract):
                        for key in _keys(party):
                            by_party.setdefault(key, []).append(contract)
                self._by_party, self._loaded_at = by_party, now
            return self._by_party

    def grants(self, caller: Party, now: datetime | None = None) -> dict[str, Grant]:
        """The caller's grants from the (at most ``ttl`` old) active agreements."""
        index = self._index()
        candidates: dict[int, dict[str, Any]] = {}
        for key in _keys(caller):
            for contract in index.get(key, []):
                candidates[id(contract)] = contract
        return grants_for(caller, candidates.values(), now or datetime.now(UTC))

    def fresh_until(self) -> float:
        """When the agreements loaded now stop being trusted (on this cache's clock)."""
        with self._lock:
            loaded = self._loaded_at
        return (loaded if loaded is not None else self._clock()) + self.ttl

    def invalidate(self) -> None:
        """Forget the cached agreements; the next lookup reads the store again."""
        with self._lock:
            self._loaded_at = None

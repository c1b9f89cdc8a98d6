"""The audit trail: every access and refused attempt as a FHIR R4 AuditEvent in a hash chain.

Events follow IHE BALP (Basic Audit Log Patterns) where it applies: a RESTful
interaction (``type`` = ``rest``, ``subtype`` from ``restful-interaction``), the
client and - when a user is involved - the user as agents, the agreements
(``Contract``) that granted the access as agent policy, the datasets and studies
touched as entities, and the query string as a base64 query entity.

Storage
-------
``data_dir/audit.sqlite`` holds one row per event, appended in ``seq`` order::

    hash = sha256(prev_hash + canonical event bytes)     (hex; the first prev_hash is 64 zeros)

The canonical bytes are the AuditEvent serialised with sorted keys, so the chain
can be recomputed from the file alone (:func:`verify`). Changing, removing or
inserting a row breaks the chain; removing the *last* rows leaves a valid but
shorter chain, which is why ``data_dir/audit.head`` (an anchor: seq and hash of
the last event, replaced atomically after every write) is compared as well.
Update and delete triggers make the table append-only for ordinary SQL. The chain
makes tampering evident, not impossible: someone able to rewrite every later row
and the anchor can hide a change, so keep copies of the anchor's hash elsewhere
(``imaging-gateway audit verify`` prints it) when that matters.

Latency and durability
----------------------
:meth:`AuditLog.record` only appends to an in-memory queue; a background thread
writes the queued events in one transaction every ``flush_interval`` seconds.
The database runs in WAL mode with ``synchronous=NORMAL``: a committed event
survives the process being killed, but an event still queued (not yet flushed)
when the process dies is lost - the flush interval bounds that window - and an
operating-system crash or power loss may lose the last committed flushes, after
which :func:`verify` reports the tail as removed. Several processes may share one
log: the next seq and hash are read inside the write transaction.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("gateway.audit")

AUDIT_FILE = "audit.sqlite"
ANCHOR_SUFFIX = ".head"
GENESIS = "0" * 64

CLIENT_ID_SYSTEM = "https://cancer-imaging-gateway.eu/fhir/sid/client-id"
ACTION_SYSTEM = "https://cancer-imaging-gateway.eu/fhir/CodeSystem/access-action"
EVENT_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-PurposeOfUse"
SOURCE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/object-role"
RESOURCE_TYPE_SYSTEM = "http://hl7.org/fhir/resource-types"
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID_SYSTEM = "urn:dicom:uid"

OUTCOMES = {0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure"}

# gateway action -> (restful-interaction code, AuditEvent.action); BALP records queries as E.
_INTERACTIONS: dict[str, tuple[str, str]] = {
    "search": ("search-type", "E"),
    "count": ("search-type", "E"),
    "catalogue": ("read", "R"),
    "read": ("read", "R"),
    "vread": ("vread", "R"),
    "history": ("history-instance", "R"),
    "metadata": ("read", "R"),
    "retrieve": ("read", "R"),
    "store": ("create", "C"),
    "create": ("create", "C"),
    "update": ("update", "U"),
    "patch": ("patch", "U"),
    "delete": ("delete", "D"),
    "token": ("operation", "E"),
}
# anything else (e.g. "admin") is classified by its HTTP method
_BY_METHOD: dict[str, tuple[str, str]] = {
    "GET": ("read", "R"),
    "HEAD": ("read", "R"),
    "POST": ("create", "C"),
    "PUT": ("update", "U"),
    "PATCH": ("patch", "U"),
    "DELETE": ("delete", "D"),
}
_DICOM_KINDS = {
    "study": "Study Instance UID",
    "series": "Series Instance UID",
    "instance": "SOP Instance UID",
}
_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_DATASET = "dataset"

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS audit_event (
        seq INTEGER PRIMARY KEY,
        recorded TEXT NOT NULL,
        event BLOB NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        client_id TEXT,
        subject TEXT,
        action TEXT,
        outcome INTEGER,
        datasets TEXT NOT NULL DEFAULT '',
        entities TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS audit_event_client ON audit_event(client_id, seq)",
    "CREATE INDEX IF NOT EXISTS audit_event_subject ON audit_event(subject, seq)",
    "CREATE INDEX IF NOT EXISTS audit_event_action ON audit_event(action, seq)",
    "CREATE INDEX IF NOT EXISTS audit_event_recorded ON audit_event(recorded)",
    """CREATE TRIGGER IF NOT EXISTS audit_event_no_update BEFORE UPDATE ON audit_event
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_event_no_delete BEFORE DELETE ON audit_event
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
]
_COLUMNS = "client_id, subject, action, outcome, recorded, datasets, entities"


@dataclass(frozen=True)
class AccessRecord:
    """One access or refused attempt, as the enforcement layer reports it."""

    action: str  # e.g. "search", "retrieve", "store", "read", "create", "token", "admin"
    outcome: int  # 0 success, 4 minor failure (refused by policy), 8 serious failure (5xx)
    http_status: int
    method: str  # HTTP method
    path: str  # request path (no query string)
    query: str | None  # query string
    source_address: str | None
    client_id: str | None
    subject: str | None  # user subject (external identity) if any
    agreements: tuple[str, ...] = ()  # Contract ids that granted the access
    purpose: str | None = None  # v3 PurposeOfUse code
    datasets: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()  # "ImagingStudy/1.2.3", "study:1.2.3", "instance:..."
    recorded: float | None = None  # epoch seconds; filled in by the log if None
    issuer: str | None = None  # identity provider of ``subject``, if known


# -- the AuditEvent ---------------------------------------------------------------------------


def instant(epoch: float) -> str:
    """A FHIR instant in UTC with microseconds; sorts as text in time order."""
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _network(address: str) -> dict[str, str]:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return {"address": address, "type": "1"}  # machine name
    return {"address": address, "type": "2"}  # IP address


def _entity(value: str) -> dict[str, Any]:
    if _REFERENCE.match(value):
        return {
            "what": {"reference": value},
            "type": _coding(RESOURCE_TYPE_SYSTEM, value.split("/", 1)[0]),
            "role": _coding(OBJECT_ROLE_SYSTEM, "4", "Domain Resource"),
        }
    kind, _, uid = value.partition(":")
    if kind in _DICOM_KINDS and uid:
        return {
            "what": {
                "identifier": {
                    "type": {"text": _DICOM_KINDS[kind]},
                    "system": DICOM_UID_SYSTEM,
                    "value": f"urn:oid:{uid}",
                }
            },
            "type": _coding(ENTITY_TYPE_SYSTEM, "2", "System Object"),
            "name": value,
            "description": f"DICOM {kind}",
        }
    return {
        "what": {"identifier": {"value": value}},
        "type": _coding(ENTITY_TYPE_SYSTEM, "2", "System Object"),
        "name": value,
    }


def audit_event(record: AccessRecord, *, event_id: str, observer: str) -> dict[str, Any]:
    """The FHIR R4 AuditEvent (as JSON-ready dict) for one access record."""
    if record.outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {record.outcome!r}")
    method = record.method.upper()
    interaction, crude = _INTERACTIONS.get(record.action) or _BY_METHOD.get(
        method, ("operation", "E")
    )
    try:
        phrase = HTTPStatus(record.http_status).phrase
    except ValueError:
        phrase = ""
    policy = [f"Contract/{agreement}" for agreement in record.agreements]

    client: dict[str, Any] = {
        "type": {"coding": [_coding(DCM_SYSTEM, "110153", "Source Role ID")]},
        "who": (
            {"identifier": {"system": CLIENT_ID_SYSTEM, "value": record.client_id}}
            if record.client_id
            else {"display": "anonymous"}
        ),
        "requestor": True,
    }
    if record.source_address:
        client["network"] = _network(record.source_address)
    agents: list[dict[str, Any]] = [client]
    if record.subject:
        identifier = {"value": record.subject}
        if record.issuer:
            identifier["system"] = record.issuer
        agents.append(
            {
                "type": {
                    "coding": [_coding(PARTICIPATION_SYSTEM, "IRCP", "information recipient")]
                },
                "who": {"identifier": identifier},
                "requestor": True,
            }
        )
    if policy:  # on the party the agreements were granted to: the user if any, else the client
        agents[-1]["policy"] = policy
    agents.append(
        {
            "type": {"coding": [_coding(DCM_SYSTEM, "110152", "Destination Role ID")]},
            "who": {"display": observer},
            "requestor": False,
        }
    )

    request: dict[str, Any] = {
        "type": _coding(ENTITY_TYPE_SYSTEM, "2", "System Object"),
        "description": f"{method} {record.path}",
    }
    if record.query:
        request["role"] = _coding(OBJECT_ROLE_SYSTEM, "24", "Query")
        request["query"] = base64.b64encode(record.query.encode()).decode("ascii")
    entities: list[dict[str, Any]] = [request]
    entities.extend(
        {
            "what": {"reference": f"ResearchStudy/{dataset}"},
            "type": _coding(RESOURCE_TYPE_SYSTEM, "ResearchStudy"),
            "role": _coding(OBJECT_ROLE_SYSTEM, "4", "Domain Resource"),
            "description": _DATASET,
        }
        for dataset in record.datasets
    )
    entities.extend(_entity(value) for value in record.entities)

    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": _coding(EVENT_TYPE_SYSTEM, "rest", "Restful Operation"),
        "subtype": [
            _coding(INTERACTION_SYSTEM, interaction),
            _coding(ACTION_SYSTEM, record.action),
        ],
        "action": crude,
        "recorded": instant(time.time() if record.recorded is None else record.recorded),
        "outcome": str(record.outcome),
        "outcomeDesc": f"HTTP {record.http_status} {phrase}".rstrip(),
        "agent": agents,
        "source": {
            "observer": {"display": observer},
            "type": [_coding(SOURCE_TYPE_SYSTEM, "4", "Application Server")],
        },
        "entity": entities,
    }
    if record.purpose:
        event["purposeOfEvent"] = [{"coding": [_coding(PURPOSE_SYSTEM, record.purpose)]}]
    return event


def _joined(values: list[str]) -> str:
    """Index text for a set of values: each between newlines, so ``instr`` finds exact ones."""
    return "\n" + "\n".join(values) + "\n" if values else ""


def _needle(value: str) -> str:
    return f"\n{value}\n"


def index_values(event: dict[str, Any]) -> tuple[Any, ...]:
    """The search columns of an event, taken from the event itself (so verify can recheck them)."""
    client_id = subject = action = None
    for agent in event.get("agent", []):
        identifier = agent.get("who", {}).get("identifier") or {}
        codes = {c.get("code") for c in agent.get("type", {}).get("coding", [])}
        if identifier.get("system") == CLIENT_ID_SYSTEM:
            client_id = identifier.get("value")
        elif "IRCP" in codes:
            subject = identifier.get("value")
    for coding in event.get("subtype", []):
        if coding.get("system") == ACTION_SYSTEM:
            action = coding.get("code")
    datasets: list[str] = []
    entities: list[str] = []
    for entity in event.get("entity", []):
        reference = entity.get("what", {}).get("reference")
        if entity.get("description") == _DATASET and reference:
            datasets.append(reference.split("/", 1)[1])
        elif entity.get("name"):
            entities.append(entity["name"])
        elif reference:
            entities.append(reference)
    outcome = event.get("outcome")
    return (
        client_id,
        subject,
        action,
        int(outcome) if outcome is not None else None,
        event.get("recorded"),
        _joined(datasets),
        _joined(entities),
    )


def canonical(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, event: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + event).hexdigest()


# -- the anchor -------------------------------------------------------------------------------


def anchor_path(path: Path) -> Path:
    return path.with_suffix(ANCHOR_SUFFIX)


def read_anchor(path: Path) -> tuple[int, str] | None:
    """(seq, hash) from the anchor next to the database ``path``; None if there is none."""
    try:
        data = orjson.loads(anchor_path(path).read_bytes())
        return int(data["seq"]), str(data["hash"])
    except FileNotFoundError:
        return None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"unreadable anchor {anchor_path(path).name}: {exc}") from exc


@contextlib.contextmanager
def _anchor_lock(path: Path) -> Iterator[None]:
    """Serialise anchor updates between processes sharing the log (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(
        anchor_path(path).with_suffix(ANCHOR_SUFFIX + ".lock"), os.O_RDWR | os.O_CREAT, 0o600
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_anchor(path: Path, seq: int, digest: str) -> None:
    """Move the anchor forward to (seq, digest), never back (another process may be ahead)."""
    target = anchor_path(path)
    with _anchor_lock(path):
        try:
            current = read_anchor(path)
        except ValueError:
            current = None
        if current is not None and current[0] >= seq:
            return
        partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(orjson.dumps({"seq": seq, "hash": digest}))
        os.replace(partial, target)


# -- the log ----------------------------------------------------------------------------------


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    if read_only:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _instant_bound(value: str, *, upper: bool) -> tuple[str, str]:
    """A ``since``/``until`` bound as (operator, instant text); a date alone covers the day."""
    try:
        if len(value) == 10:
            day = datetime.fromisoformat(value).replace(tzinfo=UTC)
            if upper:
                return "<", instant((day + timedelta(days=1)).timestamp())
            return ">=", instant(day.timestamp())
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not a date or instant: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return ("<=" if upper else ">="), instant(moment.timestamp())


def _search(
    conn: sqlite3.Connection,
    *,
    client_id: str | None = None,
    subject: str | None = None,
    action: str | None = None,
    outcome: int | None = None,
    since: str | None = None,
    until: str | None = None,
    entity: str | None = None,
    dataset: str | None = None,
    limit: int = 100,
    after_seq: int | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    where: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("client_id", client_id),
        ("subject", subject),
        ("action", action),
        ("outcome", outcome),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if since is not None:
        operator, bound = _instant_bound(since, upper=False)
        where.append(f"recorded {operator} ?")
        args.append(bound)
    if until is not None:
        operator, bound = _instant_bound(until, upper=True)
        where.append(f"recorded {operator} ?")
        args.append(bound)
    if entity is not None:
        where.append("instr(entities, ?) > 0")
        args.append(_needle(entity))
    if dataset is not None:
        where.append("instr(datasets, ?) > 0")
        args.append(_needle(dataset))
    if after_seq is not None:
        where.append("seq > ?")
        args.append(after_seq)
    sql = "SELECT seq, event FROM audit_event"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq LIMIT ?"
    args.append(max(0, limit))
    return [(seq, orjson.loads(event)) for seq, event in conn.execute(sql, args)]


class AuditLog:
    """Append-only, hash-chained audit store (SQLite in data_dir/audit.sqlite)."""

    def __init__(
        self,
        path: Path,
        *,
        observer: str = "cancer-imaging-gateway",
        flush_interval: float = 0.05,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.observer = observer
        self.flush_interval = flush_interval
        self._queue: deque[AccessRecord] = deque()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._conn = _connect(path, read_only=False)
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._check_anchor()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def _check_anchor(self) -> None:
        last = self._conn.execute(
            "SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        try:
            anchor = read_anchor(self.path)
        except ValueError as exc:
            log.warning("audit log %s: %s", self.path, exc)
            return
        end = (last[0], last[1]) if last else (0, GENESIS)
        if last is None and anchor is None:
            _write_anchor(self.path, 0, GENESIS)
        elif end != anchor:
            log.warning(
                "audit log %s ends at %s but its anchor says %s; run 'imaging-gateway audit verify'",
                self.path,
                end[0],
                anchor[0] if anchor else "nothing (missing)",
            )

    # writing

    def record(self, record: AccessRecord) -> None:
        """Queue one event; the writer thread stores it within ``flush_interval``."""
        if self._closed:
            raise RuntimeError("the audit log is closed")
        if record.recorded is None:
            record = replace(record, recorded=time.time())
        self._queue.append(record)

    def flush(self) -> None:
        """Write everything queued so far, now."""
        self._write_queued()

    def close(self) -> None:
        """Flush and stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join()
        try:
            self._write_queued()
        finally:
            self._conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self._write_queued()
            except Exception:  # never let the writer die; the batch stays queued
                log.exception("audit writer: write failed; retrying")

    def _write_queued(self) -> None:
        with self._write_lock:
            batch: list[AccessRecord] = []
            while self._queue:
                batch.append(self._queue.popleft())
            if not batch:
                return
            try:
                self._append(batch)
            except BaseException:
                self._queue.extendleft(reversed(batch))
                raise

    def _events(self, batch: list[AccessRecord]) -> Iterator[tuple[bytes, tuple[Any, ...]]]:
        for record in batch:
            try:
                event = audit_event(record, event_id=str(uuid.uuid4()), observer=self.observer)
                yield canonical(event), index_values(event)
            except Exception:  # a malformed record must not cost the others their place
                log.exception("audit writer: dropped an unrecordable access record %r", record)

    def _append(self, batch: list[AccessRecord]) -> None:
        events = list(self._events(batch))
        if not events:
            return
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            last = conn.execute(
                "SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, prev = (last[0], last[1]) if last else (0, GENESIS)
            try:
                anchor = read_anchor(self.path)
            except ValueError:
                anchor = None
            if anchor is not None and anchor[0] > seq:
                # rows after the anchor's were removed: keep numbering past them, so the gap shows
                seq, prev = anchor
            rows = []
            for data, columns in events:
                seq += 1
                digest = chain_hash(prev, data)
                rows.append((seq, columns[4], data, prev, digest, *columns))
                prev = digest
            conn.executemany(
                "INSERT INTO audit_event (seq, recorded, event, prev_hash, hash, "
                f"{_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            _write_anchor(self.path, seq, prev)
        except OSError:
            log.exception("audit writer: could not update the anchor")

    # reading

    def search(
        self,
        *,
        client_id: str | None = None,
        subject: str | None = None,
        action: str | None = None,
        outcome: int | None = None,
        since: str | None = None,
        until: str | None = None,
        entity: str | None = None,
        dataset: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
    ) -> list[tuple[int, dict[str, Any]]]:
        """Stored events matching all the given filters, oldest first; page on with ``after_seq``.

        ``since``/``until`` are instants or dates (a date as ``until`` includes that day);
        ``entity`` and ``dataset`` match one of the event's values exactly.
        """
        conn = _connect(self.path, read_only=True)
        try:
            return _search(
                conn,
                client_id=client_id,
                subject=subject,
                action=action,
                outcome=outcome,
                since=since,
                until=until,
                entity=entity,
                dataset=dataset,
                limit=limit,
                after_seq=after_seq,
            )
        finally:
            conn.close()

    def count(self) -> int:
        """Stored events (queued ones are not counted until flushed)."""
        conn = _connect(self.path, read_only=True)
        try:
            return int(conn.execute("SELECT count(*) FROM audit_event").fetchone()[0])
        finally:
            conn.close()


def tail(path: Path, limit: int = 20) -> list[tuple[int, dict[str, Any]]]:
    """The last ``limit`` stored events (oldest of them first), read without writing anything."""
    if not path.exists():
        return []
    conn = _connect(path, read_only=True)
    try:
        rows = conn.execute(
            "SELECT seq, event FROM audit_event ORDER BY seq DESC LIMIT ?", (max(0, limit),)
        ).fetchall()
    finally:
        conn.close()
    return [(seq, orjson.loads(event)) for seq, event in reversed(rows)]


# -- verification -----------------------------------------------------------------------------


@dataclass
class VerifyReport:
    events: int
    ok: bool
    problems: list[str] = field(default_factory=list)
    last_seq: int = 0
    last_hash: str = GENESIS


def _span(first: int, last: int) -> str:
    return f"event {first} missing" if first == last else f"events {first}-{last} missing"


def verify(path: Path) -> VerifyReport:
    """Recompute the hash chain from the database file (opened read-only) and check the anchor."""
    problems: list[str] = []
    events = 0
    last_seq, last_hash = 0, GENESIS
    if path.exists():
        conn = _connect(path, read_only=True)
        try:
            rows = conn.execute(
                f"SELECT seq, event, prev_hash, hash, {_COLUMNS} FROM audit_event ORDER BY seq"
            )
            expected = 1
            for seq, data, prev_hash, stored, *columns in rows:
                events += 1
                if isinstance(data, str):
                    data = data.encode()
                gap = seq > expected
                if seq < expected:
                    problems.append(f"event {seq}: out of sequence (inserted)")
                elif gap:
                    problems.append(f"{_span(expected, seq - 1)} (removed)")
                if chain_hash(prev_hash, data) != stored:
                    problems.append(f"event {seq}: hash mismatch (changed)")
                elif prev_hash != last_hash and not gap and seq >= expected:
                    problems.append(
                        f"event {seq}: does not follow event {last_seq} (inserted or rewritten)"
                    )
                try:
                    if tuple(columns) != index_values(orjson.loads(data)):
                        problems.append(f"event {seq}: search columns differ from the event")
                except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
                    problems.append(f"event {seq}: not a readable AuditEvent (changed)")
                expected = max(expected, seq + 1)
                last_seq, last_hash = seq, stored
        except sqlite3.DatabaseError as exc:
            problems.append(f"database unreadable: {exc}")
        finally:
            conn.close()
    try:
        anchor = read_anchor(path)
    except ValueError as exc:
        problems.append(f"anchor: {exc}")
    else:
        if anchor is None:
            if events:
                problems.append(
                    "anchor: missing (cannot tell whether the last events were removed)"
                )
        elif anchor[0] > last_seq:
            problems.append(
                f"anchor: log ends at {last_seq}, anchor says {anchor[0]} (tail removed)"
            )
        elif anchor[0] < last_seq:
            problems.append(
                f"anchor: log ends at {last_seq}, anchor says {anchor[0]} "
                "(events added after the anchor, or the writer stopped before updating it)"
            )
        elif anchor[1] != last_hash:
            problems.append(f"anchor: event {last_seq} is not the one anchored (changed)")
    return VerifyReport(
        events=events,
        ok=not problems,
        problems=problems,
        last_seq=last_seq,
        last_hash=last_hash,
    )

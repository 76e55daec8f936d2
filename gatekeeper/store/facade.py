"""The lane's durable state: one SQLite file (WAL, synchronous=FULL).

Every change is one transaction that also appends its event to the
append-only ``events`` log and its message(s) to the ``outbox``: a decision is
either wholly on disk or not at all, and the cloud learns of exactly what
happened. A barrier opens only after :meth:`Store.record_decision` returned,
i.e. after the commit reached the disk.

Writes use plain SQL inside explicit ``BEGIN IMMEDIATE`` transactions
(sqlite-utils' insert helpers commit on their own, which would split a
transaction); sqlite-utils builds the schema and serves the queries.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import sqlite_utils

from gatekeeper.rules import (
    Action,
    Decision,
    ListEntry,
    LotState,
    Reservation,
    SessionView,
    Tariff,
    normalise_plate,
)

SCHEMA_VERSION = 1
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class StoreError(Exception):
    """A request the store refuses; the message is for the person who asked."""


class UnknownSession(StoreError):
    pass


@dataclass(frozen=True)
class OutboxRow:
    id: int
    msg_id: str
    topic: str  # relative to {prefix}/{lot_id}/
    payload: str
    qos: int
    retain: bool
    created_at: str


@dataclass(frozen=True)
class Recorded:
    """What :meth:`Store.record_decision` made durable."""

    event_id: str
    session_id: int | None


# --------------------------------------------------------------------------- schema


def _migrate_1(db: sqlite_utils.Database) -> None:
    db["sessions"].create(
        {
            "id": int,
            "plate_read": str,
            "plate": str,
            "entry_lane": str,
            "entry_at": str,
            "photo": str,
            "confidence": float,
            "status": str,
            "paid_at": str,
            "amount_paid": int,
            "payment_ref": str,
            "exit_lane": str,
            "exit_at": str,
            "exit_photo": str,
            "fee_charged": int,
            "reservation_id": str,
            "source": str,
        },
        pk="id",
        not_null={"plate", "entry_lane", "entry_at", "status", "amount_paid"},
        defaults={"status": "open", "amount_paid": 0, "source": "camera"},
    )
    db.execute("CREATE INDEX sessions_status_plate ON sessions(status, plate)")
    db["events"].create(
        {
            "seq": int,
            "id": str,
            "at": str,
            "lane": str,
            "kind": str,
            "reason": str,
            "message": str,
            "plate": str,
            "session_id": int,
            "data": str,
        },
        pk="seq",
        not_null={"id", "at", "kind"},
    )
    db.execute("CREATE UNIQUE INDEX events_id ON events(id)")
    db.execute("CREATE INDEX events_plate ON events(plate)")
    # The log is append-only: the database itself refuses edits and deletions.
    db.execute(
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN "
        "SELECT RAISE(ABORT, 'events are append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN "
        "SELECT RAISE(ABORT, 'events are append-only'); END"
    )
    db["outbox"].create(
        {
            "id": int,
            "msg_id": str,
            "topic": str,
            "payload": str,
            "qos": int,
            "retain": int,
            "created_at": str,
            "sent_at": str,
            "attempts": int,
        },
        pk="id",
        not_null={"msg_id", "topic", "payload", "created_at"},
        defaults={"qos": 1, "retain": 0, "attempts": 0},
    )
    db.execute("CREATE INDEX outbox_pending ON outbox(sent_at, id)")
    db["uploads"].create(
        {
            "id": int,
            "event_id": str,
            "session_id": int,
            "path": str,
            "created_at": str,
            "uploaded_at": str,
            "attempts": int,
            "next_try_at": str,
            "last_error": str,
        },
        pk="id",
        not_null={"event_id", "path", "created_at"},
        defaults={"attempts": 0},
    )
    db["lists"].create(
        {"plate": str, "kind": str, "valid_from": str, "valid_until": str, "note": str, "updated_at": str},
        pk=("plate", "kind"),
        not_null={"plate", "kind", "updated_at"},
    )
    db["reservations"].create(
        {
            "id": str,
            "plate": str,
            "valid_from": str,
            "valid_until": str,
            "note": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"plate", "valid_from", "valid_until", "updated_at"},
    )
    db["tariff"].create({"id": int, "data": str, "updated_at": str, "updated_by": str}, pk="id")
    db["inbound"].create({"msg_id": str, "at": str, "topic": str}, pk="msg_id")


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_migrate_1,)

#: The keys every decision event carries; :meth:`Store.record_decision`'s extra data may not replace them.
_DECISION_EVENT_KEYS = frozenset({
    "id", "lot", "lane", "kind", "at", "plate", "session_id", "reason", "message",
    "direction", "open", "plate_read", "confidence", "fee_due", "currency", "image", "source",
    "candidates", "match_distance", "reservation_id",
})


# --------------------------------------------------------------------------- store


class Store:
    """All reads and writes of the lane's state. Thread-safe (one connection, one lock)."""

    def __init__(
        self,
        path: str | Path,
        *,
        lot_id: str = "demo-lot",
        capacity: int = 0,
        default_tariff: Tariff | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.path = Path(path)
        self.lot_id = lot_id
        self.capacity = capacity
        self.clock = clock
        self._default_tariff = default_tariff or Tariff()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()
        self._depth = 0
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        self._migrate()

    @classmethod
    def from_settings(cls, settings: Any, *, clock: Clock = utcnow) -> "Store":
        """Open the store a :class:`gatekeeper.config.Settings` describes."""
        return cls(
            settings.storage.database_path,
            lot_id=settings.site.lot_id,
            capacity=settings.site.capacity,
            default_tariff=tariff_from_config(settings),
            clock=clock,
        )

    # -- plumbing ------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable unit of work; nests (inner blocks join the outer)."""
        with self._lock:
            conn = self.db.conn
            if self._depth:
                self._depth += 1
                try:
                    yield conn
                finally:
                    self._depth -= 1
                return
            conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
            finally:
                self._depth = 0

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: database schema {version} is newer than this gatekeeper ({SCHEMA_VERSION})"
                )
            for number in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[number - 1](self.db)
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('schema_version', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (str(number),),
                )

    @property
    def schema_version(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0])

    def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query(sql, params))

    # -- events and outbox -----------------------------------------------------

    def _append_event(
        self,
        conn: sqlite3.Connection,
        kind: str,
        *,
        now: datetime,
        lane: str | None = None,
        reason: str = "",
        message: str = "",
        plate: str = "",
        session_id: int | None = None,
        data: Mapping[str, Any] | None = None,
        publish: bool = True,
    ) -> str:
        event_id = new_id()
        at = to_iso(now)
        payload = {
            "id": event_id,
            "lot": self.lot_id,
            "lane": lane,
            "kind": kind,
            "at": at,
            "plate": plate,
            "session_id": session_id,
            "reason": reason,
            "message": message,
            **(data or {}),
        }
        conn.execute(
            "INSERT INTO events(id, at, lane, kind, reason, message, plate, session_id, data) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (event_id, at, lane, kind, reason, message, plate, session_id, json.dumps(dict(data or {}))),
        )
        if publish:
            self._enqueue(conn, f"events/{kind}", payload, msg_id=event_id, now=now)
        return event_id

    def _enqueue(
        self,
        conn: sqlite3.Connection,
        topic: str,
        payload: Mapping[str, Any],
        *,
        now: datetime,
        msg_id: str | None = None,
        retain: bool = False,
        qos: int = 1,
    ) -> None:
        conn.execute(
            "INSERT INTO outbox(msg_id, topic, payload, qos, retain, created_at) VALUES (?,?,?,?,?,?)",
            (msg_id or new_id(), topic, json.dumps(payload, separators=(",", ":")), qos, int(retain), to_iso(now)),
        )

    def _enqueue_occupancy(self, conn: sqlite3.Connection, now: datetime) -> None:
        occupied = conn.execute("SELECT COUNT(*) FROM sessions WHERE status IN ('open','paid')").fetchone()[0]
        self._enqueue(
            conn,
            "occupancy",
            {
                "id": new_id(),
                "lot": self.lot_id,
                "at": to_iso(now),
                "capacity": self.capacity,
                "occupied": occupied,
                "free": max(0, self.capacity - occupied),
            },
            retain=True,
            now=now,
        )

    def record_event(
        self,
        kind: str,
        *,
        lane: str | None = None,
        reason: str = "",
        message: str = "",
        plate: str = "",
        session_id: int | None = None,
        data: Mapping[str, Any] | None = None,
        publish: bool = True,
        now: datetime | None = None,
    ) -> str:
        """Log something that is not a session change (alarm, manual open, gate event)."""
        with self.transaction() as conn:
            return self._append_event(
                conn,
                kind,
                now=now or self.clock(),
                lane=lane,
                reason=reason,
                message=message,
                plate=plate,
                session_id=session_id,
                data=data,
                publish=publish,
            )

    def enqueue(self, topic: str, payload: Mapping[str, Any], *, retain: bool = False, qos: int = 1) -> None:
        """Queue a message that is not an event (e.g. a retained gate state)."""
        with self.transaction() as conn:
            self._enqueue(conn, topic, payload, retain=retain, qos=qos, now=self.clock())

    def outbox_pending(self, limit: int = 100, after_id: int = 0) -> list[OutboxRow]:
        rows = self._rows(
            "SELECT id, msg_id, topic, payload, qos, retain, created_at FROM outbox "
            "WHERE sent_at IS NULL AND id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [OutboxRow(**{**r, "retain": bool(r["retain"])}) for r in rows]

    def outbox_mark_sent(self, ids: Sequence[int], *, now: datetime | None = None) -> None:
        if not ids:
            return
        at = to_iso(now or self.clock())
        with self.transaction() as conn:
            conn.executemany("UPDATE outbox SET sent_at=? WHERE id=? AND sent_at IS NULL", [(at, i) for i in ids])

    def outbox_note_attempt(self, ids: Sequence[int]) -> None:
        with self.transaction() as conn:
            conn.executemany("UPDATE outbox SET attempts=attempts+1 WHERE id=?", [(i,) for i in ids])

    def outbox_stats(self) -> dict[str, Any]:
        row = self._rows(
            "SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM outbox WHERE sent_at IS NULL"
        )[0]
        sent = self._rows("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NOT NULL")[0]["n"]
        return {"pending": row["pending"], "oldest_pending_at": row["oldest"], "sent": sent}

    def prune_outbox(self, *, sent_before: datetime) -> int:
        """Forget messages the broker acknowledged long ago (never unsent ones)."""
        with self.transaction() as conn:
            cur = conn.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (to_iso(sent_before),))
            return cur.rowcount

    # -- sessions --------------------------------------------------------------

    def inside_sessions(self) -> list[SessionView]:
        rows = self._rows(
            "SELECT id, plate, entry_at, status, paid_at, amount_paid FROM sessions "
            "WHERE status IN ('open','paid') ORDER BY id"
        )
        return [session_view(r) for r in rows]

    def lot_state(self) -> LotState:
        return LotState(capacity=self.capacity, sessions=tuple(self.inside_sessions()))

    def occupancy(self) -> dict[str, int]:
        occupied = len(self.inside_sessions())
        return {"capacity": self.capacity, "occupied": occupied, "free": max(0, self.capacity - occupied)}

    def session(self, session_id: int) -> dict[str, Any]:
        rows = self._rows("SELECT * FROM sessions WHERE id=?", (session_id,))
        if not rows:
            raise UnknownSession(f"no session {session_id}")
        return rows[0]

    def sessions(
        self, *, status: Sequence[str] | None = None, plate: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        where, params = [], []
        if status:
            where.append(f"status IN ({','.join('?' * len(status))})")
            params += list(status)
        if plate:
            where.append("plate = ?")
            params.append(normalise_plate(plate))
        sql = "SELECT * FROM sessions" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self._rows(sql, params)

    def record_decision(
        self,
        decision: Decision,
        *,
        lane: str,
        direction: Literal["entry", "exit"],
        plate_read: str = "",
        confidence: float | None = None,
        photo: str | None = None,
        source: str = "camera",
        upload: bool = False,
        data: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Recorded:
        """Make a lane decision durable: session change, event and outbox, one commit.

        ``data`` adds keys to the event (e.g. ``by``: who typed an operator's
        plate); it may not replace a key the event already has (ValueError).
        """
        clash = sorted(set(data or ()) & _DECISION_EVENT_KEYS)
        if clash:
            raise ValueError(f"extra event data may not replace {', '.join(clash)}")
        now = now or self.clock()
        at = to_iso(now)
        with self.transaction() as conn:
            session_id = decision.session_id
            if decision.action is Action.START_SESSION:
                cur = conn.execute(
                    "INSERT INTO sessions(plate_read, plate, entry_lane, entry_at, photo, confidence, status, "
                    "reservation_id, source) VALUES (?,?,?,?,?,?, 'open', ?, ?)",
                    (plate_read, decision.plate, lane, at, photo, confidence, decision.reservation_id, source),
                )
                session_id = cur.lastrowid
            elif decision.action is Action.CLOSE_SESSION:
                row = conn.execute("SELECT status, amount_paid FROM sessions WHERE id=?", (session_id,)).fetchone()
                if row is None or row[0] == "closed":
                    raise UnknownSession(f"session {session_id} is not inside any more")
                conn.execute(
                    "UPDATE sessions SET status='closed', exit_lane=?, exit_at=?, exit_photo=?, fee_charged=?, "
                    "paid_at=COALESCE(paid_at, ?) WHERE id=?",
                    (lane, at, photo, row[1], at, session_id),
                )
            if decision.open:
                kind = "entry" if direction == "entry" else "exit"
            else:
                kind = "denied"
            fields: dict[str, Any] = {
                "direction": direction,
                "open": decision.open,
                "plate_read": plate_read,
                "confidence": confidence,
                "fee_due": decision.fee_due,
                "currency": None,
                "image": f"{self.lot_id}/{Path(photo).name}" if photo else None,
                "source": source,
            }
            if decision.candidates:
                fields["candidates"] = list(decision.candidates)
            if decision.match_distance is not None:
                fields["match_distance"] = decision.match_distance
            if decision.reservation_id:
                fields["reservation_id"] = decision.reservation_id
            fields["currency"] = self.tariff().currency
            event_id = self._append_event(
                conn,
                kind,
                now=now,
                lane=lane,
                reason=str(decision.reason),
                message=decision.message + (f" ({decision.detail})" if decision.detail else ""),
                plate=decision.plate,
                session_id=session_id,
                data={**fields, **(data or {})},
            )
            if decision.action in (Action.START_SESSION, Action.CLOSE_SESSION):
                self._enqueue_occupancy(conn, now)
            if upload and photo:
                conn.execute(
                    "INSERT INTO uploads(event_id, session_id, path, created_at, next_try_at) VALUES (?,?,?,?,?)",
                    (event_id, session_id, photo, at, at),
                )
        return Recorded(event_id=event_id, session_id=session_id)

    def pay_session(
        self,
        session_id: int,
        *,
        amount: int,
        reference: str | None = None,
        paid_at: datetime | None = None,
        by: str = "cloud",
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Mark a session paid: its exit grace starts at ``paid_at``. Repeat payments add up."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise StoreError(f"amount must be whole minor units >= 0, got {amount!r}")
        now = now or self.clock()
        paid_at = paid_at or now
        with self.transaction() as conn:
            row = conn.execute("SELECT status, plate FROM sessions WHERE id=?", (session_id,)).fetchone()
            if row is None:
                raise UnknownSession(f"no session {session_id}")
            if row[0] == "closed":
                raise StoreError(f"session {session_id} is closed (the vehicle has left)")
            conn.execute(
                "UPDATE sessions SET status='paid', paid_at=?, amount_paid=amount_paid+?, "
                "payment_ref=COALESCE(?, payment_ref) WHERE id=?",
                (to_iso(paid_at), amount, reference, session_id),
            )
            self._append_event(
                conn,
                "paid",
                now=now,
                reason=f"paid_by_{by}" if by in ("cloud", "technician") else "paid",
                message=f"session {session_id} paid",
                plate=row[1],
                session_id=session_id,
                data={"amount": amount, "reference": reference, "paid_at": to_iso(paid_at), "by": by},
            )
        return self.session(session_id)

    def edit_plate(self, session_id: int, plate: str, *, by: str = "technician") -> dict[str, Any]:
        """Fix a misread plate on an open or paid session."""
        key = normalise_plate(plate)
        if not key:
            raise StoreError(f"{plate!r} is not a plate (no letters or digits)")
        now = self.clock()
        with self.transaction() as conn:
            row = conn.execute("SELECT plate FROM sessions WHERE id=?", (session_id,)).fetchone()
            if row is None:
                raise UnknownSession(f"no session {session_id}")
            conn.execute("UPDATE sessions SET plate=?, plate_read=? WHERE id=?", (key, plate, session_id))
            self._append_event(
                conn,
                "edited",
                now=now,
                reason="plate_corrected",
                message=f"session {session_id}: plate {row[0]} -> {key}",
                plate=key,
                session_id=session_id,
                data={"old_plate": row[0], "new_plate": key, "by": by},
            )
        return self.session(session_id)

    def delete_session(self, session_id: int, *, by: str = "technician") -> None:
        """Remove a session record; refused while the vehicle may still owe money."""
        now = self.clock()
        with self.transaction() as conn:
            row = conn.execute("SELECT status, plate FROM sessions WHERE id=?", (session_id,)).fetchone()
            if row is None:
                raise UnknownSession(f"no session {session_id}")
            if row[0] == "open":
                raise StoreError(f"session {session_id} is open and unpaid: pay or close it before deleting")
            conn.execute("UPDATE uploads SET session_id=NULL WHERE session_id=?", (session_id,))
            conn.execute("DELETE FROM sessions WHERE id=?", (session_id,))
            self._append_event(
                conn,
                "deleted",
                now=now,
                reason="deleted_by_technician",
                message=f"session {session_id} deleted",
                plate=row[1],
                session_id=session_id,
                data={"by": by, "status": row[0]},
            )
            if row[0] == "paid":
                self._enqueue_occupancy(conn, now)

    # -- lists, reservations, tariff --------------------------------------------

    def list_entries(self) -> list[ListEntry]:
        return [
            ListEntry(r["plate"], r["kind"], from_iso(r["valid_from"]), from_iso(r["valid_until"]))
            for r in self._rows("SELECT * FROM lists ORDER BY kind, plate")
        ]

    def set_list_entries(
        self, kind: Literal["allow", "deny"], entries: Sequence[Mapping[str, Any]], *, replace: bool = False
    ) -> int:
        """Add/update entries (``plate``, optional ``valid_from``/``valid_until``/``note``)."""
        if kind not in ("allow", "deny"):
            raise StoreError(f"list kind must be allow or deny, got {kind!r}")
        now = to_iso(self.clock())
        rows = []
        for e in entries:
            key = normalise_plate(str(e.get("plate", "")))
            if not key:
                raise StoreError(f"list entry without a plate: {dict(e)!r}")
            vf, vu = e.get("valid_from"), e.get("valid_until")
            rows.append(
                (key, kind, to_iso(vf) if isinstance(vf, datetime) else vf,
                 to_iso(vu) if isinstance(vu, datetime) else vu, e.get("note"), now)
            )
        with self.transaction() as conn:
            if replace:
                conn.execute("DELETE FROM lists WHERE kind=?", (kind,))
            conn.executemany(
                "INSERT INTO lists(plate, kind, valid_from, valid_until, note, updated_at) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(plate, kind) DO UPDATE SET valid_from=excluded.valid_from, "
                "valid_until=excluded.valid_until, note=excluded.note, updated_at=excluded.updated_at",
                rows,
            )
            self._append_event(
                conn, "list_updated", now=self.clock(), reason=f"{kind}_list",
                message=f"{kind} list: {len(rows)} entr{'y' if len(rows) == 1 else 'ies'}"
                + (" (replaced)" if replace else ""), publish=False,
            )
        return len(rows)

    def remove_list_entries(self, kind: str, plates: Sequence[str]) -> int:
        with self.transaction() as conn:
            n = 0
            for p in plates:
                n += conn.execute(
                    "DELETE FROM lists WHERE kind=? AND plate=?", (kind, normalise_plate(p))
                ).rowcount
            return n

    def reservations(self) -> list[Reservation]:
        return [
            Reservation(r["id"], r["plate"], from_iso(r["valid_from"]), from_iso(r["valid_until"]))  # type: ignore[arg-type]
            for r in self._rows("SELECT * FROM reservations ORDER BY valid_from")
        ]

    def upsert_reservation(
        self, reservation_id: str, plate: str, valid_from: datetime, valid_until: datetime, note: str | None = None
    ) -> None:
        key = normalise_plate(plate)
        if not key or not reservation_id:
            raise StoreError("a reservation needs an id and a plate")
        if valid_until <= valid_from:
            raise StoreError("reservation valid_until must be after valid_from")
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO reservations(id, plate, valid_from, valid_until, note, updated_at) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET plate=excluded.plate, valid_from=excluded.valid_from, "
                "valid_until=excluded.valid_until, note=excluded.note, updated_at=excluded.updated_at",
                (reservation_id, key, to_iso(valid_from), to_iso(valid_until), note, to_iso(self.clock())),
            )

    def delete_reservation(self, reservation_id: str) -> bool:
        with self.transaction() as conn:
            return conn.execute("DELETE FROM reservations WHERE id=?", (reservation_id,)).rowcount > 0

    def tariff(self) -> Tariff:
        """The cloud's tariff when it sent one, else the default (the config file's)."""
        rows = self._rows("SELECT data FROM tariff WHERE id=1")
        if not rows:
            with self._lock:
                return self._default_tariff
        return Tariff(**json.loads(rows[0]["data"]))

    def set_default_tariff(self, tariff: Tariff) -> None:
        """Replace the fallback tariff (the config file's, e.g. after a reload); a cloud tariff still wins.

        Not stored: the default comes from the configuration at every start.
        """
        if not isinstance(tariff, Tariff):
            raise TypeError(f"expected a Tariff, got {type(tariff).__name__}")
        with self._lock:
            self._default_tariff = tariff

    def set_tariff(self, tariff: Tariff, *, by: str = "cloud") -> None:
        now = self.clock()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO tariff(id, data, updated_at, updated_by) VALUES (1,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET data=excluded.data, updated_at=excluded.updated_at, "
                "updated_by=excluded.updated_by",
                (json.dumps(asdict(tariff)), to_iso(now), by),
            )
            self._append_event(
                conn, "tariff_updated", now=now, reason=f"tariff_by_{by}", message="tariff updated",
                data={"tariff": asdict(tariff), "by": by}, publish=False,
            )

    # -- inbound idempotency ------------------------------------------------------

    def remember_inbound(self, msg_id: str, topic: str, *, now: datetime | None = None) -> bool:
        """Record a processed command id; False when it was seen before (a replay)."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO inbound(msg_id, at, topic) VALUES (?,?,?)",
                (msg_id, to_iso(now or self.clock()), topic),
            )
            return cur.rowcount == 1

    def prune_inbound(self, *, before: datetime) -> int:
        """Forget command ids older than any command could still be accepted (its clock-skew window)."""
        with self.transaction() as conn:
            return conn.execute("DELETE FROM inbound WHERE at < ?", (to_iso(before),)).rowcount

    # -- uploads -------------------------------------------------------------------

    def uploads_due(self, *, now: datetime | None = None, limit: int = 20) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT * FROM uploads WHERE uploaded_at IS NULL AND next_try_at <= ? ORDER BY id LIMIT ?",
            (to_iso(now or self.clock()), limit),
        )

    def upload_done(self, upload_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE uploads SET uploaded_at=?, last_error=NULL WHERE id=?", (to_iso(self.clock()), upload_id))

    def upload_failed(self, upload_id: int, error: str, *, next_try_at: datetime) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE uploads SET attempts=attempts+1, last_error=?, next_try_at=? WHERE id=?",
                (error[:500], to_iso(next_try_at), upload_id),
            )

    # -- reading the log -------------------------------------------------------------

    def events(
        self,
        *,
        tail: int | None = None,
        after_seq: int = 0,
        plate: str | None = None,
        since: datetime | None = None,
        kinds: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        where, params = ["seq > ?"], [after_seq]
        if plate:
            where.append("plate = ?")
            params.append(normalise_plate(plate))
        if since:
            where.append("at >= ?")
            params.append(to_iso(since))
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            params += list(kinds)
        sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY seq"
        if tail:
            sql = f"SELECT * FROM ({sql.replace('ORDER BY seq', 'ORDER BY seq DESC')} LIMIT {int(tail)}) ORDER BY seq"
        return self._rows(sql, params)


def session_view(row: Mapping[str, Any]) -> SessionView:
    """The rules' view of a ``sessions`` row."""
    return SessionView(
        id=row["id"],
        plate=row["plate"],
        entry_at=from_iso(row["entry_at"]),  # type: ignore[arg-type]
        status=row["status"],
        paid_at=from_iso(row["paid_at"]),
        amount_paid=row["amount_paid"] or 0,
    )


def tariff_from_config(settings: Any) -> Tariff:
    t = settings.tariff
    return Tariff(
        free_minutes=t.free_minutes,
        interval_minutes=t.interval_minutes,
        rate=t.rate,
        daily_max=t.daily_max,
        grace_minutes=t.grace_minutes,
        currency=settings.site.currency,
        currency_digits=settings.site.currency_digits,
    )

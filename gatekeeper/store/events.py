"""The append-only event log, the outbox beside it, and the ids of commands already handled.

An event and its outbox message are written in the caller's transaction, so the cloud learns
of exactly what was committed. Payloads come from :mod:`gatekeeper.messages`.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any, Mapping, Sequence

from gatekeeper import messages
from gatekeeper.rules import normalise_plate
from gatekeeper.store.db import Database
from gatekeeper.store.records import Clock, OutboxRow, new_id, to_iso


class EventLog:
    """Appends events (and their outbox messages) and reads the log back."""

    def __init__(self, database: Database, *, lot_id: str, capacity: int, clock: Clock) -> None:
        self._db = database
        self.lot_id = lot_id
        self.capacity = capacity
        self.clock = clock

    def append(
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
        """Append one event inside ``conn``'s transaction; queue it for the cloud unless ``publish`` is off."""
        event_id = new_id()
        at = to_iso(now)
        conn.execute(
            "INSERT INTO events(id, at, lane, kind, reason, message, plate, session_id, data) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (event_id, at, lane, kind, reason, message, plate, session_id, json.dumps(dict(data or {}))),
        )
        if publish:
            payload = messages.event_payload(
                event_id=event_id, lot=self.lot_id, lane=lane, kind=kind, at=at, plate=plate,
                session_id=session_id, reason=reason, message=message, data=data,
            )
            self.enqueue(conn, messages.event_topic(kind), payload, msg_id=event_id, now=now)
        return event_id

    def enqueue(
        self,
        conn: sqlite3.Connection,
        topic: str,
        payload: Mapping[str, Any],
        *,
        now: datetime,
        msg_id: str | None = None,
        retain: bool = False,
        qos: int = 1,
        correlation: bytes | None = None,
    ) -> None:
        """Queue one message; it gets the lot's next ``seq`` (one counter for every topic, kept in the database)."""
        seq = conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='out_seq' RETURNING value"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO outbox(msg_id, topic, payload, qos, retain, created_at, correlation) VALUES (?,?,?,?,?,?,?)",
            (msg_id or new_id(), topic, messages.encode({**payload, "seq": int(seq)}), qos, int(retain),
             to_iso(now), correlation),
        )

    def enqueue_occupancy(self, conn: sqlite3.Connection, now: datetime) -> None:
        occupied = conn.execute("SELECT COUNT(*) FROM sessions WHERE status IN ('open','paid')").fetchone()[0]
        payload = messages.occupancy_payload(
            msg_id=new_id(), lot=self.lot_id, at=to_iso(now), capacity=self.capacity, occupied=occupied
        )
        self.enqueue(conn, messages.OCCUPANCY_TOPIC, payload, retain=True, now=now)

    def record(
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
        with self._db.transaction() as conn:
            return self.append(
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
        return self._db.rows(sql, params)


class Outbox:
    """The messages waiting for the broker's acknowledgement."""

    def __init__(self, database: Database, *, clock: Clock) -> None:
        self._db = database
        self.clock = clock

    def pending(self, limit: int = 100, after_id: int = 0) -> list[OutboxRow]:
        rows = self._db.rows(
            "SELECT id, msg_id, topic, payload, qos, retain, created_at, correlation FROM outbox "
            "WHERE sent_at IS NULL AND id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [OutboxRow(**{**r, "retain": bool(r["retain"])}) for r in rows]

    def mark_sent(self, ids: Sequence[int], *, now: datetime | None = None) -> None:
        if not ids:
            return
        at = to_iso(now or self.clock())
        with self._db.transaction() as conn:
            conn.executemany("UPDATE outbox SET sent_at=? WHERE id=? AND sent_at IS NULL", [(at, i) for i in ids])

    def note_attempt(self, ids: Sequence[int]) -> None:
        with self._db.transaction() as conn:
            conn.executemany("UPDATE outbox SET attempts=attempts+1 WHERE id=?", [(i,) for i in ids])

    def stats(self) -> dict[str, Any]:
        row = self._db.rows(
            "SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM outbox WHERE sent_at IS NULL"
        )[0]
        sent = self._db.rows("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NOT NULL")[0]["n"]
        return {"pending": row["pending"], "oldest_pending_at": row["oldest"], "sent": sent}

    def prune(self, *, sent_before: datetime) -> int:
        """Forget messages the broker acknowledged long ago (never unsent ones)."""
        with self._db.transaction() as conn:
            cur = conn.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (to_iso(sent_before),))
            return cur.rowcount


class InboundLog:
    """Ids of the cloud commands already handled, with the reply each got: a repeat gets it again."""

    def __init__(self, database: Database, *, clock: Clock) -> None:
        self._db = database
        self.clock = clock

    def remember(self, msg_id: str, topic: str, *, now: datetime | None = None) -> bool:
        """Record a processed command id; False when it was seen before (a replay)."""
        with self._db.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO inbound(msg_id, at, topic) VALUES (?,?,?)",
                (msg_id, to_iso(now or self.clock()), topic),
            )
            return cur.rowcount == 1

    def lookup(self, conn: sqlite3.Connection, msg_id: str) -> tuple[bool, str | None]:
        """(seen before?, the stored reply JSON or None while the command was still under way)."""
        row = conn.execute("SELECT reply FROM inbound WHERE msg_id=?", (msg_id,)).fetchone()
        return (False, None) if row is None else (True, row[0])

    def store(self, conn: sqlite3.Connection, msg_id: str, topic: str, reply: str | None, *, now: datetime) -> None:
        """Remember ``msg_id`` with its reply (``None``: under way), in the caller's transaction."""
        conn.execute(
            "INSERT INTO inbound(msg_id, at, topic, reply) VALUES (?,?,?,?) "
            "ON CONFLICT(msg_id) DO UPDATE SET reply=excluded.reply",
            (msg_id, to_iso(now), topic, reply),
        )

    def prune(self, *, before: datetime) -> int:
        """Forget command ids older than any command could still be accepted (its clock-skew window)."""
        with self._db.transaction() as conn:
            return conn.execute("DELETE FROM inbound WHERE at < ?", (to_iso(before),)).rowcount

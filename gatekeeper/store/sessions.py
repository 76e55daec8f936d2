"""Parking sessions: who is inside, and every change to a session with its event in one commit.

A barrier opens only after :meth:`Sessions.record_decision` returned, i.e. after the commit
reached the disk.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from gatekeeper.rules import Action, Decision, LotState, SessionView, normalise_plate
from gatekeeper.store.db import Database
from gatekeeper.store.events import EventLog
from gatekeeper.store.lists import Tariffs
from gatekeeper.store.records import (
    Clock,
    PaymentAlreadyApplied,
    Recorded,
    StoreError,
    UnknownSession,
    from_iso,
    to_iso,
)
from gatekeeper.store.uploads import UploadQueue

log = logging.getLogger(__name__)

#: The keys every decision event carries; :meth:`Store.record_decision`'s extra data may not replace them.
_DECISION_EVENT_KEYS = frozenset({
    "id", "lot", "lane", "kind", "at", "plate", "session_id", "reason", "message",
    "direction", "open", "plate_read", "confidence", "fee_due", "currency", "image", "source",
    "candidates", "match_distance", "reservation_id",
})


class Sessions:
    """Sessions inside the lot and the decisions, payments and corrections that change them."""

    def __init__(
        self,
        database: Database,
        events: EventLog,
        tariffs: Tariffs,
        uploads: UploadQueue,
        *,
        lot_id: str,
        capacity: int,
        clock: Clock,
    ) -> None:
        self._db = database
        self._events = events
        self._tariffs = tariffs
        self._uploads = uploads
        self.lot_id = lot_id
        self.capacity = capacity
        self.clock = clock

    def inside_sessions(self) -> list[SessionView]:
        rows = self._db.rows(
            "SELECT id, plate, entry_at, status, paid_at, amount_paid, alternates FROM sessions "
            "WHERE status IN ('open','paid') ORDER BY id"
        )
        return [session_view(r) for r in rows]

    def set_alternates(self, session_id: int, alternates: Mapping[str, float]) -> None:
        """Remember other spellings of an open session's plate that its entry evidence supported."""
        payload = json.dumps([[p, round(float(r), 3)] for p, r in alternates.items()]) if alternates else None
        with self._db.transaction() as conn:
            conn.execute("UPDATE sessions SET alternates=? WHERE id=? AND status != 'closed'", (payload, session_id))

    def lot_state(self) -> LotState:
        return LotState(capacity=self.capacity, sessions=tuple(self.inside_sessions()))

    def occupancy(self) -> dict[str, int]:
        occupied = len(self.inside_sessions())
        return {"capacity": self.capacity, "occupied": occupied, "free": max(0, self.capacity - occupied)}

    def session(self, session_id: int) -> dict[str, Any]:
        rows = self._db.rows("SELECT * FROM sessions WHERE id=?", (session_id,))
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
        return self._db.rows(sql, params)

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
        with self._db.transaction() as conn:
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
            fields["currency"] = self._tariffs.tariff().currency
            event_id = self._events.append(
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
                self._events.enqueue_occupancy(conn, now)
            if upload and photo:
                self._uploads.add(conn, event_id=event_id, session_id=session_id, path=photo, at=at)
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
        command_id: str | None = None,
    ) -> dict[str, Any]:
        """Mark a session paid: its exit grace starts at ``paid_at``. Payments with different references add up;
        a reference already applied to this session raises :class:`PaymentAlreadyApplied` (with the first result)."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise StoreError(f"amount must be whole minor units >= 0, got {amount!r}")
        now = now or self.clock()
        paid_at = paid_at or now
        with self._db.transaction() as conn:
            row = conn.execute("SELECT status, plate FROM sessions WHERE id=?", (session_id,)).fetchone()
            if row is None:
                raise UnknownSession(f"no session {session_id}")
            if reference:
                first = conn.execute(
                    "SELECT result FROM payment_refs WHERE session_id=? AND reference=?", (session_id, reference)
                ).fetchone()
                if first is not None:
                    raise PaymentAlreadyApplied(
                        f"payment {reference} was already applied to session {session_id}; not applied again",
                        first=json.loads(first[0]),
                    )
            if row[0] == "closed":
                raise StoreError(f"session {session_id} is closed (the vehicle has left)")
            conn.execute(
                "UPDATE sessions SET status='paid', paid_at=?, amount_paid=amount_paid+?, "
                "payment_ref=COALESCE(?, payment_ref) WHERE id=?",
                (to_iso(paid_at), amount, reference, session_id),
            )
            total = conn.execute("SELECT amount_paid FROM sessions WHERE id=?", (session_id,)).fetchone()[0]
            if reference:
                result = {"session_id": session_id, "amount": amount, "reference": reference,
                          "paid_at": to_iso(paid_at), "amount_paid": total, "command_id": command_id}
                conn.execute(
                    "INSERT INTO payment_refs(session_id, reference, command_id, at, result) VALUES (?,?,?,?,?)",
                    (session_id, reference, command_id, to_iso(now), json.dumps(result)),
                )
            self._events.append(
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
        with self._db.transaction() as conn:
            row = conn.execute("SELECT plate FROM sessions WHERE id=?", (session_id,)).fetchone()
            if row is None:
                raise UnknownSession(f"no session {session_id}")
            # A technician's plate replaces the camera's spellings too (alternates were the entry read's).
            conn.execute("UPDATE sessions SET plate=?, plate_read=?, alternates=NULL WHERE id=?", (key, plate, session_id))
            self._events.append(
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
        with self._db.transaction() as conn:
            row = conn.execute("SELECT status, plate FROM sessions WHERE id=?", (session_id,)).fetchone()
            if row is None:
                raise UnknownSession(f"no session {session_id}")
            if row[0] == "open":
                raise StoreError(f"session {session_id} is open and unpaid: pay or close it before deleting")
            conn.execute("UPDATE uploads SET session_id=NULL WHERE session_id=?", (session_id,))
            conn.execute("DELETE FROM sessions WHERE id=?", (session_id,))
            self._events.append(
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
                self._events.enqueue_occupancy(conn, now)


def session_view(row: Mapping[str, Any]) -> SessionView:
    """The rules' view of a ``sessions`` row."""
    return SessionView(
        id=row["id"],
        plate=row["plate"],
        entry_at=from_iso(row["entry_at"]),  # type: ignore[arg-type]
        status=row["status"],
        paid_at=from_iso(row["paid_at"]),
        amount_paid=row["amount_paid"] or 0,
        alternates=_alternates(row.get("alternates")),
    )


def _alternates(text: str | None) -> tuple[tuple[str, float], ...]:
    """The stored alternates column; a damaged value counts as none (they only help a match)."""
    if not text:
        return ()
    try:
        return tuple((str(p), float(r)) for p, r in json.loads(text))
    except (ValueError, TypeError):
        log.warning("session alternates %r unreadable; ignored", text[:80])
        return ()

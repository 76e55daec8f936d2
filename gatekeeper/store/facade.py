"""The lane's durable state behind one object: :class:`Store`.

Every change is one transaction that also appends its event to the append-only ``events``
log and its message(s) to the ``outbox``: a decision is either wholly on disk or not at all,
and the cloud learns of exactly what happened. A barrier opens only after
:meth:`Store.record_decision` returned, i.e. after the commit reached the disk.

The work is done by one small class per table family, sharing one connection
(:mod:`~gatekeeper.store.db`): :class:`~gatekeeper.store.sessions.Sessions`,
:class:`~gatekeeper.store.events.EventLog` and :class:`~gatekeeper.store.events.Outbox`,
:class:`~gatekeeper.store.lists.AccessLists` and :class:`~gatekeeper.store.lists.Tariffs`,
:class:`~gatekeeper.store.uploads.UploadQueue`. ``Store`` only wires them and passes calls on,
so callers keep one object.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

from gatekeeper.rules import Decision, ListEntry, LotState, Reservation, SessionView, Tariff
from gatekeeper.schedules import WeeklySchedule
from gatekeeper.store.db import Database, secure_dir
from gatekeeper.store.events import EventLog, InboundLog, Outbox
from gatekeeper.store.lists import AccessLists, Tariffs, tariff_from_config
from gatekeeper.store.records import Clock, OutboxRow, Recorded, utcnow
from gatekeeper.store.storage import StorageAlarm
from gatekeeper.store.sessions import Sessions
from gatekeeper.store.uploads import UploadQueue


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
        create: bool = True,
        evidence: Sequence[Path] = (),
        timezone: tzinfo = UTC,
    ) -> None:
        self.lot_id = lot_id
        self.capacity = capacity
        self.clock = clock
        self.database = Database(path, create=create, lot_id=lot_id, evidence=evidence)
        self.path = self.database.path
        self.db = self.database.db  # the sqlite_utils.Database, for tools and tests
        self.log = EventLog(self.database, lot_id=lot_id, capacity=capacity, clock=clock)
        self.outbox = Outbox(self.database, clock=clock)
        self.inbound = InboundLog(self.database, clock=clock)
        self.tariffs = Tariffs(self.database, self.log, default=default_tariff or Tariff(), clock=clock)
        self.lists = AccessLists(self.database, self.log, clock=clock, timezone=timezone)
        self.uploads = UploadQueue(self.database, clock=clock)
        self.sessions_table = Sessions(
            self.database, self.log, self.tariffs, self.uploads, lot_id=lot_id, capacity=capacity, clock=clock
        )
        self.storage = StorageAlarm(self.database, self.log)

    @classmethod
    def from_settings(cls, settings: Any, *, clock: Clock = utcnow, create: bool = True) -> "Store":
        """Open the store a :class:`gatekeeper.config.Settings` describes.

        The data directory is made private (0700, or 0750 when it has a group); a missing or empty
        database next to a lot's other state (photos, control socket) is refused, not silently replaced.
        """
        storage = settings.storage
        secure_dir(Path(storage.data_dir))
        evidence = [Path(storage.photos_path), Path(settings.control_socket_path)]
        return cls(
            storage.database_path,
            lot_id=settings.site.lot_id,
            capacity=settings.site.capacity,
            default_tariff=tariff_from_config(settings),
            clock=clock,
            create=create,
            evidence=evidence,
            timezone=settings.site.tz,
        )

    @property
    def created(self) -> bool:
        """This open created a new, empty lot database."""
        return self.database.created

    @property
    def storage_fault(self) -> str | None:
        """What is wrong with the disk (``"disk full"``), or None."""
        return self.database.fault

    def check_storage(self) -> bool:
        """Probe the disk during a fault (a tiny write); True when healthy. Recovery records the alarm."""
        return self.database.fault is None or self.database.probe()

    # -- plumbing ------------------------------------------------------------

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable unit of work; nests (inner blocks join the outer)."""
        with self.database.transaction() as conn:
            yield conn

    @property
    def schema_version(self) -> int:
        return self.database.schema_version

    def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        return self.database.rows(sql, params)

    # -- events and outbox -----------------------------------------------------

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
        return self.log.record(
            kind, lane=lane, reason=reason, message=message, plate=plate, session_id=session_id,
            data=data, publish=publish, now=now,
        )

    def enqueue(
        self, topic: str, payload: Mapping[str, Any], *, retain: bool = False, qos: int = 1,
        correlation: bytes | None = None,
    ) -> None:
        """Queue a message that is not an event (a retained gate state, a command reply)."""
        with self.database.transaction() as conn:
            self.log.enqueue(conn, topic, payload, retain=retain, qos=qos, now=self.clock(), correlation=correlation)

    def events(
        self,
        *,
        tail: int | None = None,
        after_seq: int = 0,
        plate: str | None = None,
        since: datetime | None = None,
        kinds: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The decision log, oldest first."""
        return self.log.events(tail=tail, after_seq=after_seq, plate=plate, since=since, kinds=kinds)

    def outbox_pending(self, limit: int = 100, after_id: int = 0) -> list[OutboxRow]:
        return self.outbox.pending(limit, after_id)

    def outbox_mark_sent(self, ids: Sequence[int], *, now: datetime | None = None) -> None:
        self.outbox.mark_sent(ids, now=now)

    def outbox_note_attempt(self, ids: Sequence[int]) -> None:
        self.outbox.note_attempt(ids)

    def outbox_stats(self) -> dict[str, Any]:
        return self.outbox.stats()

    def prune_outbox(self, *, sent_before: datetime) -> int:
        return self.outbox.prune(sent_before=sent_before)

    def remember_inbound(self, msg_id: str, topic: str, *, now: datetime | None = None) -> bool:
        """Record a processed command id; False when it was seen before (a replay)."""
        return self.inbound.remember(msg_id, topic, now=now)

    def prune_inbound(self, *, before: datetime) -> int:
        return self.inbound.prune(before=before)

    # -- sessions --------------------------------------------------------------

    def inside_sessions(self) -> list[SessionView]:
        return self.sessions_table.inside_sessions()

    def set_alternates(self, session_id: int, alternates: Mapping[str, float]) -> None:
        self.sessions_table.set_alternates(session_id, alternates)

    def lot_state(self) -> LotState:
        return self.sessions_table.lot_state()

    def occupancy(self) -> dict[str, int]:
        return self.sessions_table.occupancy()

    def session(self, session_id: int) -> dict[str, Any]:
        return self.sessions_table.session(session_id)

    def sessions(
        self, *, status: Sequence[str] | None = None, plate: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        return self.sessions_table.sessions(status=status, plate=plate, limit=limit)

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
        """Make a lane decision durable: session change, event and outbox, one commit
        (see :meth:`Sessions.record_decision`)."""
        return self.sessions_table.record_decision(
            decision, lane=lane, direction=direction, plate_read=plate_read, confidence=confidence,
            photo=photo, source=source, upload=upload, data=data, now=now,
        )

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
        """Mark a session paid: its exit grace starts at ``paid_at``. Payments add up, but a reference already
        applied to the session raises :class:`PaymentAlreadyApplied` (see :meth:`Sessions.pay_session`)."""
        return self.sessions_table.pay_session(
            session_id, amount=amount, reference=reference, paid_at=paid_at, by=by, now=now, command_id=command_id
        )

    def edit_plate(self, session_id: int, plate: str, *, by: str = "technician") -> dict[str, Any]:
        return self.sessions_table.edit_plate(session_id, plate, by=by)

    def delete_session(self, session_id: int, *, by: str = "technician") -> None:
        self.sessions_table.delete_session(session_id, by=by)

    # -- lists, reservations, tariff --------------------------------------------

    def list_entries(self) -> list[ListEntry]:
        return self.lists.list_entries()

    def set_list_entries(
        self, kind: Literal["allow", "deny"], entries: Sequence[Mapping[str, Any]], *, replace: bool = False
    ) -> int:
        return self.lists.set_list_entries(kind, entries, replace=replace)

    def remove_list_entries(self, kind: str, plates: Sequence[str]) -> int:
        return self.lists.remove_list_entries(kind, plates)

    def list_rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        return self.lists.list_rows(kind)

    def reservations(self) -> list[Reservation]:
        return self.lists.reservations()

    def reservation_rows(self) -> list[dict[str, Any]]:
        return self.lists.reservation_rows()

    def upsert_reservation(
        self, reservation_id: str, plate: str, valid_from: datetime, valid_until: datetime, note: str | None = None,
        schedule: WeeklySchedule | Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.lists.upsert_reservation(reservation_id, plate, valid_from, valid_until, note, schedule)

    def delete_reservation(self, reservation_id: str) -> bool:
        return self.lists.delete_reservation(reservation_id)

    def tariff(self) -> Tariff:
        return self.tariffs.tariff()

    def set_default_tariff(self, tariff: Tariff) -> None:
        self.tariffs.set_default_tariff(tariff)

    def set_tariff(self, tariff: Tariff, *, by: str = "cloud") -> None:
        self.tariffs.set_tariff(tariff, by=by)

    # -- uploads -------------------------------------------------------------------

    def uploads_due(self, *, now: datetime | None = None, limit: int = 20) -> list[dict[str, Any]]:
        return self.uploads.due(now=now, limit=limit)

    def upload_done(self, upload_id: int) -> None:
        self.uploads.done(upload_id)

    def upload_failed(self, upload_id: int, error: str, *, next_try_at: datetime) -> None:
        self.uploads.failed(upload_id, error, next_try_at=next_try_at)

"""What the cloud sends down and the rules read: allow/deny lists, reservations, the tariff."""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import asdict
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal, Mapping, Sequence

from gatekeeper.rules import ListEntry, Reservation, Tariff, normalise_plate
from gatekeeper.schedules import ScheduleError, WeeklySchedule, from_wire
from gatekeeper.store.db import Database
from gatekeeper.store.events import EventLog
from gatekeeper.store.records import Clock, StoreError, from_iso, to_iso


class AccessLists:
    """Allow and deny lists, and reservations.

    Weekly schedules are stored as their wire JSON (NULL = always) and read in ``timezone``, the lot's.
    """

    def __init__(self, database: Database, events: EventLog, *, clock: Clock, timezone: tzinfo = UTC) -> None:
        self._db = database
        self._events = events
        self.clock = clock
        self.timezone = timezone

    def list_entries(self) -> list[ListEntry]:
        return [
            ListEntry(r["plate"], r["kind"], from_iso(r["valid_from"]), from_iso(r["valid_until"]),
                      self._schedule(r["schedule"]))
            for r in self._db.rows("SELECT * FROM lists ORDER BY kind, plate")
        ]

    def list_rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The stored rows (for the CLI), the schedule as its rules; allow before deny, by plate."""
        rows = self._db.rows("SELECT plate, kind, valid_from, valid_until, schedule, note, updated_at FROM lists "
                             "WHERE ? IS NULL OR kind=? ORDER BY kind, plate", (kind, kind))
        return [{**r, "schedule": json.loads(r["schedule"]) if r["schedule"] else None} for r in rows]

    def set_list_entries(
        self, kind: Literal["allow", "deny"], entries: Sequence[Mapping[str, Any]], *, replace: bool = False
    ) -> int:
        """Add/update entries (``plate``, optional ``valid_from``/``valid_until``/``note``, and for the allow
        list ``schedule``: a :class:`WeeklySchedule` or its wire rules). An entry is replaced whole: one
        without a schedule holds always again."""
        if kind not in ("allow", "deny"):
            raise StoreError(f"list kind must be allow or deny, got {kind!r}")
        now = to_iso(self.clock())
        rows = []
        for e in entries:
            key = normalise_plate(str(e.get("plate", "")))
            if not key:
                raise StoreError(f"list entry without a plate: {dict(e)!r}")
            schedule = _schedule_json(e.get("schedule"), f"{kind} list entry {key}")
            if schedule is not None and kind != "allow":
                raise StoreError(f"deny list entry {key}: only allow-list entries carry a schedule")
            vf, vu = e.get("valid_from"), e.get("valid_until")
            rows.append(
                (key, kind, to_iso(vf) if isinstance(vf, datetime) else vf,
                 to_iso(vu) if isinstance(vu, datetime) else vu, schedule, e.get("note"), now)
            )
        with self._db.transaction() as conn:
            if replace:
                conn.execute("DELETE FROM lists WHERE kind=?", (kind,))
            conn.executemany(
                "INSERT INTO lists(plate, kind, valid_from, valid_until, schedule, note, updated_at) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT(plate, kind) DO UPDATE SET valid_from=excluded.valid_from, "
                "valid_until=excluded.valid_until, schedule=excluded.schedule, note=excluded.note, "
                "updated_at=excluded.updated_at",
                rows,
            )
            self._events.append(
                conn, "list_updated", now=self.clock(), reason=f"{kind}_list",
                message=f"{kind} list: {len(rows)} entr{'y' if len(rows) == 1 else 'ies'}"
                + (" (replaced)" if replace else ""), publish=False,
            )
        return len(rows)

    def remove_list_entries(self, kind: str, plates: Sequence[str]) -> int:
        with self._db.transaction() as conn:
            n = 0
            for p in plates:
                n += conn.execute(
                    "DELETE FROM lists WHERE kind=? AND plate=?", (kind, normalise_plate(p))
                ).rowcount
            return n

    def reservations(self) -> list[Reservation]:
        return [
            Reservation(r["id"], r["plate"], from_iso(r["valid_from"]),  # type: ignore[arg-type]
                        from_iso(r["valid_until"]), self._schedule(r["schedule"]))  # type: ignore[arg-type]
            for r in self._db.rows("SELECT * FROM reservations ORDER BY valid_from")
        ]

    def reservation_rows(self) -> list[dict[str, Any]]:
        """The stored reservations (for the CLI), the schedule as its rules."""
        rows = self._db.rows("SELECT id, plate, valid_from, valid_until, schedule, note, updated_at FROM reservations "
                             "ORDER BY valid_from, id")
        return [{**r, "schedule": json.loads(r["schedule"]) if r["schedule"] else None} for r in rows]

    def upsert_reservation(
        self, reservation_id: str, plate: str, valid_from: datetime, valid_until: datetime, note: str | None = None,
        schedule: WeeklySchedule | Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Create or replace one reservation; with ``schedule`` only at those weekly hours within its window."""
        key = normalise_plate(plate)
        if not key or not reservation_id:
            raise StoreError("a reservation needs an id and a plate")
        if valid_until <= valid_from:
            raise StoreError("reservation valid_until must be after valid_from")
        rules = _schedule_json(schedule, f"reservation {reservation_id}")
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO reservations(id, plate, valid_from, valid_until, schedule, note, updated_at) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET plate=excluded.plate, "
                "valid_from=excluded.valid_from, valid_until=excluded.valid_until, schedule=excluded.schedule, "
                "note=excluded.note, updated_at=excluded.updated_at",
                (reservation_id, key, to_iso(valid_from), to_iso(valid_until), rules, note, to_iso(self.clock())),
            )

    def delete_reservation(self, reservation_id: str) -> bool:
        with self._db.transaction() as conn:
            return conn.execute("DELETE FROM reservations WHERE id=?", (reservation_id,)).rowcount > 0

    def _schedule(self, text: str | None) -> WeeklySchedule | None:
        return None if not text else _read_schedule(text, self.timezone)


@functools.lru_cache(maxsize=4096)
def _read_schedule(text: str, tz: tzinfo) -> WeeklySchedule:
    """Stored rules -> schedule, once per distinct text: the lanes read the lists at every decision, and most
    entries share a few schedules (a schedule is immutable, so sharing one is safe)."""
    return from_wire(json.loads(text), tz=tz)


def _schedule_json(schedule: Any, what: str) -> str | None:
    """A schedule (a :class:`WeeklySchedule` or its wire rules) as the JSON stored; None = always."""
    if schedule is None:
        return None
    if not isinstance(schedule, WeeklySchedule):
        try:
            schedule = from_wire(schedule, tz=UTC)  # the zone is the lot's when read; here only the rules count
        except ScheduleError as exc:
            raise StoreError(f"{what}: schedule{exc if str(exc).startswith('[') else ': ' + str(exc)}") from None
    return json.dumps(schedule.to_wire(), separators=(",", ":"))


class Tariffs:
    """The tariff in force: the cloud's when it sent one, else the configuration's default."""

    def __init__(self, database: Database, events: EventLog, *, default: Tariff, clock: Clock) -> None:
        self._db = database
        self._events = events
        self._default = default
        self._lock = threading.Lock()
        self.clock = clock

    def tariff(self) -> Tariff:
        """The cloud's tariff when it sent one, else the default (the config file's)."""
        rows = self._db.rows("SELECT data FROM tariff WHERE id=1")
        if not rows:
            with self._lock:
                return self._default
        return Tariff(**json.loads(rows[0]["data"]))

    def set_default_tariff(self, tariff: Tariff) -> None:
        """Replace the fallback tariff (the config file's, e.g. after a reload); a cloud tariff still wins.

        Not stored: the default comes from the configuration at every start.
        """
        if not isinstance(tariff, Tariff):
            raise TypeError(f"expected a Tariff, got {type(tariff).__name__}")
        with self._lock:
            self._default = tariff

    def set_tariff(self, tariff: Tariff, *, by: str = "cloud") -> None:
        now = self.clock()
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO tariff(id, data, updated_at, updated_by) VALUES (1,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET data=excluded.data, updated_at=excluded.updated_at, "
                "updated_by=excluded.updated_by",
                (json.dumps(asdict(tariff)), to_iso(now), by),
            )
            self._events.append(
                conn, "tariff_updated", now=now, reason=f"tariff_by_{by}", message="tariff updated",
                data={"tariff": asdict(tariff), "by": by}, publish=False,
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

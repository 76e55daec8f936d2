"""The storage alarm: a full (or failing) disk becomes one ``alarm`` event, queued once it can be written.

While the disk refuses writes nothing can be queued, so the alarm is recorded at the first commit
that succeeds again, together with its ``alarm_cleared``: the cloud learns when the fault began and
ended, and nothing committed before it was lost (SQLite rolled the failed transactions back whole).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from gatekeeper.store.db import Database
from gatekeeper.store.events import EventLog
from gatekeeper.store.records import to_iso

log = logging.getLogger(__name__)


class StorageAlarm:
    """Hooks into :class:`Database` fault/recovery and writes the alarm events."""

    def __init__(self, database: Database, events: EventLog) -> None:
        self._db = database
        self._events = events
        self.faults = 0
        database.on_fault = self._on_fault
        database.on_recover = self._on_recover

    def _on_fault(self, what: str) -> None:
        self.faults += 1

    def _on_recover(self, what: str, since: datetime) -> None:
        now = datetime.now(UTC)
        seconds = round((now - since).total_seconds(), 1)
        data = {"fault": what, "since": to_iso(since), "until": to_iso(now), "seconds": seconds}
        # A StorageFault here means the disk is still full: the Database keeps the fault and tries again later.
        with self._db.transaction() as conn:
            self._events.append(conn, "alarm", now=now, reason="storage_fault",
                                message=f"storage fault ({what}) from {to_iso(since)}: lanes refused "
                                        "vehicles they could not record", data=data)
            self._events.append(conn, "alarm_cleared", now=now, reason="storage_ok",
                                message=f"storage works again after {seconds} s", data=data)

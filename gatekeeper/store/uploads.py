"""The queue of decision photos waiting to be uploaded to the cloud."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from gatekeeper.store.db import Database
from gatekeeper.store.records import Clock, to_iso


class UploadQueue:
    """One row per photo; a failed upload is retried at ``next_try_at``."""

    def __init__(self, database: Database, *, clock: Clock) -> None:
        self._db = database
        self.clock = clock

    def add(self, conn: sqlite3.Connection, *, event_id: str, session_id: int | None, path: str, at: str) -> None:
        """Queue a photo inside ``conn``'s transaction (the decision's own)."""
        conn.execute(
            "INSERT INTO uploads(event_id, session_id, path, created_at, next_try_at) VALUES (?,?,?,?,?)",
            (event_id, session_id, path, at, at),
        )

    def due(self, *, now: datetime | None = None, limit: int = 20) -> list[dict[str, Any]]:
        return self._db.rows(
            "SELECT * FROM uploads WHERE uploaded_at IS NULL AND next_try_at <= ? ORDER BY id LIMIT ?",
            (to_iso(now or self.clock()), limit),
        )

    def done(self, upload_id: int) -> None:
        with self._db.transaction() as conn:
            conn.execute("UPDATE uploads SET uploaded_at=?, last_error=NULL WHERE id=?", (to_iso(self.clock()), upload_id))

    def failed(self, upload_id: int, error: str, *, next_try_at: datetime) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE uploads SET attempts=attempts+1, last_error=?, next_try_at=? WHERE id=?",
                (error[:500], to_iso(next_try_at), upload_id),
            )

"""The SQLite file (WAL, synchronous=FULL): connection, transactions, schema and migrations.

Writes use plain SQL inside explicit ``BEGIN IMMEDIATE`` transactions
(sqlite-utils' insert helpers commit on their own, which would split a
transaction); sqlite-utils builds the schema and serves the queries.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import sqlite_utils

from gatekeeper.store.records import StoreError

SCHEMA_VERSION = 1


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


class Database:
    """One connection and one lock, shared by the store's table families. Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self.db = sqlite_utils.Database(conn)
        self.lock = threading.RLock()
        self._depth = 0
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        self._migrate()

    def close(self) -> None:
        with self.lock:
            self.db.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable unit of work; nests (inner blocks join the outer)."""
        with self.lock:
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

    def rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.db.query(sql, params))

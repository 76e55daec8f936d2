"""The SQLite file (WAL, synchronous=FULL): connection, transactions, schema and migrations.

Writes use plain SQL inside explicit ``BEGIN IMMEDIATE`` transactions
(sqlite-utils' insert helpers commit on their own, which would split a
transaction); sqlite-utils builds the schema and serves the queries.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import sqlite_utils

from gatekeeper.store.records import StorageFault, StoreError

log = logging.getLogger(__name__)

#: SQLite primary result codes that mean "the disk, not the request": full, I/O error, cannot open.
_STORAGE_CODES = {13: "disk full", 10: "I/O error", 14: "cannot open"}

SCHEMA_VERSION = 4


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


def _migrate_2(db: sqlite_utils.Database) -> None:
    """Money-safe commands: stored replies, payment references applied once, reply correlation, message seq."""
    db.execute("ALTER TABLE inbound ADD COLUMN reply TEXT")  # the reply JSON; NULL while an open is under way
    db.execute("ALTER TABLE outbox ADD COLUMN correlation BLOB")
    db["payment_refs"].create(
        {"session_id": int, "reference": str, "command_id": str, "at": str, "result": str},
        pk=("session_id", "reference"),
        not_null={"session_id", "reference", "at", "result"},
    )
    db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('out_seq', '0')")


def _migrate_3(db: sqlite_utils.Database) -> None:
    """Weekly schedules on allow-list entries and reservations: JSON rules, NULL = always (every older row)."""
    db.execute("ALTER TABLE lists ADD COLUMN schedule TEXT")
    db.execute("ALTER TABLE reservations ADD COLUMN schedule TEXT")


def _migrate_4(db: sqlite_utils.Database) -> None:
    """Other spellings an entry's evidence supported (JSON ``[[plate, log ratio], ...]``; NULL: none)."""
    db.execute("ALTER TABLE sessions ADD COLUMN alternates TEXT")


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_migrate_1, _migrate_2, _migrate_3, _migrate_4)


def storage_error(exc: BaseException) -> str | None:
    """What is wrong with the disk, when ``exc`` is SQLite saying the disk (not the SQL) failed."""
    if not isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) or isinstance(exc, sqlite3.IntegrityError):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return _STORAGE_CODES.get(code & 0xFF)
    text = str(exc).lower()
    return "disk full" if "disk is full" in text or "database or disk is full" in text else None


def lot_marker(path: Path) -> Path:
    """The file that says a lot's database was created here (and when): ``gatekeeper.db`` -> ``gatekeeper.db.lot``."""
    return path.with_name(path.name + ".lot")


def secure_dir(directory: Path) -> None:
    """The data directory: 0700 when we create it; an existing one loses its 'other' bits (0750 at most)."""
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask; say it exactly
        return
    info = directory.stat()
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o027 and info.st_uid == os.geteuid():  # not ours (an operator reading): leave it
        try:
            os.chmod(directory, mode & 0o750)
        except OSError as exc:
            log.warning("could not make %s private: %s", directory, exc)


def _secure_file(path: Path) -> None:
    """Database files: 0600, or 0640 when the operators' group was given read access; never more."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(info.st_mode)
    wanted = 0o600 | (mode & 0o040)
    if mode != wanted and info.st_uid == os.geteuid():  # an operator's read-only open leaves it alone
        try:
            os.chmod(path, wanted)
        except OSError as exc:
            log.warning("could not make %s private: %s", path, exc)


class Database:
    """One connection and one lock, shared by the store's table families. Thread-safe.

    A disk that is full (or failing) turns into :class:`StorageFault` and sets :attr:`fault`
    until the next transaction commits again; ``on_recover`` is then called once.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        lot_id: str = "",
        evidence: Iterable[Path] = (),
    ) -> None:
        self.path = Path(path)
        if not self.path.parent.exists():
            secure_dir(self.path.parent)
        self.created = self._check_new_lot(create=create, lot_id=lot_id, evidence=evidence)
        if self.created:
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        _secure_file(self.path)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self.db = sqlite_utils.Database(conn)
        self.lock = threading.RLock()
        self._depth = 0
        self.fault: str | None = None
        self.fault_since: datetime | None = None
        self._recovering = False
        self.on_fault: Callable[[str], None] | None = None
        self.on_recover: Callable[[str, datetime], None] | None = None
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        self._migrate()
        for suffix in ("-wal", "-shm"):
            _secure_file(self.path.with_name(self.path.name + suffix))
        if self.created or not lot_marker(self.path).exists():
            # An older install has no marker yet: it gets one now, so that losing its database is noticed too.
            marker = {"lot_id": lot_id, "database": self.path.name,
                      "created_at" if self.created else "first_seen_at": datetime.now(UTC).isoformat(timespec="seconds")}
            try:
                fd = os.open(lot_marker(self.path), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(json.dumps(marker) + "\n")
                _secure_file(lot_marker(self.path))
            except OSError as exc:  # e.g. an operator without write access: the daemon writes it
                log.debug("lot marker not written: %s", exc)
        if self.created:
            log.info("created a new, empty lot database for lot %r at %s", lot_id, self.path)

    def _check_new_lot(self, *, create: bool, lot_id: str, evidence: Iterable[Path]) -> bool:
        """True when a new lot database is to be created; :class:`StoreError` when that would hide a lost one."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = None
        if size:
            return False
        what = "missing" if size is None else "empty (0 bytes)"
        traces = [p for p in (lot_marker(self.path), self.path.with_name(self.path.name + "-wal")) if p.exists()]
        for path in evidence:
            if path.is_socket() or path.is_file() or (path.is_dir() and any(path.iterdir())):
                traces.append(path)
        if traces:
            raise StoreError(
                f"the database {self.path} is {what}, but this data directory already holds a lot's state "
                f"({', '.join(str(t) for t in traces)}): refusing to start a new, empty lot over it. Restore the "
                f"database from a backup, or move the old state away and create the lot with `gatekeeper init`."
            )
        if not create:
            raise StoreError(f"no lot database at {self.path}: create it with `gatekeeper init` or `gatekeeper run`")
        return True

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
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise self._storage_fault(exc) from None
            self._depth = 1
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.DatabaseError:
                        log.debug("rollback failed (SQLite rolled back already)")
                if isinstance(exc, sqlite3.DatabaseError) and storage_error(exc):
                    raise self._storage_fault(exc) from None
                raise
            finally:
                self._depth = 0
            if self.fault is not None:
                self._recovered()

    def _storage_fault(self, exc: sqlite3.DatabaseError) -> Exception:
        """The error to raise for ``exc``: a :class:`StorageFault` (and the fault noted) when the disk failed."""
        what = storage_error(exc)
        if what is None:
            return exc
        if self.fault is None:
            self.fault, self.fault_since = what, datetime.now(UTC)
            log.error("STORAGE FAULT: %s (%s): nothing new is recorded until it clears", what, exc)
            if self.on_fault is not None:
                self.on_fault(what)
        return StorageFault(f"storage fault: {what} ({self.path}); nothing was recorded")

    def _recovered(self) -> None:
        """A commit succeeded during a fault: the fault is over once ``on_recover`` (the alarm) commits too."""
        if self._recovering:
            return
        fault, since = self.fault, self.fault_since
        self._recovering = True
        try:
            if self.on_recover is not None and fault is not None and since is not None:
                self.on_recover(fault, since)
        except StorageFault:
            return  # still full: the fault (and its start) stand
        finally:
            self._recovering = False
        self.fault, self.fault_since = None, None
        log.warning("storage fault cleared (%s since %s)", fault, since)

    def probe(self) -> bool:
        """A tiny write, to notice that a storage fault cleared without waiting for traffic. True when healthy."""
        try:
            with self.transaction() as conn:
                conn.execute("UPDATE meta SET value=value WHERE key='schema_version'")
        except StorageFault:
            return False
        return self.fault is None

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

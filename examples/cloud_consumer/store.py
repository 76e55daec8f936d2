"""The consumer's durable store: one SQLite file that every consumer process of a group shares.

A batch of received messages is committed in one transaction (WAL, ``synchronous=FULL``) before any
of them is acknowledged to the broker. Deduplication is by key, in the same transaction:

* an event by its ``id`` (a re-delivery repeats the same bytes);
* any message by ``(lot, id, seq)`` (a command's reply sent again as a ``repeat`` has a new seq).

Per lot, ``lots.contiguous`` is the highest seq below which nothing is missing (see gaps.py).
Commands the cloud sent are kept with the reply that matched them by command id.

A real cloud would put the same tables (and ``INSERT ... ON CONFLICT DO NOTHING``) in its own
database; nothing here depends on SQLite beyond the SQL.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from examples.cloud_consumer import gaps
from examples.cloud_consumer.topics import Message

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    rowid INTEGER PRIMARY KEY,
    lot TEXT NOT NULL,
    seq INTEGER,
    msg_id TEXT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at REAL NOT NULL,
    consumer TEXT NOT NULL
);
-- NULLs are distinct: a reply with seq null (never queued by the edge) is never taken for a duplicate
CREATE UNIQUE INDEX IF NOT EXISTS messages_key ON messages(lot, msg_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS events_id ON messages(msg_id) WHERE kind = 'event';
CREATE INDEX IF NOT EXISTS messages_seq ON messages(lot, seq);
CREATE TABLE IF NOT EXISTS lots (
    lot TEXT PRIMARY KEY,
    contiguous INTEGER NOT NULL,
    highest INTEGER NOT NULL,
    gap_since REAL,
    status TEXT,
    status_at REAL
);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    lot TEXT NOT NULL,
    name TEXT NOT NULL,
    fields TEXT NOT NULL,
    sent_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_sent_at REAL,
    reply_at REAL,
    reply_status TEXT,
    reply_error TEXT,
    reply_seq INTEGER,
    reply TEXT
);
CREATE TABLE IF NOT EXISTS malformed (
    rowid INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    error TEXT NOT NULL,
    received_at REAL NOT NULL,
    consumer TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    consumer TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (consumer, name)
);
CREATE TABLE IF NOT EXISTS consumers (
    client_id TEXT PRIMARY KEY,
    pid INTEGER,
    subscribed_at REAL,
    filters INTEGER
);
"""


@dataclass(frozen=True)
class Received:
    """One delivery: parsed (``message``) or not (``error``), and whether it was a retained copy."""

    topic: str
    payload: bytes
    retained: bool
    received_at: float
    message: Message | None = None
    error: str | None = None


@dataclass(frozen=True)
class BatchResult:
    stored: int
    duplicates: int
    retained_copies: int
    malformed: int
    replies_matched: int


@dataclass(frozen=True)
class Gap:
    """Seqs of ``lot`` above ``contiguous`` not received; open since ``since`` (epoch seconds)."""

    lot: str
    contiguous: int
    highest: int
    missing: list[int]
    since: float


@dataclass(frozen=True)
class CommandRecord:
    id: str
    lot: str
    name: str
    fields: dict[str, Any]
    sent_at: float
    attempts: int
    reply_at: float | None
    reply_status: str | None
    reply_error: str | None
    reply: dict[str, Any] | None


class ConsumerStore:
    """All the consumer's writes and reads. Thread-safe; several processes may share the file."""

    def __init__(self, path: str | Path, *, consumer: str = "consumer", clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.consumer = consumer
        self.clock = clock
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        with self._transaction() as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "ConsumerStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> "_Tx":
        return _Tx(self._conn, self._lock)

    # -- lots ---------------------------------------------------------------------------

    def add_lots(self, lots: Iterable[str], *, after_seq: int = 0) -> None:
        """Register lots whose messages are expected from ``after_seq + 1`` on (a new lot: 0).

        A lot first seen without being registered starts at the first seq received (gaps before it
        cannot be seen)."""
        with self._transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO lots(lot, contiguous, highest) VALUES (?,?,?)",
                             [(lot, after_seq, after_seq) for lot in lots])

    def note_subscribed(self, client_id: str, *, pid: int, filters: int) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO consumers(client_id, pid, subscribed_at, filters) VALUES (?,?,?,?) "
                         "ON CONFLICT(client_id) DO UPDATE SET pid=excluded.pid, subscribed_at=excluded.subscribed_at, "
                         "filters=excluded.filters", (client_id, pid, self.clock(), filters))

    def subscribed(self) -> dict[str, float]:
        """Consumer client id -> when it last completed its subscriptions."""
        with self._lock:
            rows = self._conn.execute("SELECT client_id, subscribed_at FROM consumers").fetchall()
        return {r[0]: r[1] for r in rows if r[1] is not None}

    # -- a batch of deliveries -------------------------------------------------------------

    def save_batch(self, batch: Sequence[Received]) -> BatchResult:
        """Store a batch in ONE transaction; after it returns the batch may be acknowledged."""
        outcomes: dict[str, int] = {"stored": 0, "duplicates": 0, "retained_copies": 0, "malformed": 0,
                                    "status": 0, "replies_matched": 0}
        lowest: dict[str, int] = {}  # lot -> lowest new seq in this batch
        with self._transaction() as conn:
            for item in batch:
                outcome = self._save_one(conn, item)
                outcomes[outcome] += 1
                msg = item.message
                if outcome == "stored" and msg is not None:
                    if msg.seq is not None:
                        lowest[msg.lot] = min(lowest.get(msg.lot, msg.seq), msg.seq)
                    if msg.kind == "reply":
                        outcomes["replies_matched"] += self._match_reply(conn, msg, item.received_at)
            now = self.clock()
            for lot, seq in lowest.items():
                self._advance(conn, lot, seq, now)
            counts = {k: v for k, v in outcomes.items() if k != "replies_matched"}
            self._count(conn, deliveries=len(batch), batches=1, **counts)
        return BatchResult(outcomes["stored"], outcomes["duplicates"], outcomes["retained_copies"],
                           outcomes["malformed"], outcomes["replies_matched"])

    def _save_one(self, conn: sqlite3.Connection, item: Received) -> str:
        """Store one delivery; which counter it goes to."""
        msg = item.message
        if msg is None:
            conn.execute("INSERT INTO malformed(topic, payload, error, received_at, consumer) VALUES (?,?,?,?,?)",
                         (item.topic, item.payload, item.error or "unreadable", item.received_at, self.consumer))
            return "malformed"
        if msg.kind == "status":
            conn.execute("INSERT INTO lots(lot, contiguous, highest, status, status_at) VALUES (?,0,0,?,?) "
                         "ON CONFLICT(lot) DO UPDATE SET status=excluded.status, status_at=excluded.status_at",
                         (msg.lot, msg.payload, item.received_at))
            return "status"
        if item.retained:
            # A retained copy sent because we subscribed: the live message was (or will be) delivered
            # on its own, or was published before this consumer existed.
            return "retained_copies"
        cur = conn.execute(
            "INSERT OR IGNORE INTO messages(lot, seq, msg_id, kind, topic, payload, received_at, consumer) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (msg.lot, msg.seq, msg.msg_id, msg.kind, msg.topic, msg.payload, item.received_at, self.consumer))
        return "stored" if cur.rowcount else "duplicates"

    def _match_reply(self, conn: sqlite3.Connection, msg: Message, received_at: float) -> int:
        body = msg.body or {}
        command_id = body.get("id")
        if not isinstance(command_id, str):
            return 0
        cur = conn.execute(
            "UPDATE commands SET reply_at=?, reply_status=?, reply_error=?, reply_seq=?, reply=? "
            "WHERE id=? AND lot=? AND reply_at IS NULL",
            (received_at, body.get("status"), body.get("error"), msg.seq, msg.payload, command_id, msg.lot))
        return cur.rowcount

    def _advance(self, conn: sqlite3.Connection, lot: str, lowest: int, now: float) -> None:
        row = conn.execute("SELECT contiguous, highest FROM lots WHERE lot=?", (lot,)).fetchone()
        if row is None:  # not registered: start at what arrived first
            row = (lowest - 1, lowest - 1)
            conn.execute("INSERT INTO lots(lot, contiguous, highest) VALUES (?,?,?)", (lot, *row))
        contiguous, highest = row
        seqs = [r[0] for r in conn.execute(
            "SELECT seq FROM messages WHERE lot=? AND seq > ? ORDER BY seq", (lot, contiguous))]
        contiguous = gaps.advance(contiguous, seqs)
        highest = max([highest, *seqs])
        since = None
        if highest > contiguous:
            since = conn.execute("SELECT MIN(received_at) FROM messages WHERE lot=? AND seq > ?",
                                 (lot, contiguous)).fetchone()[0]
        conn.execute("UPDATE lots SET contiguous=?, highest=?, gap_since=? WHERE lot=?",
                     (contiguous, highest, since, lot))

    def _count(self, conn: sqlite3.Connection, **values: int) -> None:
        conn.executemany(
            "INSERT INTO counters(consumer, name, value) VALUES (?,?,?) "
            "ON CONFLICT(consumer, name) DO UPDATE SET value = value + excluded.value",
            [(self.consumer, name, value) for name, value in values.items() if value])

    # -- reads -------------------------------------------------------------------------

    def gaps(self, *, older_than_s: float = 0.0, limit: int = 100) -> list[Gap]:
        """Lots with seqs missing for longer than ``older_than_s`` (alarm on these: lost messages)."""
        now = self.clock()
        with self._lock:
            rows = self._conn.execute(
                "SELECT lot, contiguous, highest, gap_since FROM lots WHERE highest > contiguous "
                "AND gap_since IS NOT NULL AND gap_since <= ? ORDER BY lot", (now - older_than_s,)).fetchall()
            out = []
            for lot, contiguous, highest, since in rows:
                seqs = [r[0] for r in self._conn.execute(
                    "SELECT seq FROM messages WHERE lot=? AND seq > ?", (lot, contiguous))]
                out.append(Gap(lot, contiguous, highest, gaps.missing(contiguous, seqs, limit=limit), since))
        return out

    def counters(self) -> dict[str, dict[str, int]]:
        """consumer -> counter name -> value (deliveries, stored, duplicates, retained_copies, malformed, status,
        batches)."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for consumer, name, value in self._conn.execute("SELECT consumer, name, value FROM counters"):
                out.setdefault(consumer, {})[name] = value
        return out

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read-only query (reports, tests)."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- commands ------------------------------------------------------------------------

    def record_command(self, command_id: str, *, lot: str, name: str, fields: dict[str, Any]) -> None:
        """Remember a command before it is published (so that a reply always finds it)."""
        now = self.clock()
        with self._transaction() as conn:
            conn.execute("INSERT INTO commands(id, lot, name, fields, sent_at, attempts, last_sent_at) "
                         "VALUES (?,?,?,?,?,0,?)", (command_id, lot, name, json.dumps(fields), now, now))

    def note_attempt(self, command_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE commands SET attempts = attempts + 1, last_sent_at = ? WHERE id=?",
                         (self.clock(), command_id))

    def command(self, command_id: str) -> CommandRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id, lot, name, fields, sent_at, attempts, reply_at, reply_status, reply_error, reply "
                "FROM commands WHERE id=?", (command_id,)).fetchone()
        return None if row is None else _command(row)

    def unanswered(self, *, older_than_s: float) -> list[CommandRecord]:
        """Commands without a reply whose last attempt is older than ``older_than_s``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, lot, name, fields, sent_at, attempts, reply_at, reply_status, reply_error, reply "
                "FROM commands WHERE reply_at IS NULL AND last_sent_at <= ? ORDER BY sent_at",
                (self.clock() - older_than_s,)).fetchall()
        return [_command(r) for r in rows]


def _command(row: tuple[Any, ...]) -> CommandRecord:
    return CommandRecord(id=row[0], lot=row[1], name=row[2], fields=json.loads(row[3]), sent_at=row[4],
                         attempts=row[5], reply_at=row[6], reply_status=row[7], reply_error=row[8],
                         reply=json.loads(row[9]) if row[9] else None)


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the store's lock (rolled back on any error)."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock) -> None:
        self._conn = conn
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                try:
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            else:
                self._rollback()
        finally:
            self._lock.release()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

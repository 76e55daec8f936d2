"""The SQLite store: transactions, the event log, the outbox, crash safety."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatekeeper.rules import Action, Decision, Reason, Tariff, decide_entry, decide_exit
from gatekeeper.store import SCHEMA_VERSION, Store, StoreError, UnknownSession

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "gk.db", lot_id="lot-1", capacity=3, default_tariff=Tariff(), clock=lambda: NOW)
    yield s
    s.close()


def enter(store: Store, plate: str, *, at: datetime = NOW) -> int:
    d = decide_entry(plate, now=at, lot=store.lot_state())
    assert d.open, d
    sid = store.record_decision(d, lane="entry-1", direction="entry", plate_read=plate, confidence=0.9, now=at).session_id
    assert sid is not None
    return sid


def test_database_settings_and_schema_version(store: Store) -> None:
    conn = store.db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.schema_version == SCHEMA_VERSION


def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db", capacity=5) as s:
        enter(s, "AB123")
    with Store(tmp_path / "a.db", capacity=5) as s:
        assert [v.plate for v in s.inside_sessions()] == ["AB123"]
        assert s.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as s:
        s.db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path / "a.db")


def test_a_schema_2_database_migrates_and_its_lists_hold_always(tmp_path: Path) -> None:
    """A lot's database from before schedules (schema 2, built by the migrations that release ran) opens at
    the current schema with every list entry and reservation as it was: no schedule, so always."""
    import sqlite_utils

    from gatekeeper.store.db import MIGRATIONS

    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for migrate in MIGRATIONS[:2]:
        migrate(old)
    old.execute("INSERT INTO meta(key, value) VALUES('schema_version', '2')")
    old.execute("INSERT INTO lists(plate, kind, note, updated_at) VALUES ('PERMIT1', 'allow', 'staff', ?)", [NOW.isoformat()])
    old.execute("INSERT INTO reservations(id, plate, valid_from, valid_until, updated_at) VALUES ('r1', 'RES1', ?, ?, ?)",
                [NOW.isoformat(), (NOW + timedelta(hours=2)).isoformat(), NOW.isoformat()])
    old.conn.commit()
    old.close()
    with Store(path, capacity=1, clock=lambda: NOW) as s:
        assert s.schema_version == SCHEMA_VERSION == 4
        [entry] = s.list_entries()
        assert (entry.plate, entry.schedule, entry.active(NOW + timedelta(days=3, hours=7))) == ("PERMIT1", None, True)
        [reservation] = s.reservations()
        assert reservation.schedule is None and reservation.active(NOW + timedelta(hours=1))
        assert s.list_rows("allow")[0]["schedule"] is None and s.list_rows("allow")[0]["note"] == "staff"
        enter(s, "AB123")
        full = decide_entry("PERMIT1", now=NOW, lot=s.lot_state(), lists=s.list_entries())
        assert (full.open, full.reason) == (True, Reason.ENTRY_ALLOWED)


def test_schedules_are_stored_as_rules_and_read_in_the_lots_zone(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    from gatekeeper.schedules import parse_schedule

    london = ZoneInfo("Europe/London")
    with Store(tmp_path / "a.db", clock=lambda: NOW, timezone=london) as s:
        s.set_list_entries("allow", [{"plate": "ST 1", "schedule": parse_schedule("Mon-Fri 07:00-19:00", tz=london)},
                                     {"plate": "CL 1", "schedule": [{"days": ["sat"], "start": "06:00", "end": "09:00"}]},
                                     {"plate": "VIP 1"}])
        s.upsert_reservation("r1", "RS1", NOW, NOW + timedelta(days=60), schedule=[
            {"days": ["tue"], "start": "22:00", "end": "02:00"}])
        by_plate = {e.plate: e for e in s.list_entries()}
        assert by_plate["ST1"].schedule == parse_schedule("Mon-Fri 07:00-19:00", tz=london)
        assert by_plate["CL1"].schedule.describe() == "Sat 06:00-09:00"  # type: ignore[union-attr]
        assert by_plate["VIP1"].schedule is None
        assert s.reservations()[0].schedule.tz == london  # type: ignore[union-attr]
        assert s.list_rows("allow")[0]["schedule"] == [{"days": ["sat"], "start": "06:00", "end": "09:00"}]
        # An entry is replaced whole: sent again without a schedule, it holds always.
        s.set_list_entries("allow", [{"plate": "ST1"}])
        assert {e.plate: e.schedule for e in s.list_entries()}["ST1"] is None
        with pytest.raises(StoreError, match="deny list entry BAD1: only allow-list entries carry a schedule"):
            s.set_list_entries("deny", [{"plate": "BAD1", "schedule": [{"days": ["mon"], "start": "07:00", "end": "08:00"}]}])
        with pytest.raises(StoreError, match=r"allow list entry X1: schedule\[0\]\.days"):
            s.set_list_entries("allow", [{"plate": "X1", "schedule": [{"days": ["mo"], "start": "07:00", "end": "08:00"}]}])
        assert [e.plate for e in s.list_entries()] == ["CL1", "ST1", "VIP1"]  # nothing half-written


def test_entry_writes_session_event_and_outbox_together(store: Store) -> None:
    sid = enter(store, "AB-123")
    row = store.session(sid)
    assert (row["plate"], row["plate_read"], row["status"], row["entry_lane"]) == ("AB123", "AB-123", "open", "entry-1")
    (event,) = store.events()
    assert (event["kind"], event["reason"], event["session_id"]) == ("entry", "entry", sid)
    topics = [r.topic for r in store.outbox_pending()]
    assert topics == ["events/entry", "occupancy"]
    first, occupancy = store.outbox_pending()
    assert first.msg_id == event["id"] and json.loads(first.payload)["plate"] == "AB123"
    assert occupancy.retain and json.loads(occupancy.payload)["occupied"] == 1


def test_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            conn.execute("INSERT INTO sessions(plate, entry_lane, entry_at) VALUES ('X1','l','t')")
            raise RuntimeError("power cut in the middle")
    assert store.sessions() == [] and store.events() == []


def test_events_are_append_only(store: Store) -> None:
    enter(store, "AB123")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.db.execute("UPDATE events SET reason='x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.db.execute("DELETE FROM events")


def test_decision_events_take_extra_data_but_never_lose_their_own_keys(store: Store) -> None:
    d = decide_entry("OP-1", now=NOW, lot=store.lot_state())
    recorded = store.record_decision(d, lane="entry-1", direction="entry", plate_read="op 1", source="operator",
                                     data={"by": "alice"})
    event = store.events()[-1]
    assert event["id"] == recorded.event_id and event["session_id"] == recorded.session_id
    assert json.loads(event["data"])["by"] == "alice" and json.loads(event["data"])["source"] == "operator"
    queued = json.loads(next(r.payload for r in store.outbox_pending() if r.msg_id == recorded.event_id))
    assert (queued["by"], queued["source"], queued["kind"], queued["plate"]) == ("alice", "operator", "entry", "OP1")
    assert store.session(recorded.session_id)["source"] == "operator"
    before = len(store.events())
    for key in ("source", "plate", "session_id"):
        with pytest.raises(ValueError, match=key):
            store.record_decision(decide_entry("OP-2", now=NOW, lot=store.lot_state()), lane="entry-1",
                                  direction="entry", data={key: "forged"})
    assert len(store.events()) == before and [v.plate for v in store.inside_sessions()] == ["OP1"]


def test_exit_paid_closes_the_session_and_frees_the_space(store: Store) -> None:
    sid = enter(store, "AB123", at=NOW - timedelta(hours=3))
    unpaid = decide_exit("AB123", now=NOW, sessions=store.inside_sessions(), tariff=store.tariff())
    store.record_decision(unpaid, lane="exit-1", direction="exit")
    assert store.session(sid)["status"] == "open"
    store.pay_session(sid, amount=unpaid.fee_due, reference="r-1", paid_at=NOW)
    paid = decide_exit("AB123", now=NOW + timedelta(minutes=5), sessions=store.inside_sessions(), tariff=store.tariff())
    store.record_decision(paid, lane="exit-1", direction="exit", now=NOW + timedelta(minutes=5))
    row = store.session(sid)
    assert (row["status"], row["fee_charged"], row["payment_ref"]) == ("closed", unpaid.fee_due, "r-1")
    assert store.occupancy() == {"capacity": 3, "occupied": 0, "free": 3}
    assert [e["kind"] for e in store.events()] == ["entry", "denied", "paid", "exit"]


def test_capacity_counts_open_and_paid_sessions(store: Store) -> None:
    for plate in ("A1", "B2", "C3"):
        enter(store, plate)
    store.pay_session(1, amount=0)
    d = decide_entry("D4", now=NOW, lot=store.lot_state())
    assert (d.open, d.reason) == (False, Reason.FULL)


def test_closing_a_session_twice_is_refused(store: Store) -> None:
    sid = enter(store, "AB123")
    close = Decision(True, Reason.PAID, "Goodbye", Action.CLOSE_SESSION, "AB123", sid)
    store.record_decision(close, lane="x", direction="exit")
    with pytest.raises(UnknownSession):
        store.record_decision(close, lane="x", direction="exit")


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_pay_rejects_non_integer_amounts(store: Store, bad: object) -> None:
    sid = enter(store, "AB123")
    with pytest.raises(StoreError, match="minor units"):
        store.pay_session(sid, amount=bad)  # type: ignore[arg-type]


def test_unknown_sessions_get_a_clear_error(store: Store) -> None:
    for action in (
        lambda: store.pay_session(42, amount=1),
        lambda: store.edit_plate(42, "X1"),
        lambda: store.delete_session(42),
        lambda: store.session(42),
    ):
        with pytest.raises(UnknownSession, match="no session 42"):
            action()


def test_edit_and_delete_are_logged_and_delete_refuses_open_sessions(store: Store) -> None:
    sid = enter(store, "AB123")
    store.set_alternates(sid, {"AB128": -1.5})
    assert store.inside_sessions()[0].alternates == (("AB128", -1.5),)
    store.edit_plate(sid, "ab-128")
    assert store.session(sid)["plate"] == "AB128"
    assert store.session(sid)["alternates"] is None and store.inside_sessions()[0].alternates == ()
    with pytest.raises(StoreError, match="open and unpaid"):
        store.delete_session(sid)
    store.pay_session(sid, amount=100)
    store.delete_session(sid)
    assert [e["kind"] for e in store.events()][-3:] == ["edited", "paid", "deleted"]


def test_lists_reservations_and_tariff_round_trip(store: Store) -> None:
    store.set_list_entries("deny", [{"plate": "bad-1"}, {"plate": "BAD2", "valid_until": NOW}])
    store.set_list_entries("deny", [{"plate": "BAD3"}], replace=True)
    assert [(e.plate, e.kind) for e in store.list_entries()] == [("BAD3", "deny")]
    store.upsert_reservation("r1", "res-1", NOW, NOW + timedelta(hours=2))
    assert store.reservations()[0].plate == "RES1"
    with pytest.raises(StoreError):
        store.upsert_reservation("r2", "X1", NOW, NOW)
    store.set_tariff(Tariff(rate=300, currency="CHF"))
    assert (store.tariff().rate, store.tariff().currency) == (300, "CHF")


def test_default_tariff_is_replaceable_and_a_cloud_tariff_wins(store: Store) -> None:
    assert store.tariff() == Tariff()
    store.set_default_tariff(Tariff(rate=400))  # what the daemon does on SIGHUP
    assert store.tariff().rate == 400
    assert not store.events(kinds=["tariff_updated"]) and not store.outbox_pending()  # not an event, not stored
    store.set_tariff(Tariff(rate=300, currency="CHF"), by="cloud")
    store.set_default_tariff(Tariff(rate=500))
    assert (store.tariff().rate, store.tariff().currency) == (300, "CHF")
    with pytest.raises(TypeError):
        store.set_default_tariff({"rate": 1})  # type: ignore[arg-type]


def test_outbox_rows_are_sent_only_when_marked(store: Store) -> None:
    enter(store, "AB123")
    rows = store.outbox_pending()
    store.outbox_mark_sent([rows[0].id])
    assert [r.id for r in store.outbox_pending()] == [rows[1].id]
    assert store.outbox_stats()["pending"] == 1
    assert store.prune_outbox(sent_before=NOW + timedelta(days=1)) == 1
    assert store.outbox_stats() == {"pending": 1, "oldest_pending_at": rows[1].created_at, "sent": 0}


def test_inbound_ids_detect_replays(store: Store) -> None:
    assert store.remember_inbound("m-1", "cmd/payment") is True
    assert store.remember_inbound("m-1", "cmd/payment") is False
    assert store.prune_inbound(before=NOW + timedelta(seconds=1)) == 1


# --------------------------------------------------------------------------- crash safety

WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from gatekeeper.rules import decide_entry, decide_exit, Tariff
    from gatekeeper.store import Store

    store = Store(sys.argv[1], capacity=10**9, default_tariff=Tariff(free_minutes=10**4))
    i = 0
    while True:
        now = datetime.now(UTC)
        plate = f"CR{i:06d}"
        d = decide_entry(plate, now=now, lot=store.lot_state())
        sid = store.record_decision(d, lane="entry-1", direction="entry", now=now).session_id
        if i % 3 == 0:
            x = decide_exit(plate, now=now, sessions=store.inside_sessions(), tariff=store.tariff())
            store.record_decision(x, lane="exit-1", direction="exit", now=now)
        # Acknowledge only what has been committed: the barrier would open now.
        print(f"{sid} {'closed' if i % 3 == 0 else 'open'}", flush=True)
        i += 1
    """
)


def test_sigkill_mid_write_leaves_a_consistent_database_with_everything_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    acknowledged: dict[int, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        sid, status = line.split()
        acknowledged[int(sid)] = status
        if len(acknowledged) >= 150:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    sessions = dict(conn.execute("SELECT id, status FROM sessions"))
    for sid, status in acknowledged.items():
        assert sessions.get(sid) == status, f"acknowledged session {sid} lost or changed"
    # Every session has its entry event and outbox row; every closed one its exit: nothing half-written.
    entries = {r[0] for r in conn.execute("SELECT session_id FROM events WHERE kind='entry'")}
    exits = {r[0] for r in conn.execute("SELECT session_id FROM events WHERE kind='exit'")}
    assert entries == set(sessions)
    assert exits == {sid for sid, st in sessions.items() if st == "closed"}
    outbox_ids = {r[0] for r in conn.execute("SELECT msg_id FROM outbox WHERE topic LIKE 'events/%'")}
    event_ids = {r[0] for r in conn.execute("SELECT id FROM events")}
    assert outbox_ids == event_ids
    conn.close()
    with Store(db) as reopened:  # and the application can carry on with it
        assert len(reopened.inside_sessions()) == sum(1 for st in sessions.values() if st == "open")

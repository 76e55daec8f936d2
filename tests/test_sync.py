"""CloudSync against a real mosquitto: events up, signed commands down, bad input survived."""

from __future__ import annotations

import json
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo
from typing import Any, Iterator

import pytest

from gatekeeper.messages import LaneEvent, Occupancy, PaidEvent, RejectedEvent, Reply, validate_outbound
from gatekeeper.rules import Reason, Tariff, decide_entry, decide_exit
from gatekeeper.sync.signing import sign
from gatekeeper.store import Store
from gatekeeper.sync import REJECT_EVENTS_PER_MINUTE, CloudSync
from tests.broker import LOT, SECRET, Mosquitto, Subscriber, sync_settings

BASE = f"gatekeeper/{LOT}"


def now() -> datetime:
    return datetime.now(UTC)


def signed(first: str | dict[str, Any], body: dict[str, Any] | None = None, *, secret: str = SECRET,
           lot: str = LOT, **overrides: Any) -> bytes:
    """A command as the cloud sends it: fresh id and ts, signed (v2) for ``name`` (default payment)."""
    name, body = (first, body or {}) if isinstance(first, str) else ("payment", first)
    full = {"id": uuid.uuid4().hex, "ts": now().isoformat(), **body, **overrides}
    return json.dumps(sign(full, secret, lot=lot, command=name)).encode()


class OpenRecorder:
    """The daemon's open_handler stand-in (the relay is the one thing tests may mock)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.fail_with: Exception | None = None

    def __call__(self, lane: str, reason: str, by: str) -> None:
        if self.fail_with:
            raise self.fail_with
        self.calls.append((lane, reason, by))


@pytest.fixture
def settings(mosquitto: Mosquitto, tmp_path: Path) -> Any:
    return sync_settings(mosquitto, tmp_path / "data")


@pytest.fixture
def store(settings: Any) -> Iterator[Store]:
    with Store.from_settings(settings) as s:
        yield s


@pytest.fixture
def cloud(mosquitto: Mosquitto) -> Iterator[Subscriber]:
    """The cloud's side: sees everything under the lot, publishes commands."""
    with Subscriber(mosquitto, f"{BASE}/#") as sub:
        yield sub


@pytest.fixture
def opener() -> OpenRecorder:
    return OpenRecorder()


@pytest.fixture
def config_changes() -> list[int]:
    return []


@pytest.fixture
def sync(settings: Any, store: Store, cloud: Subscriber, opener: OpenRecorder,
         config_changes: list[int]) -> Iterator[CloudSync]:
    s = CloudSync(settings, store, open_handler=opener, on_config_change=lambda: config_changes.append(1))
    s.start()
    cloud.get(where=lambda m: m.topic == f"{BASE}/status" and m.payload == b"online")
    try:
        yield s
    finally:
        s.close()


_FROM_PAYLOAD: Any = object()


def command(cloud: Subscriber, name: str, payload: bytes, timeout: float = 10.0,
            request_id: str | None = _FROM_PAYLOAD) -> Reply:
    """Publish a command and wait for the reply carrying its id (or id null for unreadable ones)."""
    if request_id is _FROM_PAYLOAD:
        try:
            request_id = json.loads(payload).get("id")
        except Exception:
            request_id = None
    cloud.publish(f"{BASE}/cmd/{name}", payload)
    msg = cloud.get(timeout, where=lambda m: m.topic == f"{BASE}/reply/{name}"
                    and Reply.model_validate_json(m.payload).id == request_id)
    return Reply.model_validate_json(msg.payload)


def enter(store: Store, plate: str, at: datetime) -> int:
    decision = decide_entry(plate, now=at, lot=store.lot_state())
    recorded = store.record_decision(decision, lane="entry-1", direction="entry", plate_read=plate,
                                     confidence=0.93, photo="/photos/e.jpg", now=at)
    assert recorded.session_id is not None
    return recorded.session_id


def rejected_events(store: Store) -> list[dict[str, Any]]:
    return store.events(kinds=["rejected"])


# --------------------------------------------------------------------------- up


def test_events_and_occupancy_reach_the_cloud_in_order(sync: CloudSync, store: Store, cloud: Subscriber) -> None:
    session_id = enter(store, "B-AB 123", now())
    alarm_ids = [store.record_event("alarm", lane="entry-1", reason=f"test_{i}") for i in range(5)]
    sync.wake()

    entry = cloud.get(where=lambda m: m.topic == f"{BASE}/events/entry")
    event = LaneEvent.model_validate_json(entry.payload)
    assert (event.plate, event.session_id, event.lot, event.open) == ("BAB123", session_id, LOT, True)
    occupancy = Occupancy.model_validate_json(cloud.get(where=lambda m: m.topic == f"{BASE}/occupancy").payload)
    assert (occupancy.capacity, occupancy.occupied, occupancy.free) == (20, 1, 19)
    alarms = [cloud.get(where=lambda m: m.topic == f"{BASE}/events/alarm").json()["id"] for _ in alarm_ids]
    assert alarms == alarm_ids
    assert store.outbox_stats()["pending"] == 0 or sync.health()["backlog"] >= 0

    # Retained: a client that connects later still learns occupancy and that the lane is online.
    with Subscriber(cloud.broker, f"{BASE}/#") as late:
        seen = {m.topic: m for m in (late.get() for _ in range(2))}
    assert seen[f"{BASE}/status"].payload == b"online" and seen[f"{BASE}/status"].retain
    assert seen[f"{BASE}/occupancy"].retain


def test_a_row_counts_as_sent_only_after_its_puback(settings: Any, store: Store, mosquitto: Mosquitto) -> None:
    store.record_event("alarm", reason="before_any_broker")
    mosquitto.stop()
    sync = CloudSync(settings, store).start()
    try:
        sync.wake()
        assert not threading.Event().wait(0.5)  # give it every chance to (wrongly) mark it sent
        assert store.outbox_stats()["pending"] == 1 and not sync.connected
        mosquitto.start()
        _eventually(lambda: store.outbox_stats()["pending"] == 0, "row marked sent after PUBACK")
        assert sync.health()["last_ack_at"] is not None
    finally:
        sync.close()


def _eventually(check: Any, what: str, timeout: float = 15.0) -> None:
    """Poll a condition the code under test exposes no event for (DB state), with a deadline."""
    waiter = threading.Event()
    deadline = datetime.now() + timedelta(seconds=timeout)
    while datetime.now() < deadline:
        if check():
            return
        waiter.wait(0.05)
    raise AssertionError(f"timed out waiting for: {what}")


def test_store_payloads_match_the_message_models(store: Store) -> None:
    t0 = now() - timedelta(hours=3)
    sid = enter(store, "M-XY 42", t0)
    store.record_decision(decide_entry("M-XY 42", now=t0, lot=store.lot_state()), lane="entry-1",
                          direction="entry", plate_read="M-XY 42", confidence=0.5)  # denied: already inside
    store.record_decision(decide_exit("M-XY 42", now=now(), sessions=store.inside_sessions(), tariff=store.tariff()),
                          lane="exit-1", direction="exit", plate_read="M-XY 42", confidence=0.9)  # denied: unpaid
    store.pay_session(sid, amount=750, reference="r-1")
    store.record_decision(decide_exit("MXY42", now=now(), sessions=store.inside_sessions(), tariff=store.tariff()),
                          lane="exit-1", direction="exit", plate_read="MXY42", confidence=0.9)
    store.record_event("rejected", reason="bad_signature", data={"command": "payment", "request_id": "x"})
    rows = store.outbox_pending(limit=100)
    kinds = [r.topic for r in rows]
    assert {"events/entry", "events/denied", "events/paid", "events/exit", "events/rejected", "occupancy"} <= set(kinds)
    for row in rows:
        model = validate_outbound(row.topic, row.payload)
        assert model.model_dump()["id"] == json.loads(row.payload)["id"]
    paid = next(r for r in rows if r.topic == "events/paid")
    assert isinstance(validate_outbound(paid.topic, paid.payload), PaidEvent)
    rejected = next(r for r in rows if r.topic == "events/rejected")
    assert isinstance(validate_outbound(rejected.topic, rejected.payload), RejectedEvent)


# --------------------------------------------------------------------------- payments


def test_payment_lets_the_exit_open(sync: CloudSync, store: Store, cloud: Subscriber) -> None:
    entered = now() - timedelta(hours=2, minutes=5)
    sid = enter(store, "HH-GK 77", entered)
    tariff = store.tariff()
    before = decide_exit("HH-GK 77", now=now(), sessions=store.inside_sessions(), tariff=tariff)
    assert not before.open and before.reason is Reason.UNPAID and before.fee_due == 750

    reply = command(cloud, "payment", signed("payment", {"session_id": sid, "amount": before.fee_due,
                                              "reference": "psp-1", "paid_at": now().isoformat()}))
    assert (reply.status, reply.error, reply.session_id) == ("ok", None, sid)
    session = store.session(sid)
    assert (session["status"], session["amount_paid"], session["payment_ref"]) == ("paid", 750, "psp-1")

    after = decide_exit("HH-GK 77", now=now(), sessions=store.inside_sessions(), tariff=tariff)
    assert after.open and after.reason is Reason.PAID and after.session_id == sid
    # The paid event was committed (and queued) before the reply, so it is already here.
    paid = PaidEvent.model_validate_json(next(m for m in cloud.history if m.topic == f"{BASE}/events/paid").payload)
    assert (paid.session_id, paid.amount, paid.by) == (sid, 750, "cloud")


def test_payment_by_plate_resolves_one_session_and_refuses_guesses(sync: CloudSync, store: Store,
                                                                    cloud: Subscriber) -> None:
    t0 = now() - timedelta(hours=1)
    sid = enter(store, "KA-OB 100", t0)
    enter(store, "KA-XY 1", t0)
    enter(store, "KA-XY 7", t0)
    # Look-alike (0 for O) is accepted; the exact plate of another car is not needed.
    ok = command(cloud, "payment", signed("payment", {"plate": "KA 0B 100", "amount": 250}))
    assert (ok.status, ok.session_id) == ("ok", sid)
    wrong = command(cloud, "payment", signed("payment", {"plate": "KA-XY 2", "amount": 250}))
    assert wrong.status == "error" and "KAXY2" in (wrong.error or "")
    unknown = command(cloud, "payment", signed("payment", {"plate": "ZZ 999", "amount": 250}))
    assert unknown.status == "error" and "no vehicle inside" in (unknown.error or "")
    assert [s["status"] for s in store.sessions(plate="KA-XY 1")] == ["open"]


@pytest.mark.parametrize(
    "case",
    ["unsigned", "wrong_secret", "tampered_amount", "stale", "future", "garbled_sig"],
)
def test_forged_payments_are_rejected(sync: CloudSync, store: Store, cloud: Subscriber, case: str) -> None:
    sid = enter(store, "F-OR 6", now() - timedelta(hours=1))
    body = {"id": uuid.uuid4().hex, "ts": now().isoformat(), "session_id": sid, "amount": 250}
    if case == "unsigned":
        payload = json.dumps(body)
    elif case == "wrong_secret":
        payload = json.dumps(sign(body, "guessed-secret", lot=LOT, command="payment"))
    elif case == "tampered_amount":
        payload = json.dumps({**sign(body, SECRET, lot=LOT, command="payment"), "amount": 99_999})
    elif case == "stale":
        payload = json.dumps(sign({**body, "ts": (now() - timedelta(minutes=10)).isoformat()}, SECRET, lot=LOT, command="payment"))
    elif case == "future":
        payload = json.dumps(sign({**body, "ts": (now() + timedelta(minutes=10)).isoformat()}, SECRET, lot=LOT, command="payment"))
    else:
        payload = json.dumps({**body, "sig": "zz" * 32})
    reply = command(cloud, "payment", payload.encode())
    expected = {"unsigned": "unsigned", "stale": "stale", "future": "stale"}.get(case, "bad_signature")
    assert reply.status == "error" and reply.id == body["id"]
    assert store.session(sid)["status"] == "open" and store.session(sid)["amount_paid"] == 0
    events = rejected_events(store)
    assert [e["reason"] for e in events] == [expected]
    assert json.loads(events[0]["data"]) == {"command": "payment", "request_id": body["id"]}


def test_replayed_payment_gets_the_stored_reply_and_pays_once(sync: CloudSync, store: Store,
                                                              cloud: Subscriber) -> None:
    sid = enter(store, "R-EP 1", now() - timedelta(hours=1))
    payload = signed({"session_id": sid, "amount": 250})
    first = command(cloud, "payment", payload)
    assert first.status == "ok" and not first.repeat and first.seq is not None
    again = command(cloud, "payment", payload)
    assert again.status == "ok" and again.repeat and again.session_id == sid
    assert again.result == first.result and again.seq is not None and again.seq > first.seq
    assert store.session(sid)["amount_paid"] == 250
    assert len(store.events(kinds=["paid"])) == 1 and rejected_events(store) == []


def test_a_refused_command_uses_up_its_id(sync: CloudSync, store: Store, cloud: Subscriber) -> None:
    payload = signed({"plate": "LATE 1", "amount": 250})
    first = command(cloud, "payment", payload)  # not inside yet
    assert first.status == "error"
    enter(store, "LATE 1", now())
    again = command(cloud, "payment", payload)  # a captured copy, replayed once the car is in
    assert again.status == "error" and again.repeat and again.error == first.error
    assert store.sessions(plate="LATE 1")[0]["status"] == "open"


def test_without_a_secret_every_command_is_rejected(mosquitto: Mosquitto, tmp_path: Path, cloud: Subscriber,
                                                   opener: OpenRecorder) -> None:
    settings = sync_settings(mosquitto, tmp_path / "nosecret", secret=None)
    with Store.from_settings(settings) as store, CloudSync(settings, store, open_handler=opener):
        cloud.get(where=lambda m: m.topic == f"{BASE}/status" and m.payload == b"online")
        reply = command(cloud, "open", signed("open", {"lane": "exit-1", "reason": "intercom"}))
        assert reply.status == "error" and "no HMAC secret" in (reply.error or "")
        assert opener.calls == []
        assert [e["reason"] for e in rejected_events(store)] == ["no_secret"]


# --------------------------------------------------------------------------- other commands


def test_open_command_calls_the_handler_and_reports_its_failure(sync: CloudSync, cloud: Subscriber,
                                                               opener: OpenRecorder) -> None:
    assert command(cloud, "open", signed("open", {"lane": "exit-1", "reason": "intercom: ticket lost"})).status == "ok"
    assert opener.calls == [("exit-1", "intercom: ticket lost", "cloud")]
    opener.fail_with = KeyError("no lane 'exit-9'")
    reply = command(cloud, "open", signed("open", {"lane": "exit-9", "reason": "x"}))
    assert reply.status == "error" and "exit-9" in (reply.error or "")
    unsigned = json.dumps({"id": "u1", "ts": now().isoformat(), "lane": "exit-1", "reason": "x"}).encode()
    assert command(cloud, "open", unsigned).status == "error"
    assert len(opener.calls) == 1


def test_list_reservation_and_tariff_commands(sync: CloudSync, store: Store, cloud: Subscriber,
                                              config_changes: list[int]) -> None:
    t0 = now()
    entries = [{"plate": "AL-1"}, {"plate": "AL 2", "valid_until": (t0 + timedelta(days=1)).isoformat(), "note": "staff"}]
    assert command(cloud, "lists", signed("lists", {"kind": "allow", "op": "add", "entries": entries})).status == "ok"
    assert command(cloud, "lists", signed("lists", {"kind": "deny", "op": "add", "entries": [{"plate": "BAD 1"}]})).status == "ok"
    assert {(e.plate, e.kind) for e in store.list_entries()} == {("AL1", "allow"), ("AL2", "allow"), ("BAD1", "deny")}
    assert command(cloud, "lists", signed("lists", {"kind": "allow", "op": "remove", "entries": [{"plate": "al1"}]})).status == "ok"
    assert command(cloud, "lists", signed("lists", {"kind": "deny", "op": "replace", "entries": []})).status == "ok"
    assert {(e.plate, e.kind) for e in store.list_entries()} == {("AL2", "allow")}

    window = {"valid_from": t0.isoformat(), "valid_until": (t0 + timedelta(hours=4)).isoformat()}
    assert command(cloud, "reservation", signed("reservation", {"op": "upsert", "reservation_id": "res-1", "plate": "RS 1",
                                                 **window})).status == "ok"
    assert [(r.id, r.plate) for r in store.reservations()] == [("res-1", "RS1")]
    backwards = {"valid_from": window["valid_until"], "valid_until": window["valid_from"]}
    bad = command(cloud, "reservation", signed("reservation", {"op": "upsert", "reservation_id": "res-2", "plate": "X", **backwards}))
    assert bad.status == "error" and "after valid_from" in (bad.error or "")
    assert command(cloud, "reservation", signed("reservation", {"op": "delete", "reservation_id": "res-1"})).status == "ok"
    assert store.reservations() == []

    tariff = {"free_minutes": 0, "interval_minutes": 30, "rate": 100, "daily_max": 1500, "grace_minutes": 10}
    assert command(cloud, "tariff", signed("tariff", {"tariff": tariff})).status == "ok"
    assert store.tariff() == Tariff(0, 30, 100, 1500, 10, "EUR", 2)
    assert config_changes == [1]
    floaty = command(cloud, "tariff", signed("tariff", {"tariff": {**tariff, "rate": "100"}}))
    assert floaty.status == "error" and "rate" in (floaty.error or "")
    assert config_changes == [1]


def test_weekly_schedules_over_mqtt_reach_the_rules(sync: CloudSync, store: Store, cloud: Subscriber) -> None:
    """A signed cmd/lists with a schedule: stored, read in the lot's zone (Europe/Berlin) by the entry rules;
    a bad schedule gets an ``invalid`` reply naming the field and changes nothing."""
    staff = [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00", "end": "19:00"}]
    entries = [{"plate": "ST 1", "schedule": staff, "note": "staff"}]
    assert command(cloud, "lists", signed("lists", {"kind": "allow", "op": "add", "entries": entries})).status == "ok"
    for i in range(20):  # a full lot: 20 spaces
        enter(store, f"CAR{i}", now())
    berlin = ZoneInfo("Europe/Berlin")
    monday_9, monday_20 = datetime(2026, 11, 23, 9, tzinfo=berlin), datetime(2026, 11, 23, 20, tzinfo=berlin)
    lot, lists = store.lot_state(), store.list_entries()
    assert lot.free == 0
    assert decide_entry("ST1", now=monday_9, lot=lot, lists=lists).reason == Reason.ENTRY_ALLOWED
    assert decide_entry("ST1", now=monday_20, lot=lot, lists=lists).reason == Reason.FULL

    bad = [{"plate": "ST 1", "schedule": [{"days": ["mon"], "start": "19:00", "end": "25:00"}]}]
    reply = command(cloud, "lists", signed("lists", {"kind": "allow", "op": "replace", "entries": bad}))
    assert reply.status == "error" and (reply.error or "").startswith("entries.0.schedule.0.end: ")
    assert rejected_events(store)[-1]["reason"] == "invalid"
    assert [e.schedule.describe() for e in store.list_entries()] == ["Mon-Fri 07:00-19:00"]  # type: ignore[union-attr]

    weekly = {"op": "upsert", "reservation_id": "weekly-1", "plate": "RS 1", "valid_from": now().isoformat(),
              "valid_until": (now() + timedelta(days=60)).isoformat(),
              "schedule": [{"days": ["sat", "sun"], "start": "22:00", "end": "02:00"}]}
    assert command(cloud, "reservation", signed("reservation", weekly)).status == "ok"
    assert store.reservations()[0].schedule.describe() == "Sat-Sun 22:00-02:00"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- bad input


def test_bad_input_gets_an_error_reply_and_an_event(sync: CloudSync, store: Store, cloud: Subscriber) -> None:
    sid = enter(store, "BAD 1", now())
    big = signed({"session_id": sid, "amount": 1, "reference": "x" * 70_000})
    cases = {
        b"{not json": "malformed",
        b"[1, 2]": "malformed",
        b"\xff\xfe": "malformed",
        signed({"session_id": sid, "amount": "250"}): "invalid",
        signed({"session_id": sid, "amount": 2.5}): "invalid",
        signed({"session_id": 424242, "amount": 250}): "unknown_session",
        big: "oversize",
        b'{"a": 1, "a": 2}': "malformed",
    }
    for payload, reason in cases.items():
        reply = command(cloud, "payment", payload, request_id=None if reason == "oversize" else _FROM_PAYLOAD)
        assert reply.status == "error" and reply.error, (payload[:40], reply)
    assert [e["reason"] for e in rejected_events(store)] == list(cases.values())
    assert store.session(sid)["status"] == "open"
    assert sync.health()["rejections_total"] == len(cases)  # what `gatekeeper status` shows


def _mutations(rng: random.Random, valid: dict[str, bytes]) -> Iterator[tuple[str, bytes]]:
    names = list(valid) + ["nonsense", "payment"]
    junk_values: list[Any] = [None, True, -1, 2**70, 1.5e308, "", "x" * 300, [], {}, [1, [2, [3]]], "2026-13-45"]
    while True:
        name = rng.choice(names)
        base = valid.get(name, valid["payment"])
        pick = rng.randrange(7)
        if pick == 0:  # random bytes
            yield name, bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        elif pick == 1:  # flipped bytes in a valid command
            data = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            yield name, bytes(data)
        elif pick == 2:  # truncated
            yield name, base[: rng.randrange(len(base))]
        elif pick == 3:  # a field replaced by junk, re-signed: authentic but wrong
            body = json.loads(base)
            key = rng.choice([k for k in body if k != "sig"])
            body[key] = rng.choice(junk_values)
            yield name, json.dumps(sign(body, SECRET, lot=LOT, command=name)).encode()
        elif pick == 4:  # a field dropped or added, re-signed
            body = json.loads(base)
            if rng.random() < 0.5:
                body.pop(rng.choice([k for k in body if k not in ("sig", "id", "ts")]), None)
            else:
                body[rng.choice(["extra", "lane", "amount", "entries"])] = rng.choice(junk_values)
            body["id"] = uuid.uuid4().hex
            yield name, json.dumps(sign(body, SECRET, lot=LOT, command=name)).encode()
        elif pick == 5:  # JSON of the wrong shape
            yield name, json.dumps(rng.choice(junk_values)).encode()
        else:  # deep nesting
            depth = rng.randrange(10, 20_000)
            yield name, b"[" * depth + b"]" * rng.randrange(depth + 1)


def test_thousands_of_random_payloads_leave_the_client_running(sync: CloudSync, store: Store,
                                                               cloud: Subscriber, opener: OpenRecorder) -> None:
    sid = enter(store, "FZ 1", now() - timedelta(hours=1))
    t0 = now()
    valid = {
        "payment": signed({"session_id": sid, "amount": 1}),
        "open": signed("open", {"lane": "exit-1", "reason": "fuzz"}),
        "lists": signed("lists", {"kind": "deny", "op": "add", "entries": [{"plate": "FZ 9"}]}),
        "reservation": signed("reservation", {"op": "upsert", "reservation_id": "r", "plate": "FZ 8",
                               "valid_from": t0.isoformat(), "valid_until": (t0 + timedelta(hours=1)).isoformat()}),
        "tariff": signed("tariff", {"tariff": {"free_minutes": 1, "interval_minutes": 60, "rate": 1, "daily_max": 0,
                                     "grace_minutes": 1}}),
    }
    rng = random.Random(20261123)
    count = 3000
    sent = 0
    for name, payload in _mutations(rng, valid):
        cloud.client.publish(f"{BASE}/cmd/{name}", payload, qos=1)
        sent += 1
        if sent == count:
            break
    replies = [cloud.get(30, where=lambda m: "/reply/" in m.topic) for _ in range(count)]
    parsed = [Reply.model_validate_json(r.payload) for r in replies]
    assert len(parsed) == count and sum(r.status == "error" for r in parsed) > count * 0.9
    assert sync.connected and all(t.is_alive() for t in sync._threads)
    # A flood is logged, but at a bounded rate.
    assert 0 < len(rejected_events(store)) <= REJECT_EVENTS_PER_MINUTE + 1
    # Mutations that stay authentic (a whitespace flip: the same canonical body; a re-signed
    # body with a new id) are real payments of the one valid cent; nothing else pays.
    paid_ok = sum(r.status == "ok" for m, r in zip(replies, parsed) if m.topic.endswith("/reply/payment"))
    assert store.session(sid)["amount_paid"] == paid_ok

    ok = command(cloud, "open", signed("open", {"lane": "exit-1", "reason": "after the storm"}))
    assert ok.status == "ok" and opener.calls[-1] == ("exit-1", "after the storm", "cloud")


# --------------------------------------------------------------------------- outbox bound


def test_outbox_bound_raises_one_alarm_and_deletes_nothing(mosquitto: Mosquitto, tmp_path: Path,
                                                           cloud: Subscriber) -> None:
    settings = sync_settings(mosquitto, tmp_path / "bound", outbox_max_rows=100)
    with Store.from_settings(settings) as store:
        sync = CloudSync(settings, store)  # not started: the lane is offline
        with store.transaction():
            for i in range(99):
                store.record_event("alarm", reason=f"filler_{i}")
        assert not sync.check_outbox_bound()
        store.record_event("alarm", reason="filler_99")
        assert sync.check_outbox_bound()
        for i in range(20):
            store.record_event("alarm", reason=f"more_{i}")
            assert sync.check_outbox_bound()
        alarms = store.events(kinds=["alarm"])
        assert [a["reason"] for a in alarms].count("outbox_full") == 1
        assert store.outbox_stats()["pending"] == 100 + 20 + 1  # the alarm itself is queued too

        sync.start()
        try:
            ids = [cloud.get(where=lambda m: "/events/" in m.topic).json()["id"] for _ in range(121)]
            assert len(set(ids)) == 121
            _eventually(lambda: store.outbox_stats()["pending"] == 0, "backlog drained")
            assert not sync.check_outbox_bound()
            assert [e["reason"] for e in store.events(kinds=["alarm_cleared"])] == ["outbox_ok"]
        finally:
            sync.close()


def test_outbox_age_bound(tmp_path: Path, mosquitto: Mosquitto) -> None:
    settings = sync_settings(mosquitto, tmp_path / "age", outbox_max_age_days=2)
    clock = [now() - timedelta(days=3)]
    with Store.from_settings(settings, clock=lambda: clock[0]) as store:
        store.record_event("alarm", reason="old")
        clock[0] = now()
        sync = CloudSync(settings, store, clock=lambda: clock[0])
        assert sync.check_outbox_bound()
        assert [a["reason"] for a in store.events(kinds=["alarm"])] == ["old", "outbox_too_old"]
        assert store.outbox_stats()["pending"] == 2


def test_mqtt_311_fallback_round_trip(mosquitto: Mosquitto, tmp_path: Path, cloud: Subscriber) -> None:
    settings = sync_settings(mosquitto, tmp_path / "v311", protocol="3.1.1")
    with Store.from_settings(settings) as store, CloudSync(settings, store) as sync:
        event_id = store.record_event("alarm", reason="v311")
        sync.wake()
        assert cloud.get(where=lambda m: m.topic == f"{BASE}/events/alarm").json()["id"] == event_id
        sid = enter(store, "V3 11", now())
        assert command(cloud, "payment", signed("payment", {"session_id": sid, "amount": 100})).status == "ok"
        assert store.session(sid)["status"] == "paid"

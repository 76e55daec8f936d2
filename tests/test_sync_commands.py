"""The command handlers without a broker: signed payloads in, replies out, a real SQLite store."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydantic import SecretStr

from gatekeeper.config import MqttConfig, Settings, SiteConfig, StorageConfig
from gatekeeper.rules import decide_entry
from gatekeeper.store import Store
from gatekeeper.sync.commands import CommandHandler
from gatekeeper.sync.signing import sign

SECRET = "handler-test-secret"
NOW = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


def signed(first: str | dict[str, Any], body: dict[str, Any] | None = None, *, secret: str = SECRET,
           at: datetime = NOW, lot: str = "lot-h", **overrides: Any) -> bytes:
    name, body = (first, body or {}) if isinstance(first, str) else ("payment", first)
    full = {"id": uuid.uuid4().hex, "ts": at.isoformat(), **body, **overrides}
    return json.dumps(sign(full, secret, lot=lot, command=name)).encode()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(site=SiteConfig(lot_id="lot-h", capacity=5),
                    mqtt=MqttConfig(hmac_secret=SecretStr(SECRET)),
                    storage=StorageConfig(data_dir=tmp_path / "data"))


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.from_settings(settings, clock=lambda: NOW) as s:
        yield s


class Opener:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, lane: str, reason: str, by: str) -> None:
        self.calls.append((lane, reason, by))


def handler(settings: Settings, store: Store, **kw: Any) -> CommandHandler:
    return CommandHandler(settings, store, secret=SECRET, clock=lambda: NOW, **kw)


def enter(store: Store, plate: str) -> int:
    recorded = store.record_decision(decide_entry(plate, now=NOW - timedelta(hours=2), lot=store.lot_state()),
                                     lane="entry-1", direction="entry", now=NOW - timedelta(hours=2))
    assert recorded.session_id is not None
    return recorded.session_id


def test_payment_by_plate_pays_the_session_and_replies_ok(settings: Settings, store: Store) -> None:
    sid = enter(store, "B AB 123")
    reply = handler(settings, store).handle("gatekeeper/lot-h/cmd/payment",
                                            signed({"plate": "BAB123", "amount": 450, "reference": "r-1"}))
    assert (reply.status, reply.command, reply.session_id) == ("ok", "payment", sid)
    row = store.session(sid)
    assert (row["status"], row["amount_paid"], row["payment_ref"]) == ("paid", 450, "r-1")
    assert [e["kind"] for e in store.events()] == ["entry", "paid"]


def test_replayed_command_gets_its_stored_reply_and_pays_nothing_twice(settings: Settings, store: Store) -> None:
    sid = enter(store, "B AB 123")
    h = handler(settings, store)
    payload = signed({"session_id": sid, "amount": 100})
    assert h.handle("gatekeeper/lot-h/cmd/payment", payload).status == "ok"
    again = h.handle("gatekeeper/lot-h/cmd/payment", payload)
    assert again.status == "ok" and again.repeat
    assert store.session(sid)["amount_paid"] == 100
    assert (h.commands_ok, h.commands_rejected) == (1, 0)
    assert store.events(kinds=["rejected"]) == []
    replies = [r for r in store.outbox_pending(limit=100) if r.topic == "reply/payment"]
    assert len(replies) == 2  # the stored reply, queued again


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"{not json", "malformed"),
        (b"[1, 2]", "malformed"),
        (signed({"session_id": 1, "amount": 1}, secret="wrong-secret"), None),
        (signed({"session_id": 1, "amount": "100"}), "invalid"),
        (signed({"session_id": 1, "amount": 1}, at=NOW - timedelta(hours=1)), None),
    ],
)
def test_bad_commands_get_an_error_reply_and_change_nothing(settings: Settings, store: Store, payload: bytes,
                                                            reason: str | None) -> None:
    sid = enter(store, "B AB 123")
    reply = handler(settings, store).handle("gatekeeper/lot-h/cmd/payment", payload)
    assert reply.status == "error" and reply.error
    assert "Traceback" not in reply.error
    assert store.session(sid)["amount_paid"] == 0
    events = store.events(kinds=["rejected"])
    assert len(events) == 1
    if reason is not None:
        assert events[0]["reason"] == reason


def test_unknown_command_name_is_refused(settings: Settings, store: Store) -> None:
    reply = handler(settings, store).handle("gatekeeper/lot-h/cmd/format-disk", signed({}))
    assert reply.status == "error" and "unknown command" in (reply.error or "")


def test_lists_reservation_and_tariff_commands_reach_the_store(settings: Settings, store: Store) -> None:
    changes: list[int] = []
    h = handler(settings, store, on_config_change=lambda: changes.append(1))
    assert h.handle("x/cmd/lists", signed("lists", {"kind": "deny", "op": "add", "entries": [{"plate": "BAD 1"}]})).status == "ok"
    assert [(e.plate, e.kind) for e in store.list_entries()] == [("BAD1", "deny")]
    until = NOW + timedelta(hours=3)
    reply = h.handle("x/cmd/reservation", signed("reservation", {"op": "upsert", "reservation_id": "res-1", "plate": "RS 1",
                                                  "valid_from": NOW.isoformat(), "valid_until": until.isoformat()}))
    assert reply.status == "ok"
    assert [(r.id, r.plate) for r in store.reservations()] == [("res-1", "RS1")]
    tariff = {"free_minutes": 5, "interval_minutes": 30, "rate": 100, "daily_max": 900, "grace_minutes": 10}
    assert h.handle("x/cmd/tariff", signed("tariff", {"tariff": tariff})).status == "ok"
    assert (store.tariff().rate, store.tariff().currency) == (100, "EUR")
    assert changes == [1]


def test_open_goes_to_the_lane_and_without_lanes_is_refused(settings: Settings, store: Store) -> None:
    opener = Opener()
    ok = handler(settings, store, open_handler=opener).handle("x/cmd/open", signed("open", {"lane": "exit-1", "reason": "help"}))
    assert ok.status == "ok" and opener.calls == [("exit-1", "help", "cloud")]
    refused = handler(settings, store).handle("x/cmd/open", signed("open", {"lane": "exit-1", "reason": "help"}))
    assert refused.status == "error" and "drives no barriers" in (refused.error or "")


# --------------------------------------------------------------------------- money-safe commands (issue 13)


def test_a_payment_reference_is_applied_once_even_under_a_new_id(settings: Settings, store: Store) -> None:
    sid = enter(store, "B AB 123")
    h = handler(settings, store)
    first = h.handle("x/cmd/payment", signed({"session_id": sid, "amount": 450, "reference": "psp-9"}))
    assert first.status == "ok" and not first.duplicate and first.result is not None
    assert (first.result.amount, first.result.amount_paid, first.result.command_id) == (450, 450, first.id)
    retry = h.handle("x/cmd/payment", signed({"session_id": sid, "amount": 450, "reference": "psp-9"}))
    assert retry.status == "ok" and retry.duplicate and not retry.repeat and retry.id != first.id
    assert retry.result == first.result  # the first result, not a second one
    assert "already applied" not in (retry.error or "")
    other = h.handle("x/cmd/payment", signed({"session_id": sid, "amount": 50, "reference": "psp-10"}))
    assert other.status == "ok" and other.result is not None and other.result.amount_paid == 500
    assert store.session(sid)["amount_paid"] == 500
    assert len(store.events(kinds=["paid"])) == 2


def test_same_reference_by_plate_after_the_car_left_is_still_a_duplicate(settings: Settings, store: Store) -> None:
    sid = enter(store, "B AB 123")
    h = handler(settings, store)
    assert h.handle("x/cmd/payment", signed({"session_id": sid, "amount": 450, "reference": "r"})).status == "ok"
    with store.transaction() as conn:
        conn.execute("UPDATE sessions SET status='closed' WHERE id=?", (sid,))
    retry = h.handle("x/cmd/payment", signed({"session_id": sid, "amount": 450, "reference": "r"}))
    assert retry.status == "ok" and retry.duplicate and store.session(sid)["amount_paid"] == 450


def test_a_command_signed_for_another_lot_or_command_is_refused(settings: Settings, store: Store) -> None:
    sid = enter(store, "B AB 123")
    h = handler(settings, store)
    other_lot = h.handle("gatekeeper/lot-h/cmd/payment", signed({"session_id": sid, "amount": 1}, lot="lot-x"))
    assert other_lot.status == "error" and "signature does not match" in (other_lot.error or "")
    moved = signed("open", {"lane": "exit-1", "reason": "x", "session_id": sid, "amount": 1})
    assert h.handle("x/cmd/payment", moved).status == "error"
    assert store.session(sid)["amount_paid"] == 0
    assert [e["reason"] for e in store.events(kinds=["rejected"])] == ["bad_signature", "bad_signature"]


def test_v1_signatures_only_when_enabled(settings: Settings, store: Store) -> None:
    from gatekeeper.sync.signing import sign as sign_any

    sid = enter(store, "B AB 123")
    body = sign_any({"id": uuid.uuid4().hex, "ts": NOW.isoformat(), "session_id": sid, "amount": 5}, SECRET,
                    lot="lot-h", command="payment", version="v1")
    refused = handler(settings, store).handle("x/cmd/payment", json.dumps(body).encode())
    assert refused.status == "error" and "v1 signature" in (refused.error or "")
    legacy = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"accept_v1_signatures": True})})
    assert handler(legacy, store).handle("x/cmd/payment", json.dumps(body).encode()).status == "ok"
    assert store.session(sid)["amount_paid"] == 5


def test_an_open_interrupted_by_a_crash_is_not_repeated(settings: Settings, store: Store) -> None:
    opener = Opener()
    payload = signed("open", {"lane": "exit-1", "reason": "help"})
    command_id = json.loads(payload)["id"]
    with store.transaction() as conn:  # what a crash between "id committed" and "reply committed" leaves
        store.inbound.store(conn, command_id, "open", None, now=NOW)
    reply = handler(settings, store, open_handler=opener).handle("x/cmd/open", payload)
    assert reply.status == "error" and reply.repeat and "not repeated" in (reply.error or "")
    assert opener.calls == []
    again = handler(settings, store, open_handler=opener).handle("x/cmd/open", payload)
    assert again.error == reply.error and opener.calls == []


def test_every_stored_reply_and_event_carries_a_growing_seq_kept_across_restarts(settings: Settings) -> None:
    with Store.from_settings(settings, clock=lambda: NOW) as store:
        sid = enter(store, "B AB 123")
        handler(settings, store).handle("x/cmd/payment", signed({"session_id": sid, "amount": 1}))
        first = [json.loads(r.payload)["seq"] for r in store.outbox_pending(limit=100)]
    with Store.from_settings(settings, clock=lambda: NOW) as store:
        store.record_event("alarm", reason="x")
        seqs = [json.loads(r.payload)["seq"] for r in store.outbox_pending(limit=100)]
    assert seqs[: len(first)] == first == list(range(1, len(first) + 1))
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == len(first) + 1


def test_refusals_are_summarised_at_least_every_period(settings: Settings, store: Store) -> None:
    from gatekeeper.sync.commands import RejectionLog

    log = RejectionLog(limit=2, summary_every_s=0.0)
    h = CommandHandler(settings, store, secret=SECRET, clock=lambda: NOW, rejections=log)
    for _ in range(5):
        h.handle("x/cmd/payment", b"{nope")
    assert len(store.events(kinds=["rejected"])) == 2  # rate limited one by one
    assert h.summarise_rejections()
    summary = store.events(kinds=["rejected_summary"])
    assert len(summary) == 1
    data = json.loads(summary[0]["data"])
    assert (data["count"], data["by_reason"], data["not_logged_one_by_one"]) == (5, {"malformed": 5}, 3)
    assert not h.summarise_rejections()  # nothing new: no event
    assert h.rejections_total == 5


STAFF_RULES = [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00", "end": "19:00"},
               {"days": ["fri"], "start": "22:00", "end": "06:00"}]


def test_schedules_on_allow_list_entries_and_reservations_reach_the_store(settings: Settings, store: Store) -> None:
    h = handler(settings, store)
    entries = [{"plate": "ST 1", "schedule": STAFF_RULES}, {"plate": "VIP 1", "schedule": None}]
    assert h.handle("x/cmd/lists", signed("lists", {"kind": "allow", "op": "add", "entries": entries})).status == "ok"
    by_plate = {e.plate: e for e in store.list_entries()}
    assert by_plate["ST1"].schedule is not None and by_plate["VIP1"].schedule is None
    assert by_plate["ST1"].schedule.describe() == "Mon-Fri 07:00-19:00; Fri 22:00-06:00"
    assert by_plate["ST1"].schedule.tz == settings.site.tz  # the lot's zone (Europe/Berlin by default)
    reply = h.handle("x/cmd/reservation", signed("reservation", {
        "op": "upsert", "reservation_id": "weekly-1", "plate": "RS 1", "valid_from": NOW.isoformat(),
        "valid_until": (NOW + timedelta(days=90)).isoformat(), "schedule": [{"days": ["tue"], "start": "09:00", "end": "12:00"}]}))
    assert reply.status == "ok"
    assert store.reservations()[0].schedule.describe() == "Tue 09:00-12:00"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "kind, schedule, says",
    [
        ("allow", [{"days": ["mon"], "start": "07:00", "end": "07:00"}], "entries.0.schedule.0: Value error, 07:00-07:00 is empty"),
        ("allow", [{"days": ["monday"], "start": "07:00", "end": "19:00"}], "entries.0.schedule.0.days.0: Input should be 'mon'"),
        ("allow", [{"days": ["mon", "mon"], "start": "07:00", "end": "19:00"}], "entries.0.schedule.0.days: Value error, each day at most once"),
        ("allow", [{"days": ["mon"], "start": "24:00", "end": "19:00"}], "entries.0.schedule.0.start: String should match pattern"),
        ("allow", [{"days": ["mon"], "start": "7:00", "end": "19:00"}], "entries.0.schedule.0.start"),
        ("allow", [{"days": ["mon"], "start": "07:00", "end": "24:01"}], "entries.0.schedule.0.end"),
        ("allow", [{"days": ["mon"], "start": "07:00", "end": "19:00", "tz": "UTC"}], "entries.0.schedule.0.tz: Extra inputs"),
        ("allow", [{"days": [], "start": "07:00", "end": "19:00"}], "entries.0.schedule.0.days: List should have at least 1"),
        ("allow", [], "entries.0.schedule: List should have at least 1 item"),
        ("allow", "Mon-Fri 07:00-19:00", "entries.0.schedule: Input should be a valid array"),
        ("deny", [{"days": ["mon"], "start": "07:00", "end": "19:00"}], "entries.0.schedule: only allow-list entries"),
    ],
)
def test_a_bad_schedule_is_refused_as_invalid_naming_the_field(settings: Settings, store: Store, kind: str,
                                                               schedule: object, says: str) -> None:
    h = handler(settings, store)
    entries = [{"plate": "OK 1"}, {"plate": "ST 1", "schedule": schedule}][::-1]
    reply = h.handle("x/cmd/lists", signed("lists", {"kind": kind, "op": "add", "entries": entries}))
    assert reply.status == "error" and says in (reply.error or ""), reply.error
    assert "Traceback" not in (reply.error or "")
    assert store.list_entries() == []  # nothing of the command applied
    assert [e["reason"] for e in store.events(kinds=["rejected"])] == ["invalid"]


def test_a_bad_reservation_schedule_is_refused_as_invalid(settings: Settings, store: Store) -> None:
    reply = handler(settings, store).handle("x/cmd/reservation", signed("reservation", {
        "op": "upsert", "reservation_id": "r-1", "plate": "RS 1", "valid_from": NOW.isoformat(),
        "valid_until": (NOW + timedelta(days=1)).isoformat(), "schedule": [{"days": ["sun"], "start": "10:00"}]}))
    assert reply.status == "error" and "schedule.0.end: Field required" in (reply.error or "")
    assert store.reservations() == []

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


def signed(body: dict[str, Any], *, secret: str = SECRET, at: datetime = NOW, **overrides: Any) -> bytes:
    full = {"id": uuid.uuid4().hex, "ts": at.isoformat(), **body, **overrides}
    return json.dumps(sign(full, secret)).encode()


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


def test_replayed_command_is_refused_and_pays_nothing_twice(settings: Settings, store: Store) -> None:
    sid = enter(store, "B AB 123")
    h = handler(settings, store)
    payload = signed({"session_id": sid, "amount": 100})
    assert h.handle("gatekeeper/lot-h/cmd/payment", payload).status == "ok"
    again = h.handle("gatekeeper/lot-h/cmd/payment", payload)
    assert again.status == "error" and "already used" in (again.error or "")
    assert store.session(sid)["amount_paid"] == 100
    assert (h.commands_ok, h.commands_rejected) == (1, 1)
    rejected = store.events(kinds=["rejected"])
    assert len(rejected) == 1 and rejected[0]["reason"] == "replay"


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
    assert h.handle("x/cmd/lists", signed({"kind": "deny", "op": "add", "entries": [{"plate": "BAD 1"}]})).status == "ok"
    assert [(e.plate, e.kind) for e in store.list_entries()] == [("BAD1", "deny")]
    until = NOW + timedelta(hours=3)
    reply = h.handle("x/cmd/reservation", signed({"op": "upsert", "reservation_id": "res-1", "plate": "RS 1",
                                                  "valid_from": NOW.isoformat(), "valid_until": until.isoformat()}))
    assert reply.status == "ok"
    assert [(r.id, r.plate) for r in store.reservations()] == [("res-1", "RS1")]
    tariff = {"free_minutes": 5, "interval_minutes": 30, "rate": 100, "daily_max": 900, "grace_minutes": 10}
    assert h.handle("x/cmd/tariff", signed({"tariff": tariff})).status == "ok"
    assert (store.tariff().rate, store.tariff().currency) == (100, "EUR")
    assert changes == [1]


def test_open_goes_to_the_lane_and_without_lanes_is_refused(settings: Settings, store: Store) -> None:
    opener = Opener()
    ok = handler(settings, store, open_handler=opener).handle("x/cmd/open", signed({"lane": "exit-1", "reason": "help"}))
    assert ok.status == "ok" and opener.calls == [("exit-1", "help", "cloud")]
    refused = handler(settings, store).handle("x/cmd/open", signed({"lane": "exit-1", "reason": "help"}))
    assert refused.status == "error" and "drives no barriers" in (refused.error or "")

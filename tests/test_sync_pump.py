"""The outbox pump behind the transport seam: an in-memory transport stands in for paho here,
so the bookkeeping (order, window, early and refused acknowledgements) is tested on its own.
The real broker path is tested in test_sync.py and test_sync_outage.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Iterator

import pytest

from gatekeeper.store import Store
from gatekeeper.sync.outbox import OutboxPump
from gatekeeper.sync.transport import PublishError

NOW = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


class MemoryTransport:
    """Records publishes; acknowledges only when the test says so."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str, bytes]] = []
        self.refuse_next = False
        self._mid = 0

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                correlation: bytes | None = None) -> int:
        if self.refuse_next:
            self.refuse_next = False
            raise PublishError("out of memory")
        self._mid += 1
        self.sent.append((self._mid, topic, payload))
        return self._mid


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "gk.db", lot_id="lot-p", capacity=5, clock=lambda: NOW) as s:
        with s.transaction():
            for n in range(5):
                s.record_event("alarm", reason=f"r{n}", message=f"event {n}")
        yield s


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pump_for(store: Store, window: int = 3, *, wait: float = 30.0,
             ticks: Ticks | None = None) -> tuple[OutboxPump, list[str]]:
    errors: list[str] = []
    return OutboxPump(store, base="gk/lot-p", window=window, clock=lambda: NOW, on_error=errors.append,
                      retry_wait=lambda: wait, monotonic=ticks or Ticks()), errors


def test_rows_go_out_in_order_within_the_window_and_are_sent_only_when_acked(store: Store) -> None:
    pump, _ = pump_for(store, window=3)
    transport = MemoryTransport()
    pump.publish_backlog(transport, go_on=lambda: True)
    assert [topic for _, topic, _ in transport.sent] == ["gk/lot-p/events/alarm"] * 3
    reasons = [b'"reason":"r0"', b'"reason":"r1"', b'"reason":"r2"']
    assert all(r in payload for r, (_, _, payload) in zip(reasons, transport.sent))
    assert store.outbox_stats()["pending"] == 5  # nothing acknowledged yet
    assert pump.on_acked(1, None) and pump.on_acked(2, None)
    pump.flush_acks()
    stats = store.outbox_stats()
    assert (stats["pending"], stats["sent"]) == (3, 2)
    pump.publish_backlog(transport, go_on=lambda: True)  # two slots free again
    assert len(transport.sent) == 5 and pump.inflight_rows() == 3


def test_an_ack_that_beats_publish_returning_still_counts(store: Store) -> None:
    pump, _ = pump_for(store)
    assert pump.on_acked(7, None) is False  # paho's thread was faster than publish() returning
    pump.register(7, 1)
    pump.flush_acks()
    assert store.outbox_stats()["sent"] == 1 and pump.acknowledged == 1


def test_a_refused_row_is_kept_and_sent_again_alone_after_the_wait(store: Store) -> None:
    ticks = Ticks()
    pump, errors = pump_for(store, window=3, wait=30.0, ticks=ticks)
    transport = MemoryTransport()
    pump.publish_backlog(transport, go_on=lambda: True)  # rows 1-3 in flight
    pump.on_acked(1, "Not authorized (PUBACK 0x87)")  # the ACL says no to row 1
    assert pump.on_acked(2, None) and pump.on_acked(3, None)  # rows 2 and 3 were fine
    pump.flush_acks()
    assert errors and "refused outbox row 1" in errors[0] and pump.refused_row == 1
    refusal = pump.refusals.get("publish")
    assert refusal is not None and "Not authorized" in refusal.reason and "outbox row 1" in refusal.detail
    assert store.outbox_stats()["pending"] == 3  # row 1 is not lost: still unsent

    pump.publish_backlog(transport, go_on=lambda: True)
    assert len(transport.sent) == 3  # within the wait: nothing goes, the broker is not hammered
    ticks.now += 30.0
    pump.publish_backlog(transport, go_on=lambda: True)
    assert len(transport.sent) == 4 and transport.sent[3][2] == transport.sent[0][2]  # row 1 again, alone
    pump.on_acked(4, "Not authorized (PUBACK 0x87)")  # still refused: the same wait again
    ticks.now += 29.0
    pump.publish_backlog(transport, go_on=lambda: True)
    assert len(transport.sent) == 4 and pump.refusals.get("publish").attempts == 2  # type: ignore[union-attr]
    ticks.now += 1.0
    pump.publish_backlog(transport, go_on=lambda: True)
    assert len(transport.sent) == 5
    pump.on_acked(5, None)  # the ACL was fixed
    assert pump.refused_row is None and pump.refusals.get("publish") is None
    pump.publish_backlog(transport, go_on=lambda: True)  # back to the whole window: rows 4 and 5
    pump.flush_acks()
    assert len(transport.sent) == 7 and store.outbox_stats()["sent"] == 3


def test_a_publish_the_client_refuses_keeps_the_row(store: Store) -> None:
    pump, _ = pump_for(store, window=1)
    transport = MemoryTransport()
    transport.refuse_next = True
    pump.publish_backlog(transport, go_on=lambda: True)  # row 1 refused by the client: stays unsent
    pump.flush_acks()
    assert store.outbox_stats()["pending"] == 5 and transport.sent == []
    pump.publish_backlog(transport, go_on=lambda: True)
    assert len(transport.sent) == 1 and b'"reason":"r0"' in transport.sent[0][2]


def test_a_refused_status_or_reply_is_logged_with_its_topic(store: Store) -> None:
    pump, errors = pump_for(store)
    pump.register(9, None, "gk/lot-p/status")
    pump.on_acked(9, "Not authorized (PUBACK 0x87)")
    assert errors == ["broker refused gk/lot-p/status: Not authorized (PUBACK 0x87)"]
    assert pump.refused_row is None  # nothing of the outbox is held back for it


def test_housekeeping_forgets_command_ids_only_past_their_keep_time(store: Store) -> None:
    """Processed command ids would grow for ever; they go after mqtt.command_ids_keep_days
    (longer than any command could still be accepted), the recent ones stay replay-proof."""
    from datetime import timedelta

    from gatekeeper.config import MqttConfig
    from gatekeeper.sync.outbox import OutboxWatch

    old, recent = NOW - timedelta(days=9), NOW - timedelta(days=7)
    assert store.remember_inbound("cmd-old", "cmd/payment", now=old)
    assert store.remember_inbound("cmd-recent", "cmd/payment", now=recent)
    watch = OutboxWatch(store, MqttConfig(), clock=lambda: NOW, wake=lambda: None)
    watch.housekeeping()
    assert store.remember_inbound("cmd-recent", "cmd/payment") is False   # still known: a replay
    assert store.remember_inbound("cmd-old", "cmd/payment") is True       # forgotten after 8 days

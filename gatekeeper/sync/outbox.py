"""The outbox pump: unsent rows go to the broker QoS 1, strictly in id order, and a row is
marked sent only once its PUBACK arrived.

At most ``window`` rows await a PUBACK at a time. A PUBACK may arrive before ``publish``
returned its message id (paho calls back from its network thread): such early
acknowledgements wait in ``_early`` until the id is registered.

A row the broker refused (an MQTT 5 PUBACK failure reason code, e.g. its ACL says no) stays unsent:
the cursor rewinds to it and, until the broker accepts it, it goes alone and only after a wait
(:func:`~gatekeeper.sync.refusals.refused_wait`), so a lot whose ACL is wrong neither loses the row
nor hammers the broker with it; the refusal is logged and shown (:class:`~gatekeeper.sync.refusals.Refusals`).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Callable

from gatekeeper.config import MqttConfig
from gatekeeper.store import Store, from_iso
from gatekeeper.sync.refusals import Refusals
from gatekeeper.sync.transport import PublishError, Transport

log = logging.getLogger(__name__)

HOUSEKEEPING_EVERY_S = 10.0
PRUNE_EVERY_S = 3600.0


class OutboxPump:
    """Publishes the outbox through a transport and books the acknowledgements. Thread-safe."""

    def __init__(
        self,
        store: Store,
        *,
        base: str,
        window: int,
        clock: Callable[[], datetime],
        on_error: Callable[[str], None],
        refusals: Refusals | None = None,
        retry_wait: Callable[[], float] = lambda: 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.base = base
        self.clock = clock
        self._on_error = on_error
        self.refusals = refusals or Refusals(clock=clock)
        self._retry_wait = retry_wait
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[int | None, str]] = {}  # mid -> (outbox row id or None: reply/status, topic)
        self._refused_row: int | None = None  # the broker refuses this row: it goes alone, after a wait
        self._hold_until = 0.0  # monotonic time before which the refused row is not sent again
        self._early: dict[int, str | None] = {}  # PUBACKs that beat publish() returning: mid -> error
        self._acked: list[int] = []  # row ids acknowledged, not yet marked sent
        self._cursor = 0  # highest row id handed to the transport
        self._rewind_to: int | None = None
        self._window = window
        self.last_ack_at: datetime | None = None
        self.published = 0
        self.acknowledged = 0
        #: Called with (transport, relative topic, payload) after each row is handed over (Home Assistant).
        self.on_published: Callable[[Transport, str, str], None] | None = None

    @property
    def window(self) -> int:
        return self._window

    def set_window(self, window: int) -> None:
        with self._lock:
            self._window = window

    def inflight_rows(self) -> int:
        with self._lock:
            return self._inflight_rows()

    def _inflight_rows(self) -> int:
        return sum(1 for row, _ in self._inflight.values() if row is not None)

    @property
    def refused_row(self) -> int | None:
        return self._refused_row

    def register(self, mid: int, row_id: int | None, topic: str = "") -> None:
        """``mid`` was handed to the transport (``row_id`` None: a status or reply, only bookkept)."""
        with self._lock:
            if mid in self._early:
                self._settle(row_id, topic, self._early.pop(mid))
            else:
                self._inflight[mid] = (row_id, topic)
            if row_id is not None:
                self._cursor = max(self._cursor, row_id)

    def publish_untracked(self, transport: Transport, topic: str, payload: bytes, *,
                          retain: bool = False, correlation: bytes | None = None) -> None:
        """Status, discovery and replies: QoS 1 but not from the outbox, so the PUBACK is only bookkept
        (it keeps the window honest, and a refusal is reported)."""
        try:
            mid = transport.publish(topic, payload, qos=1, retain=retain, correlation=correlation)
        except PublishError as exc:
            log.error("publish to %s failed: %s", topic, exc)
            return
        self.register(mid, None, topic)

    def on_acked(self, mid: int, error: str | None) -> bool:
        """A PUBACK; False when it came before its message id was registered."""
        with self._lock:
            if mid not in self._inflight:
                self._early[mid] = error
                return False
            self._settle(*self._inflight.pop(mid), error)
        return True

    def _settle(self, row_id: int | None, topic: str, error: str | None) -> None:
        """A PUBACK for ``row_id`` on ``topic`` (lock held)."""
        if row_id is None:
            if error is not None:  # a status, a discovery config or a reply refused before authentication
                self._on_error(f"broker refused {topic}: {error}")
                log.error("MQTT broker refused our message on %s: %s (not stored, not sent again); "
                          "check the broker's ACL for this lot (docs/security.md)", topic, error)
            return
        if error is not None:
            # The broker refused it (e.g. not authorised): keep it unsent, send it again alone after a wait.
            wait = self._retry_wait()
            self._on_error(f"broker refused outbox row {row_id} on {topic}: {error}")
            self.refusals.refused("publish", error, detail=f"outbox row {row_id} on {topic}",
                                  hint=f"the row stays in the outbox and is tried again in {wait:.0f} s; "
                                  "check the broker's ACL for this lot (docs/security.md)")
            self._rewind_to = row_id if self._rewind_to is None else min(self._rewind_to, row_id)
            self._refused_row = row_id if self._refused_row is None else min(self._refused_row, row_id)
            self._hold_until = self._monotonic() + wait
            return
        if row_id == self._refused_row:
            self._refused_row = None
            self.refusals.cleared("publish")
        self._acked.append(row_id)
        self.acknowledged += 1
        self.last_ack_at = self.clock()

    def flush_acks(self) -> None:
        """Mark the acknowledged rows sent (one transaction)."""
        with self._lock:
            ids, self._acked = self._acked, []
        if not ids:
            return
        try:
            self.store.outbox_mark_sent(ids)
        except Exception:
            with self._lock:
                self._acked = ids + self._acked
            raise

    def publish_backlog(self, transport: Transport, *, go_on: Callable[[], bool]) -> None:
        """Publish unsent rows in id order until the window is full, the outbox is empty or ``go_on()`` is False."""
        while go_on():
            with self._lock:
                if self._rewind_to is not None:
                    self._cursor, self._rewind_to = self._rewind_to - 1, None
                if self._refused_row is None:
                    room = self._window - self._inflight_rows()
                elif self._monotonic() < self._hold_until:
                    return  # the drain's poll comes back after the wait
                else:
                    room = 1 - self._inflight_rows()  # the refused row alone, until the broker takes it
                cursor = self._cursor
            if room <= 0:
                return  # a PUBACK wakes us
            rows = self.store.outbox_pending(limit=min(room, 500), after_id=cursor)
            if not rows:
                return
            sent: list[int] = []
            for row in rows:
                if not go_on():
                    break
                try:
                    mid = transport.publish(f"{self.base}/{row.topic}", row.payload.encode("utf-8"),
                                            qos=row.qos, retain=row.retain, correlation=row.correlation)
                except ValueError as exc:  # an invalid topic can never be sent: say so, keep it
                    log.error("outbox row %d (%s) cannot be published: %s", row.id, row.topic, exc)
                    with self._lock:
                        self._cursor = max(self._cursor, row.id)
                    continue
                except PublishError as exc:
                    log.warning("publish of outbox row %d failed: %s", row.id, exc)
                    return
                self.register(mid, row.id, row.topic)
                self.published += 1
                if self.on_published is not None:
                    self.on_published(transport, row.topic, row.payload)
                sent.append(row.id)
            # One commit (one fsync) per batch: the attempts counted and the PUBACKs so far marked sent.
            with self.store.transaction():
                if sent:
                    self.store.outbox_note_attempt(sent)
                self.flush_acks()


class OutboxWatch:
    """Housekeeping: an alarm when the backlog outgrows its bounds, pruning of long-sent rows and of
    processed command ids past ``mqtt.command_ids_keep_days``."""

    def __init__(self, store: Store, cfg: MqttConfig, *, clock: Callable[[], datetime], wake: Callable[[], None]) -> None:
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self._wake = wake
        self.alarm = False
        self._last_housekeeping = 0.0
        self._last_prune = 0.0

    def housekeeping(self) -> None:
        now_mono = time.monotonic()
        if now_mono - self._last_housekeeping < HOUSEKEEPING_EVERY_S:
            return
        self._last_housekeeping = now_mono
        self.check_bound()
        if now_mono - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now_mono
            keep = timedelta(days=self.cfg.outbox_keep_sent_days)
            pruned = self.store.prune_outbox(sent_before=self.clock() - keep)
            if pruned:
                log.info("pruned %d acknowledged outbox rows older than %s", pruned, keep)
            forget = timedelta(days=self.cfg.command_ids_keep_days)
            forgotten = self.store.prune_inbound(before=self.clock() - forget)
            if forgotten:
                log.info("forgot %d processed command ids older than %s", forgotten, forget)

    def check_bound(self) -> bool:
        """Raise one alarm event when the backlog crosses mqtt.outbox_max_rows/_max_age_days.

        Nothing is deleted: the bound only makes the problem loud. The alarm re-arms once the
        backlog is back under 90 % of both limits. Returns whether the alarm is raised.
        """
        cfg = self.cfg
        stats = self.store.outbox_stats()
        pending = int(stats["pending"])
        oldest = from_iso(stats["oldest_pending_at"])
        age = self.clock() - oldest if oldest else timedelta(0)
        max_age = timedelta(days=cfg.outbox_max_age_days)
        over = pending >= cfg.outbox_max_rows or age >= max_age
        if over and not self.alarm:
            self.alarm = True
            which = "outbox_full" if pending >= cfg.outbox_max_rows else "outbox_too_old"
            message = (f"outbox backlog {pending} messages, oldest {age.days} days "
                       f"(limits {cfg.outbox_max_rows} messages, {cfg.outbox_max_age_days} days); nothing is deleted")
            log.error("ALARM %s: %s", which, message)
            self.store.record_event("alarm", reason=which, message=message, data={
                "pending": pending, "oldest_pending_at": stats["oldest_pending_at"],
                "max_rows": cfg.outbox_max_rows, "max_age_days": cfg.outbox_max_age_days,
            })
            self._wake()
        elif self.alarm and pending < 0.9 * cfg.outbox_max_rows and age < 0.9 * max_age:
            self.alarm = False
            log.info("outbox backlog back under its limits (%d messages)", pending)
            self.store.record_event("alarm_cleared", reason="outbox_ok",
                                    message=f"outbox backlog back under its limits ({pending} messages)",
                                    data={"pending": pending})
        return self.alarm

"""What the broker refused us, since when and how often: the connection, a subscription, an outbox row.

A refusal is the broker saying no: a CONNACK "not authorised" or "bad user name or password", a TLS
identity it does not accept, a SUBACK or PUBACK with an MQTT 5 failure reason code (its ACL). Retrying at
the reconnect pace changes nothing and hammers the broker; retrying silently hides a mis-provisioned lot.
So every refusal is logged (ERROR the first time, WARNING while it lasts), shown by ``gatekeeper status``,
kept as one ``alarm`` event (it reaches the cloud through the outbox once the broker lets it) with an
``alarm_cleared`` when it ends, and the thing refused is tried again only every ``mqtt.refused_retry_s``.

Set from paho's network thread and the drain thread; the alarm events are written by the drain thread.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable

from gatekeeper.config import MqttConfig
from gatekeeper.store import Store, to_iso

log = logging.getLogger(__name__)

#: The alarm event's reason per kind of refusal; the cleared event's reason is in CLEARED.
ALARMS = {"connect": "broker_refused", "subscribe": "subscription_refused", "publish": "publish_refused"}
CLEARED = {"connect": "broker_ok", "subscribe": "subscription_ok", "publish": "publish_ok"}
#: What people read, per kind (``gatekeeper status``, the alarm's message).
WHAT = {"connect": "connection refused", "subscribe": "subscription refused", "publish": "publish refused"}


def identity_warnings(cfg: MqttConfig, lot_id: str) -> list[str]:
    """What in the lot's MQTT set-up defeats the broker ACL of docs/security.md (logged at start, a doctor WARN)."""
    warnings = []
    if cfg.username and cfg.username != lot_id:
        warnings.append(f"mqtt.username {cfg.username!r} is not the lot id {lot_id!r}: the broker ACL of "
                        "docs/security.md confines user X to gatekeeper/X/..., so it would refuse this lot's topics")
    if cfg.protocol != "5":
        warnings.append(f"mqtt.protocol {cfg.protocol}: a broker that refuses a publish (its ACL) acknowledges and "
                        "drops it, and the row counts as sent; MQTT 5 makes the refusal visible")
    return warnings


def refused_wait(retry_s: float, rng: Callable[[], float] = random.random) -> float:
    """The wait before trying something refused again: uniform in [retry_s / 2, retry_s] (never a burst,
    and a fleet refused at once does not come back in step)."""
    return retry_s * (0.5 + 0.5 * rng())


@dataclass(frozen=True)
class Refusal:
    """One thing the broker keeps refusing."""

    kind: str  # connect, subscribe, publish
    reason: str  # the broker's reason code text, or the TLS error
    detail: str  # what was refused: the broker address, a topic filter, an outbox row
    since: datetime
    last_at: datetime
    attempts: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "reason": self.reason, "detail": self.detail, "since": to_iso(self.since),
                "last_at": to_iso(self.last_at), "attempts": self.attempts}

    def event_data(self) -> dict[str, Any]:
        """For the alarm events (whose own ``kind`` and ``reason`` must not be overwritten)."""
        return {"refused": self.kind, "broker_reason": self.reason, "detail": self.detail,
                "since": to_iso(self.since), "last_at": to_iso(self.last_at), "attempts": self.attempts}

    def text(self) -> str:
        return f"{WHAT[self.kind]}: {self.reason} ({self.detail})"


class Refusals:
    """The open refusals by key (``connect``, ``subscribe:<filter>``, ``publish``). Thread-safe."""

    def __init__(self, *, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, Refusal] = {}
        self._alarmed: dict[str, Refusal] = {}  # key -> the refusal an alarm event was recorded for

    def refused(self, kind: str, reason: str, *, detail: str, key: str | None = None, hint: str = "") -> Refusal:
        """Note one refusal (again); logs ERROR the first time, WARNING on every repeat."""
        key = key or kind
        now = self.clock()
        with self._lock:
            current = self._open.get(key)
            if current is None:
                current = Refusal(kind, reason, detail, since=now, last_at=now)
            else:
                current = replace(current, reason=reason, detail=detail, last_at=now, attempts=current.attempts + 1)
            self._open[key] = current
        advice = f"; {hint}" if hint else ""
        if current.attempts == 1:
            log.error("MQTT %s%s", current.text(), advice)
        else:
            log.warning("MQTT still %s (attempt %d, since %s)%s", current.text(), current.attempts,
                        to_iso(current.since), advice)
        return current

    def cleared(self, key: str) -> Refusal | None:
        """The broker accepted what it refused before; the refusal that ended, if there was one."""
        with self._lock:
            ended = self._open.pop(key, None)
            if ended is not None and key in self._alarmed:
                self._alarmed[key] = ended  # its cleared event tells the whole story
        if ended is not None:
            log.info("MQTT %s no longer: accepted after %d refused attempt(s)", WHAT[ended.kind], ended.attempts)
        return ended

    def get(self, key: str) -> Refusal | None:
        with self._lock:
            return self._open.get(key)

    def current(self) -> list[Refusal]:
        with self._lock:
            return list(self._open.values())

    def summary(self) -> str | None:
        """One line for ``gatekeeper status`` and systemd's STATUS=, the connection first."""
        refusals = sorted(self.current(), key=lambda r: list(ALARMS).index(r.kind))
        return "; ".join(r.text() for r in refusals) or None

    def health(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.current()]

    def record_alarms(self, store: Store) -> bool:
        """Drain thread: one ``alarm`` event per refusal, its ``alarm_cleared`` once it ended. True when
        an event was recorded (the outbox has a new row)."""
        with self._lock:
            opened = [(k, r) for k, r in self._open.items() if k not in self._alarmed]
            ended = [(k, r) for k, r in self._alarmed.items() if k not in self._open]
        for key, refusal in opened:
            store.record_event("alarm", reason=ALARMS[refusal.kind], message=f"MQTT {refusal.text()}",
                               data=refusal.event_data())
            with self._lock:
                self._alarmed[key] = refusal
        for key, refusal in ended:
            store.record_event("alarm_cleared", reason=CLEARED[refusal.kind],
                               message=f"MQTT {WHAT[refusal.kind]} no longer ({refusal.detail})",
                               data={**refusal.event_data(), "until": to_iso(self.clock())})
            with self._lock:
                self._alarmed.pop(key, None)
        return bool(opened or ended)

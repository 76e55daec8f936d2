"""The filters the lot subscribes to, each remembered until its SUBACK.

A filter the broker refuses (a SUBACK failure reason code: its ACL) is a
:class:`~gatekeeper.sync.refusals.Refusals` entry and is subscribed again after
``mqtt.refused_retry_s`` (half to all of it): an ACL fixed on the broker takes effect without a
restart of the lot, and a wrong one is not hammered.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from gatekeeper.sync.refusals import Refusals
from gatekeeper.sync.transport import Transport


class Subscriptions:
    """SUBSCRIBE ids awaiting their SUBACK, and the refused filters with the time to try again. Thread-safe."""

    def __init__(self, *, refusals: Refusals, retry_wait: Callable[[], float]) -> None:
        self.refusals = refusals
        self._retry_wait = retry_wait
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[str, int, str]] = {}  # mid -> (filter, qos, what a refusal breaks)
        self._retry: dict[str, tuple[float, int, str]] = {}  # refused filter -> (monotonic due time, qos, ...)

    def subscribe(self, transport: Transport, topic: str, *, qos: int, purpose: str) -> int:
        """Subscribe; ``purpose`` says what stops working if the broker refuses (for the log)."""
        with self._lock:  # held over the call: the SUBACK (paho's thread) waits until the mid is known
            mid = transport.subscribe(topic, qos=qos)
            self._pending[mid] = (topic, qos, purpose)
            self._retry.pop(topic, None)
            return mid

    def expect(self, mid: int, topic: str, *, qos: int, purpose: str) -> None:
        """A subscription someone else made (Home Assistant's buttons): its SUBACK is booked here too."""
        with self._lock:
            self._pending[mid] = (topic, qos, purpose)
            self._retry.pop(topic, None)

    def on_suback(self, mid: int, error: str | None) -> str | None:
        """Book a SUBACK; the filter it was for (None: not one of ours)."""
        with self._lock:
            entry = self._pending.pop(mid, None)
            if entry is None:
                return None
            topic, qos, purpose = entry
            wait = self._retry_wait()
            if error is not None:
                self._retry[topic] = (time.monotonic() + wait, qos, purpose)
        if error is None:
            self.refusals.cleared(f"subscribe:{topic}")
        else:
            self.refusals.refused("subscribe", error, detail=topic, key=f"subscribe:{topic}",
                                  hint=f"{purpose}; subscribing again in {wait:.0f} s; check the broker's ACL "
                                  "for this lot (docs/security.md)")
        return topic

    def awaiting(self) -> list[str]:
        """The filters whose SUBACK has not come yet."""
        with self._lock:
            return [topic for topic, _, _ in self._pending.values()]

    def retry_due(self, transport: Transport) -> list[tuple[str, int]]:
        """Subscribe again to the refused filters whose wait is over; [(filter, mid)]."""
        now = time.monotonic()
        with self._lock:
            due = [(t, qos, why) for t, (at, qos, why) in self._retry.items() if at <= now]
        return [(topic, self.subscribe(transport, topic, qos=qos, purpose=why)) for topic, qos, why in due]

    def clear_retries(self) -> None:
        """A new connection subscribes to everything again."""
        with self._lock:
            self._retry.clear()

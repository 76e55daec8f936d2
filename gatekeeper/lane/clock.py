"""The lane's clocks: the system's for the service, a hand-moved one for tests.

One object gives both times the lane needs, so a test moves wall time (fees,
grace) and monotonic time (read window, hold-off) together and never sleeps.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class SystemClock:
    """Wall time from the system (UTC), monotonic time from ``time.monotonic``."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to; both readings advance together. Thread-safe."""

    def __init__(self, start: datetime | None = None, *, monotonic_start: float = 1000.0) -> None:
        start = start or datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._now = start
        self._mono = monotonic_start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def __call__(self) -> datetime:
        """The store's clock signature (``Callable[[], datetime]``): one clock for lane and store."""
        return self.now()

    def advance(self, delta: timedelta | float) -> None:
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError("time does not run backwards")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds

"""The barrier's threads: named timers that can be cancelled, and the one thread that tells listeners."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)


class _Timer:
    """A pending action; the entry's identity tells a fired timer whether it is still current."""

    __slots__ = ("thread",)

    def __init__(self, thread: threading.Timer) -> None:
        self.thread = thread


class Timers:
    """Named one-shot timers whose actions run under the owner's lock; scheduling a name again replaces it."""

    def __init__(self, lock: threading.RLock, *, name: str, stopped: Callable[[], bool]) -> None:
        self.lock = lock
        self._name = name
        self.stopped = stopped
        self._timers: dict[str, _Timer] = {}

    def schedule(self, key: str, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` under the lock after ``delay`` unless cancelled or rescheduled first (lock held)."""
        self.cancel(key)
        entry: _Timer

        def fire() -> None:
            with self.lock:
                if self.stopped() or self._timers.get(key) is not entry:
                    return  # cancelled or replaced while we waited for the lock
                del self._timers[key]
                try:
                    action()
                except Exception:
                    log.exception("%s: timer %s failed", self._name, key)

        entry = _Timer(threading.Timer(delay, fire))
        entry.thread.name = f"{self._name}-{key}"
        entry.thread.daemon = True
        self._timers[key] = entry
        entry.thread.start()

    def cancel(self, key: str) -> None:
        entry = self._timers.pop(key, None)
        if entry is not None:
            entry.thread.cancel()

    def cancel_all(self) -> None:
        for timer in self._timers.values():
            timer.thread.cancel()
        self._timers.clear()


class Dispatcher:
    """One thread that hands queued items to a handler, in order, outside any lock."""

    def __init__(self, handler: Callable[[Any], None], *, name: str) -> None:
        self._handler = handler
        self._queue: queue.SimpleQueue[tuple[Any] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, item: Any) -> None:
        self._queue.put((item,))

    def on_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then end the thread (not waited for when called from it)."""
        self._queue.put(None)
        if not self.on_thread() and self.thread.is_alive():
            self.thread.join(timeout=timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._handler(item[0])

"""Progress for long work (model loading, many images, the doctor): on stderr, only for a person.

Shown when stderr is a terminal, or when asked with ``--progress``; never mixed into stdout,
so ``--json`` output and pipes stay clean. On a terminal each message overwrites the last.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``say("loading...")``, ``count(i, n, what)``; ``done()`` clears the line."""

    def __init__(self, *, enabled: bool = False, stream: TextIO | None = None, min_interval_s: float = 0.2) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled or self.tty
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._width = 0

    def say(self, message: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            pad = " " * max(0, self._width - len(message))
            self.stream.write(f"\r{message}{pad}")
            self._width = len(message)
        else:
            self.stream.write(message + "\n")
        self.stream.flush()

    def count(self, done: int, total: int, what: str) -> None:
        """``what 3/40`` at most every ``min_interval_s`` (and always the last one)."""
        now = time.monotonic()
        if done < total and now - self._last < self.min_interval_s:
            return
        self._last = now
        self.say(f"{what} {done}/{total}")

    def done(self) -> None:
        if self.enabled and self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

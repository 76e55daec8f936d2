"""Lane display targets: where the driver's message ("Welcome", "Please pay 4.50 EUR") goes.

``log``        the message is logged (the simulated lane, or no display fitted);
``file:PATH``  the message is written to PATH atomically (write + rename), for a
               display driver or kiosk page that watches the file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class LaneDisplay(Protocol):
    def show(self, message: str, *, plate: str = "", kind: str = "") -> None: ...

    @property
    def last(self) -> str | None: ...

    def close(self) -> None: ...


class LogDisplay:
    """Log the message: the simulated lane's display."""

    def __init__(self, *, lane: str) -> None:
        self.lane = lane
        self._last: str | None = None

    @property
    def last(self) -> str | None:
        return self._last

    def show(self, message: str, *, plate: str = "", kind: str = "") -> None:
        self._last = message
        log.info("lane %s display: %s%s", self.lane, message, f" [{plate}]" if plate else "")

    def close(self) -> None:
        pass


class FileDisplay:
    """Write the message as JSON to a file, replaced atomically so a reader never sees half a message."""

    def __init__(self, *, lane: str, path: str | os.PathLike[str]) -> None:
        self.lane = lane
        self.path = Path(path)
        self._last: str | None = None
        self._lock = threading.Lock()

    @property
    def last(self) -> str | None:
        return self._last

    def show(self, message: str, *, plate: str = "", kind: str = "") -> None:
        self._last = message
        body = {
            "lane": self.lane,
            "message": message,
            "plate": plate,
            "kind": kind,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".display-", dir=self.path.parent)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(body, fh)
                    fh.write("\n")
                os.replace(tmp, self.path)
            except OSError as exc:
                # The display is a courtesy: a full disk must not stop the lane.
                log.error("lane %s: cannot write display file %s: %s (message was %r)", self.lane, self.path, exc, message)

    def close(self) -> None:
        pass


def make_display(target: str, *, lane: str) -> LogDisplay | FileDisplay:
    """The display a ``LaneConfig.display`` string names."""
    if target == "log":
        return LogDisplay(lane=lane)
    if target.startswith("file:") and len(target) > len("file:"):
        return FileDisplay(lane=lane, path=target[len("file:"):])
    raise ValueError(f"lane {lane}: unknown display target {target!r} (use 'log' or 'file:PATH')")

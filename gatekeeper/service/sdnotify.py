"""systemd's notify protocol over ``$NOTIFY_SOCKET``, with the standard library only.

systemd starts the service with ``NOTIFY_SOCKET`` naming a Unix datagram socket
(a path, or ``@name`` in the abstract namespace) and, when ``WatchdogSec=`` is
set, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). Outside systemd the variables
are absent and every call here is a cheap no-op, so the daemon can call them
unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Send ``READY=1``, ``WATCHDOG=1``, ``STATUS=...``, ``STOPPING=1`` to the service manager."""

    def __init__(self, *, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        self.address: str | None = address
        self._watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when a service manager listens."""
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """``WatchdogSec`` in seconds when systemd expects pings from us, else None."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 1_000_000

    def notify(self, **fields: str | int) -> bool:
        """Send one datagram of ``KEY=value`` lines; False when nobody listens or sending failed."""
        if self.address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    # Non-blocking: a service manager that stopped reading must never stall the
                    # main loop (a full datagram queue would block sendto forever).
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                    )
                self._sock.sendto(message, self.address)
            except BlockingIOError:
                log.debug("systemd notify queue full; dropped %r", message)
                return False
            except OSError as exc:
                # systemd gone or socket unreachable: the service keeps running; say it once.
                if not self._warned:
                    log.warning("cannot notify systemd at %r: %s", self.address, exc)
                    self._warned = True
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text.replace("\n", " "))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def reloading(self) -> bool:
        return self.notify(RELOADING=1)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> "SystemdNotifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """``WATCHDOG_USEC`` when it is meant for this process (``WATCHDOG_PID`` absent or ours)."""
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number", raw)
        return None
    return usec if usec > 0 else None
